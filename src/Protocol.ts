/**
 * Typed device protocols over channels. A protocol is a set of messages keyed by a numeric
 * discriminant, each with a request schema and optionally a response schema (any
 * `Schema<A, Uint8Array>`, typically a `BinarySchema` struct). `request` sends a typed request and
 * decodes the typed response from the completion; `serve` dispatches incoming packets to typed
 * handlers and encodes their results into the completions; `send` is one-way.
 *
 * Framing (little-endian): `u32 id`, `u32 body length`, body. The length makes decoding exact even
 * though VMBus pads every payload to 8 bytes.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import type * as Channel from "./Channel.js"
import type * as IncomingPacket from "./IncomingPacket.js"
import { ProtocolError } from "./VmbusError.js"

/**
 * One message of a protocol: its numeric id and the schemas of its request and (optional) response.
 *
 * @since 0.1.0
 * @category models
 */
export interface MessageDefinition<Req, Res> {
  /** The message id, a u32 written in the frame header; distinct within a protocol. */
  readonly id: number
  /** The request's codec (a `BinarySchema` struct, or any `Schema<A, Uint8Array>`). */
  readonly request: Schema.Schema<Req, Uint8Array>
  /** The response's codec; omit it for a message answered by an empty completion. */
  readonly response?: Schema.Schema<Res, Uint8Array> | undefined
}

/**
 * The messages of a protocol, by name.
 *
 * @since 0.1.0
 * @category models
 */
export type Definitions = Record<string, MessageDefinition<any, any>>

/**
 * A protocol made by `make`: its name, its messages, and their names by id.
 *
 * @since 0.1.0
 * @category models
 */
export interface Protocol<D extends Definitions> {
  /** The protocol's name, used in error messages. */
  readonly name: string
  /** The message definitions, by name. */
  readonly messages: D
  /** The message names, by id (to dispatch incoming messages). */
  readonly byId: ReadonlyMap<number, keyof D & string>
}

/**
 * The request type of message `K`.
 *
 * @since 0.1.0
 * @category models
 */
export type RequestOf<D extends Definitions, K extends keyof D> = D[K] extends MessageDefinition<infer R, any> ? R
  : never

/**
 * The response type of message `K`.
 *
 * @since 0.1.0
 * @category models
 */
export type ResponseOf<D extends Definitions, K extends keyof D> = D[K] extends MessageDefinition<any, infer R> ? R
  : never

/**
 * Handlers for `serve`, one per message; the result is the response (ignored for messages without
 * a response schema).
 *
 * @since 0.1.0
 * @category models
 */
export type Handlers<D extends Definitions, E, R> = {
  readonly [K in keyof D]: (request: RequestOf<D, K>) => Effect.Effect<ResponseOf<D, K> | void, E, R>
}

/**
 * Defines a protocol. Message ids must be distinct u32 values.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = <const D extends Definitions>(name: string, messages: D): Protocol<D> => {
  const byId = new Map<number, keyof D & string>()
  for (const [key, definition] of Object.entries(messages)) {
    if (!Number.isInteger(definition.id) || definition.id < 0 || definition.id > 0xffff_ffff) {
      throw new RangeError(`${name}.${key}: message id must be a u32`)
    }
    if (byId.has(definition.id)) throw new RangeError(`${name}: message id ${definition.id} used twice`)
    byId.set(definition.id, key as keyof D & string)
  }
  return { name, messages, byId }
}

const FRAME_HEADER = 8

const frame = (id: number, body: Uint8Array): Uint8Array => {
  const bytes = new Uint8Array(FRAME_HEADER + body.length)
  const view = new DataView(bytes.buffer)
  view.setUint32(0, id, true)
  view.setUint32(4, body.length, true)
  bytes.set(body, FRAME_HEADER)
  return bytes
}

const unframe = (protocol: string, bytes: Uint8Array): Either.Either<{ id: number; body: Uint8Array }, ProtocolError> => {
  if (bytes.length < FRAME_HEADER) {
    return Either.left(new ProtocolError({ reason: `${protocol}: message shorter than its 8-byte frame header` }))
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const id = view.getUint32(0, true)
  const length = view.getUint32(4, true)
  if (length > bytes.length - FRAME_HEADER) {
    return Either.left(
      new ProtocolError({ reason: `${protocol}: body length ${length} exceeds the ${bytes.length - FRAME_HEADER} bytes present` })
    )
  }
  return Either.right({ id, body: bytes.subarray(FRAME_HEADER, FRAME_HEADER + length) })
}

const encodeWith = <A>(schema: Schema.Schema<A, Uint8Array>, value: A, what: string) =>
  Schema.encode(schema)(value).pipe(
    Effect.mapError((error) => new ProtocolError({ reason: `cannot encode ${what}`, message_: ParseResult.TreeFormatter.formatErrorSync(error) }))
  )

const decodeWith = <A>(schema: Schema.Schema<A, Uint8Array>, bytes: Uint8Array, what: string) =>
  Schema.decode(schema)(bytes).pipe(
    Effect.mapError((error) => new ProtocolError({ reason: `cannot decode ${what}`, message_: ParseResult.TreeFormatter.formatErrorSync(error) }))
  )

/**
 * Encodes a typed message into its framed payload.
 *
 * @since 0.1.0
 * @category encoding
 */
export const encodeRequest = <D extends Definitions, K extends keyof D & string>(
  protocol: Protocol<D>,
  key: K,
  value: RequestOf<D, K>
): Effect.Effect<Uint8Array, ProtocolError> => {
  const definition = protocol.messages[key]!
  return Effect.map(encodeWith(definition.request, value, `${protocol.name}.${key} request`), (body) => frame(definition.id, body))
}

/**
 * Sends a typed request and decodes the typed response from the peer's completion.
 *
 * @since 0.1.0
 * @category operations
 */
export const request = <D extends Definitions, K extends keyof D & string>(
  channel: Channel.OpenedChannel,
  protocol: Protocol<D>,
  key: K,
  value: RequestOf<D, K>,
  options?: Channel.RequestOptions
): Effect.Effect<ResponseOf<D, K>, ProtocolError | Channel.RequestError> =>
  Effect.gen(function*() {
    const payload = yield* encodeRequest(protocol, key, value)
    const completion = yield* channel.request(payload, options)
    const definition = protocol.messages[key]!
    const framed = yield* unframe(protocol.name, completion)
    if (framed.id !== definition.id) {
      return yield* new ProtocolError({
        reason: `${protocol.name}.${key}: response carries message id ${framed.id}, expected ${definition.id}`
      })
    }
    if (definition.response === undefined) return undefined as ResponseOf<D, K>
    return (yield* decodeWith(definition.response, framed.body, `${protocol.name}.${key} response`)) as ResponseOf<D, K>
  })

/**
 * Sends a typed message without waiting for a completion.
 *
 * @since 0.1.0
 * @category operations
 */
export const send = <D extends Definitions, K extends keyof D & string>(
  channel: Channel.OpenedChannel,
  protocol: Protocol<D>,
  key: K,
  value: RequestOf<D, K>,
  options?: Channel.SendOptions
): Effect.Effect<void, ProtocolError | Channel.SendError> =>
  Effect.flatMap(encodeRequest(protocol, key, value), (payload) => channel.send(payload, options))

/**
 * Decodes an incoming packet into its message key and typed request.
 *
 * @since 0.1.0
 * @category decoding
 */
export const decodeIncoming = <D extends Definitions>(
  protocol: Protocol<D>,
  payload: Uint8Array
): Effect.Effect<{ readonly [K in keyof D & string]: { readonly key: K; readonly request: RequestOf<D, K> } }[keyof D & string], ProtocolError> =>
  Effect.gen(function*() {
    const framed = yield* unframe(protocol.name, payload)
    const key = protocol.byId.get(framed.id)
    if (key === undefined) return yield* new ProtocolError({ reason: `${protocol.name}: unknown message id ${framed.id}` })
    const definition = protocol.messages[key]!
    const request = yield* decodeWith(definition.request, framed.body, `${protocol.name}.${key} request`)
    return { key, request } as any
  })

/**
 * Serves a protocol on a channel: each incoming packet is decoded and dispatched to its handler, and
 * the handler's result is encoded into the completion. A packet that does not decode, or whose
 * handler fails, is completed with the channel's failure payload (and counted), never left hanging.
 *
 * @since 0.1.0
 * @category operations
 */
export const serve = <D extends Definitions, H extends Handlers<D, any, any>>(
  channel: Channel.OpenedChannel,
  protocol: Protocol<D>,
  handlers: H
): Effect.Effect<void, Channel.ReceiveError, Exclude<Effect.Effect.Context<ReturnType<H[keyof H]>>, Scope.Scope>> =>
  // Scoped per packet: protocol handlers may acquire resources for the message they answer.
  channel.serveScoped((packet: IncomingPacket.IncomingPacket) =>
    Effect.gen(function*() {
      const { key, request } = yield* decodeIncoming(protocol, packet.payload)
      const definition = protocol.messages[key]!
      const result = yield* (handlers[key] as (request: unknown) => Effect.Effect<unknown, unknown, any>)(request)
      if (definition.response === undefined) return frame(definition.id, new Uint8Array(0))
      const body = yield* encodeWith(definition.response, result, `${protocol.name}.${key} response`)
      return frame(definition.id, body)
    })
  )

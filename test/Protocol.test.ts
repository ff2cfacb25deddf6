// Typed protocols over a channel pair on the in-memory transport: typed request/response round trips,
// one-way messages, handler failures and undecodable frames answered with the failure completion
// (never a crash or a hang), encode-time validation before anything is sent, and framing checks.
import { describe, it } from "@effect/vitest"
import { assertInclude, assertTrue, deepStrictEqual, strictEqual, throws } from "@effect/vitest/utils"
import { Effect, Exit, Ref, Scope } from "effect"
import * as BinarySchema from "../src/BinarySchema.js"
import * as Protocol from "../src/Protocol.js"
import { busStats, eventually, openPair, withBus } from "./utils/channels.js"

const { u16, u32, u64, u8 } = BinarySchema

const Ping = BinarySchema.struct({ seq: u32, tag: u8 }, { identifier: "ping" })
const Pong = BinarySchema.struct({ seq: u32, echoed: u8, stamp: u64 }, { identifier: "pong" })
const Add = BinarySchema.struct({ a: u32, b: u32 }, { identifier: "add" })
const Sum = BinarySchema.struct({ sum: u32 }, { identifier: "sum" })
const Note = BinarySchema.struct({ level: u16, text: BinarySchema.utf16(32) }, { identifier: "note" })

const Demo = Protocol.make("demo", {
  ping: { id: 1, request: Ping, response: Pong },
  add: { id: 2, request: Add, response: Sum },
  note: { id: 7, request: Note }
})

class Overflow {
  readonly _tag = "Overflow"
}

/** Frames raw bytes as Protocol does: u32 id, u32 body length, body. */
const frame = (id: number, body: Uint8Array, length = body.length): Uint8Array => {
  const bytes = new Uint8Array(8 + body.length)
  const view = new DataView(bytes.buffer)
  view.setUint32(0, id, true)
  view.setUint32(4, length, true)
  bytes.set(body, 8)
  return bytes
}

/** A served pair: `client` talks to the Demo server; notes the server received are in `notes`. */
const served = Effect.gen(function*() {
  const { client, server } = yield* openPair()
  const notes = yield* Ref.make<ReadonlyArray<typeof Note.Type>>([])
  yield* Effect.forkScoped(
    Protocol.serve(server, Demo, {
      ping: (request) => Effect.succeed({ seq: request.seq, echoed: request.tag, stamp: BigInt(request.seq) << 40n }),
      add: (request) =>
        request.a + request.b > 0xffff_ffff ? Effect.fail(new Overflow()) : Effect.succeed({ sum: request.a + request.b }),
      note: (request) => Ref.update(notes, (all) => [...all, request])
    })
  )
  return { client, server, notes }
})

describe("Protocol", () => {
  it("make rejects duplicate and out-of-range message ids", () => {
    throws(() => Protocol.make("dup", { a: { id: 1, request: Ping }, b: { id: 1, request: Add } }))
    throws(() => Protocol.make("neg", { a: { id: -1, request: Ping } }))
    throws(() => Protocol.make("big", { a: { id: 2 ** 32, request: Ping } }))
    throws(() => Protocol.make("frac", { a: { id: 1.5, request: Ping } }))
    deepStrictEqual(Array.from(Demo.byId), [[1, "ping"], [2, "add"], [7, "note"]])
  })

  it.scoped("typed request/response round trips (payloads padded to 8 bytes decode exactly)", () =>
    Effect.gen(function*() {
      const { client } = yield* served
      const pong: typeof Pong.Type = yield* Protocol.request(client, Demo, "ping", { seq: 5, tag: 0xab })
      deepStrictEqual(pong, { seq: 5, echoed: 0xab, stamp: 5n << 40n })
      const sum: typeof Sum.Type = yield* Protocol.request(client, Demo, "add", { a: 40, b: 2 })
      deepStrictEqual(sum, { sum: 42 })
      // Many at once, interleaved.
      const results = yield* Effect.all(
        Array.from({ length: 20 }, (_, i) =>
          i % 2 === 0
            ? Protocol.request(client, Demo, "ping", { seq: i, tag: i })
            : Protocol.request(client, Demo, "add", { a: i, b: 0xffff_0000 })),
        { concurrency: "unbounded" }
      )
      deepStrictEqual(
        results,
        Array.from({ length: 20 }, (_, i) =>
          i % 2 === 0 ? { seq: i, echoed: i, stamp: BigInt(i) << 40n } : { sum: i + 0xffff_0000 })
      )
      // encodeRequest gives the exact frame.
      deepStrictEqual(
        yield* Protocol.encodeRequest(Demo, "add", { a: 1, b: 2 }),
        frame(2, Uint8Array.of(1, 0, 0, 0, 2, 0, 0, 0))
      )
    }).pipe(withBus))

  it.scoped("send: a one-way message reaches its handler; request on it resolves to undefined", () =>
    Effect.gen(function*() {
      const { client, notes } = yield* served
      yield* Protocol.send(client, Demo, "note", { level: 1, text: "first" })
      yield* Protocol.send(client, Demo, "note", { level: 2, text: "Grüße 😀" })
      yield* eventually(Effect.map(Ref.get(notes), (n) => n.length === 2), "two notes")
      deepStrictEqual(yield* Ref.get(notes), [{ level: 1, text: "first" }, { level: 2, text: "Grüße 😀" }])
      // With a completion: the server answers an empty body under the same id.
      const result = yield* Protocol.request(client, Demo, "note", { level: 3, text: "third" })
      strictEqual(result, undefined)
      strictEqual((yield* Ref.get(notes)).length, 3)
    }).pipe(withBus))

  it.scoped("a handler failure → failure completion → ProtocolError for the requester; serving continues", () =>
    Effect.gen(function*() {
      const { client, server } = yield* served
      const error = yield* Effect.flip(Protocol.request(client, Demo, "add", { a: 0xffff_ffff, b: 1 }))
      strictEqual(error._tag, "ProtocolError")
      if (error._tag === "ProtocolError") assertInclude(error.reason, "frame header")
      strictEqual((yield* server.stats).handlerFailures, 1)
      deepStrictEqual(yield* Protocol.request(client, Demo, "add", { a: 1, b: 1 }), { sum: 2 })
    }).pipe(withBus))

  it.scoped("unknown message id and truncated frames sent raw get the failure completion, not a crash", () =>
    Effect.gen(function*() {
      const { client, server } = yield* served
      // Unknown id 99.
      deepStrictEqual(yield* client.request(frame(99, new Uint8Array(8))), new Uint8Array(0))
      // Shorter than the frame header.
      deepStrictEqual(yield* client.request(Uint8Array.of(1, 0, 0)), new Uint8Array(0))
      // Declared body length (64) beyond the bytes present.
      deepStrictEqual(yield* client.request(frame(1, new Uint8Array(8), 64)), new Uint8Array(0))
      // A well-framed body too short for its schema (ping needs 5 bytes).
      deepStrictEqual(yield* client.request(frame(1, Uint8Array.of(1, 2, 3))), new Uint8Array(0))
      // A body longer than the schema (struct rejects trailing bytes).
      deepStrictEqual(yield* client.request(frame(2, new Uint8Array(12))), new Uint8Array(0))
      strictEqual((yield* server.stats).handlerFailures, 5)
      // Still serving.
      deepStrictEqual(yield* Protocol.request(client, Demo, "ping", { seq: 1, tag: 2 }), { seq: 1, echoed: 2, stamp: 1n << 40n })
    }).pipe(withBus))

  it.scoped("out-of-range values fail with ProtocolError before anything is sent", () =>
    Effect.gen(function*() {
      const { client, server } = yield* served
      const tooBig = yield* Effect.flip(Protocol.request(client, Demo, "ping", { seq: 1, tag: 300 }))
      strictEqual(tooBig._tag, "ProtocolError")
      const negative = yield* Effect.flip(Protocol.request(client, Demo, "add", { a: -1, b: 0 }))
      strictEqual(negative._tag, "ProtocolError")
      const longText = yield* Effect.flip(Protocol.send(client, Demo, "note", { level: 0, text: "x".repeat(16) }))
      strictEqual(longText._tag, "ProtocolError")
      const encodeOnly = yield* Effect.flip(Protocol.encodeRequest(Demo, "add", { a: 2 ** 32, b: 0 }))
      strictEqual(encodeOnly._tag, "ProtocolError")
      strictEqual((yield* client.stats).packetsSent, 0)
      strictEqual((yield* server.stats).packetsReceived, 0)
    }).pipe(withBus))

  it.scoped("responses that do not decode: wrong id, truncated frame, short body → ProtocolError", () =>
    Effect.gen(function*() {
      const { client, server } = yield* openPair()
      // A hand-written server answering each request id with a chosen (bad) completion.
      const answers: ReadonlyArray<Uint8Array> = [
        frame(2, Uint8Array.of(1, 0, 0, 0)), // a `sum` frame to a ping
        frame(1, new Uint8Array(13), 100), // declared length beyond the bytes
        frame(1, Uint8Array.of(1, 0, 0, 0)), // a pong needs 13 bytes
        new Uint8Array(0) // shorter than the header (wire padding makes anything shorter 8 bytes)
      ]
      let index = 0
      yield* Effect.forkScoped(server.serve(() => Effect.sync(() => answers[index++]!)))
      const reasons: Array<string> = []
      for (let i = 0; i < answers.length; i++) {
        const error = yield* Effect.flip(Protocol.request(client, Demo, "ping", { seq: i, tag: 0 }))
        strictEqual(error._tag, "ProtocolError")
        if (error._tag === "ProtocolError") reasons.push(error.reason)
      }
      assertInclude(reasons[0], "response carries message id 2, expected 1")
      assertInclude(reasons[1], "exceeds")
      assertInclude(reasons[2], "cannot decode demo.ping response")
      assertInclude(reasons[3], "frame header")
    }).pipe(withBus))

  it.effect("decodeIncoming: typed decoding and ProtocolError on truncated frames", () =>
    Effect.gen(function*() {
      const decoded = yield* Protocol.decodeIncoming(Demo, yield* Protocol.encodeRequest(Demo, "ping", { seq: 9, tag: 1 }))
      deepStrictEqual(decoded, { key: "ping", request: { seq: 9, tag: 1 } })
      // Trailing wire padding after the declared body is ignored.
      const padded = new Uint8Array(16)
      padded.set(frame(2, Uint8Array.of(3, 0, 0, 0, 4, 0, 0, 0)))
      deepStrictEqual(yield* Protocol.decodeIncoming(Demo, padded), { key: "add", request: { a: 3, b: 4 } })
      for (
        const bad of [
          new Uint8Array(0),
          Uint8Array.of(1, 0, 0, 0, 5),
          frame(1, Uint8Array.of(1, 2, 3, 4), 5),
          frame(1, Uint8Array.of(1, 2, 3, 4)),
          frame(42, new Uint8Array(5))
        ]
      ) {
        const error = yield* Effect.flip(Protocol.decodeIncoming(Demo, bad))
        strictEqual(error._tag, "ProtocolError")
      }
    }))

  it.effect("leak check: nothing open or outstanding after the scope closes", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const { client } = yield* served.pipe(Scope.extend(scope))
      yield* Protocol.request(client, Demo, "ping", { seq: 1, tag: 1 })
      yield* Effect.flip(Protocol.request(client, Demo, "add", { a: 0xffff_ffff, b: 1 }))
      yield* Scope.close(scope, Exit.void)
      const stats = yield* busStats
      strictEqual(stats.openChannels, 0)
      strictEqual(stats.outstandingTransactions, 0)
      strictEqual(stats.outstandingPackets, 0)
      assertTrue(stats.channelsClosed >= 1)
    }).pipe(withBus))
})

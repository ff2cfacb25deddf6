// Helpers for the GPADL, external-data and control-plane tests: a fresh bus per test with a leak check
// after its scope closes, the decoded control-message log, byte patterns, and in-place patching of a
// packet already in a ring (to hand the receiver bytes a well-behaved sender refuses to produce).
import { assert } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import type * as Channel from "../../src/Channel.js"
import * as ChannelMessage from "../../src/ChannelMessage.js"
import type * as GuestMemory from "../../src/GuestMemory.js"
import * as InMemoryTransport from "../../src/InMemoryTransport.js"
import * as Ring from "../../src/Ring.js"
import type * as Transport from "../../src/Transport.js"

export type Bus = Transport.Transport | InMemoryTransport.Control | GuestMemory.GuestMemory

/** A fresh in-memory bus; `recordMessages` keeps the control-message log. */
export const busLayer = (options: { readonly recordMessages?: boolean; readonly memoryPages?: number } = {}) =>
  Layer.orDie(InMemoryTransport.layerConfig({
    recordMessages: options.recordMessages ?? false,
    ...(options.memoryPages === undefined ? {} : { memoryPages: options.memoryPages })
  }))

export const stats = Effect.flatMap(InMemoryTransport.Control, (control) => control.stats)

/**
 * The leak check: after every scope of the test closed, the bus holds no GPADL, no mapping, no open
 * channel, no outstanding transaction, no allocated or pinned guest page and no live view.
 */
export const assertNoLeaks = (label = "after close") =>
  Effect.gen(function*() {
    const s = yield* stats
    assert.strictEqual(s.gpadls, 0, `${label}: gpadls`)
    assert.strictEqual(s.gpadlsMapped, 0, `${label}: gpadlsMapped`)
    assert.strictEqual(s.openChannels, 0, `${label}: openChannels`)
    assert.strictEqual(s.outstandingTransactions, 0, `${label}: outstandingTransactions`)
    assert.strictEqual(s.outstandingPackets, 0, `${label}: outstandingPackets`)
    assert.strictEqual(s.guestPagesAllocated, 0, `${label}: guestPagesAllocated`)
    assert.strictEqual(s.pinnedBuffers, 0, `${label}: pinnedBuffers`)
    assert.strictEqual(s.liveViews, 0, `${label}: liveViews`)
  })

/**
 * Runs `body` in its own scope on a fresh bus, closes the scope, then runs the leak check. The body's
 * result is returned so tests can assert more after the close.
 */
export const withLeakCheck = <A, E>(
  body: Effect.Effect<A, E, Bus | Scope.Scope>,
  options: { readonly recordMessages?: boolean; readonly memoryPages?: number } = {}
): Effect.Effect<A, E> =>
  Effect.gen(function*() {
    const result = yield* Effect.scoped(body)
    yield* assertNoLeaks()
    return result
  }).pipe(Effect.provide(busLayer(options)))

// ---------------------------------------------------------------------------------------------
// Exits
// ---------------------------------------------------------------------------------------------

export const failureOf = <A, E>(exit: Exit.Exit<A, E>): E => {
  if (Exit.isSuccess(exit)) throw new Error(`expected a failure, got success ${String(exit.value)}`)
  const failure = Cause.failureOption(exit.cause)
  if (Option.isNone(failure)) throw new Error(`expected a typed failure, got ${Cause.pretty(exit.cause)}`)
  return failure.value
}

export const leftOf = <A, E>(either: Either.Either<A, E>): E => {
  if (Either.isRight(either)) throw new Error(`expected Left, got Right ${String(either.right)}`)
  return either.left
}

export const rightOf = <A, E>(either: Either.Either<A, E>): A => {
  if (Either.isLeft(either)) throw new Error(`expected Right, got Left ${String(either.left)}`)
  return either.right
}

/** Whether a forked fiber has finished, without waiting. */
export const isDone = <A, E>(fiber: Fiber.Fiber<A, E>) => Effect.map(Fiber.poll(fiber), Option.isSome)

/** Lets every ready fiber run (receive loops, handlers) without touching the clock. */
export const settle = (rounds = 64): Effect.Effect<void> =>
  Effect.forEach(Array.from({ length: rounds }), () => Effect.yieldNow(), { discard: true })

// ---------------------------------------------------------------------------------------------
// Bytes
// ---------------------------------------------------------------------------------------------

/** `length` deterministic pseudo-random bytes (xorshift32 from `seed`). */
export const pattern = (length: number, seed: number): Uint8Array => {
  const out = new Uint8Array(length)
  let x = (seed * 0x9e3779b1) >>> 0 || 1
  for (let i = 0; i < length; i++) {
    x ^= x << 13
    x >>>= 0
    x ^= x >>> 17
    x ^= x << 5
    x >>>= 0
    out[i] = x & 0xff
  }
  return out
}

/** Compares two byte arrays without building huge assertion diffs. */
export const assertSameBytes = (actual: Uint8Array, expected: Uint8Array, label = "bytes") => {
  assert.strictEqual(actual.length, expected.length, `${label}: length`)
  for (let i = 0; i < expected.length; i++) {
    if (actual[i] !== expected[i]) assert.fail(`${label}: first difference at byte ${i}: ${actual[i]} != ${expected[i]}`)
  }
}

// ---------------------------------------------------------------------------------------------
// Control-message log
// ---------------------------------------------------------------------------------------------

export interface LoggedMessage {
  readonly direction: "toHost" | "toGuest"
  readonly size: number
  readonly message: ChannelMessage.ChannelMessage | undefined
}

/** The recorded control messages, decoded (undefined for bytes that do not decode). */
export const messageLog = Effect.gen(function*() {
  const control = yield* InMemoryTransport.Control
  const raw = yield* control.messages
  return raw.map((entry): LoggedMessage => {
    const decoded = ChannelMessage.decode(entry.bytes)
    return { direction: entry.direction, size: entry.bytes.length, message: Either.getOrUndefined(decoded) }
  })
})

/** The log from index `from` on. */
export const messagesSince = (from: number) => Effect.map(messageLog, (log) => log.slice(from))

export const logLength = Effect.map(messageLog, (log) => log.length)

export const tags = (log: ReadonlyArray<LoggedMessage>): Array<string> => log.map((entry) => entry.message?._tag ?? "?")

// ---------------------------------------------------------------------------------------------
// Channel events
// ---------------------------------------------------------------------------------------------

/**
 * Subscribes to a channel's events before the test provokes them: returns an effect that waits for
 * the next `n` events.
 */
export const collectEvents = (channel: Channel.OpenedChannel, n: number) =>
  Effect.gen(function*() {
    const fiber = yield* Effect.fork(Stream.runCollect(Stream.take(channel.events, n)))
    yield* settle()
    return Effect.map(Fiber.join(fiber), (chunk) => Array.from(chunk))
  })

// ---------------------------------------------------------------------------------------------
// Rings
// ---------------------------------------------------------------------------------------------

/** The current write index of a ring (control page + data). */
export const writeIndexOf = (ring: Uint8Array): number => {
  const snapshot = Ring.inspect(ring)
  if (!("writeIndex" in snapshot)) throw new Error("not a ring")
  return snapshot.writeIndex
}

/**
 * Overwrites the `byte_count` / `byte_offset` of GPA range `rangeIndex` of the GPA-direct packet at
 * data offset `at` of `ring` (no wrap-around: tests use a fresh ring). Every earlier range must have
 * `pfnsPerRange[i]` PFNs.
 */
export const patchGpaRange = (
  ring: Uint8Array,
  at: number,
  pfnsPerRange: ReadonlyArray<number>,
  rangeIndex: number,
  fields: { readonly byteCount?: number; readonly byteOffset?: number }
): void => {
  const data = ring.subarray(Ring.CONTROL_PAGE_SIZE)
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength)
  let p = at + 24
  for (let i = 0; i < rangeIndex; i++) p += 8 + 8 * pfnsPerRange[i]!
  if (fields.byteCount !== undefined) view.setUint32(p, fields.byteCount, true)
  if (fields.byteOffset !== undefined) view.setUint32(p + 4, fields.byteOffset, true)
}

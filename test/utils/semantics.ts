// Helpers for test/Semantics.test.ts: typed-failure extraction, held packets, leak checks.
import { assert } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as Exit from "effect/Exit"
import type * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import type * as Channel from "../../src/Channel.js"
import { busStats, settle } from "./channels.js"

export const failureOf = <A, E>(exit: Exit.Exit<A, E>): E => {
  if (Exit.isSuccess(exit)) throw new Error(`expected a failure, got success ${String(exit.value)}`)
  const failure = Cause.failureOption(exit.cause)
  if (Option.isNone(failure)) throw new Error(`expected a typed failure, got ${Cause.pretty(exit.cause)}`)
  return failure.value
}

export const successOf = <A, E>(exit: Exit.Exit<A, E>): A => {
  if (Exit.isFailure(exit)) throw new Error(`expected success, got ${Cause.pretty(exit.cause)}`)
  return exit.value
}

export const tagOf = <A, E>(exit: Exit.Exit<A, E>): string => (failureOf(exit) as { _tag: string })._tag

export const assertBytes = (actual: Uint8Array, expected: Uint8Array, message?: string) =>
  assert.deepStrictEqual(Array.from(actual), Array.from(expected), message)

/** A child of the ambient scope (closed with it, or earlier by the test). */
export const childScope = Effect.flatMap(Effect.scope, (parent) => Scope.fork(parent, ExecutionStrategy.sequential))

/** Takes one packet into a child scope the test releases itself. */
export const hold = (channel: Channel.OpenedChannel) =>
  Effect.gen(function*() {
    const scope = yield* childScope
    const packet = yield* channel.take.pipe(Scope.extend(scope))
    return { packet, release: Scope.close(scope, Exit.void) }
  })

/** Takes one packet, completes it with `reply` (default empty) and returns its payload. */
export const takeAndComplete = (channel: Channel.OpenedChannel, reply?: Uint8Array) =>
  Effect.scoped(Effect.flatMap(channel.take, (packet) => Effect.as(packet.complete(reply), packet.payload)))

/** The fiber's exit if it has finished after letting everything ready run, else undefined. */
export const pollAfterSettle = <A, E>(fiber: Fiber.RuntimeFiber<A, E>, rounds = 200) =>
  Effect.zipRight(settle(rounds), Effect.sync(() => fiber.unsafePoll() ?? undefined))

/** Bus and guest memory are back to zero. */
export const assertLeakFree = (label = "") =>
  Effect.gen(function*() {
    const stats = yield* busStats
    assert.strictEqual(stats.openChannels, 0, `${label} openChannels`)
    assert.strictEqual(stats.offers, 0, `${label} offers`)
    assert.strictEqual(stats.outstandingTransactions, 0, `${label} outstandingTransactions`)
    assert.strictEqual(stats.outstandingPackets, 0, `${label} outstandingPackets`)
    assert.strictEqual(stats.gpadls, 0, `${label} gpadls`)
    assert.strictEqual(stats.guestPagesAllocated, 0, `${label} guestPagesAllocated`)
  })

// Review of issue 9's receive and completion paths: defects found by a second reader, each shown
// through the public API first, then fixed.
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber, Scope } from "effect"
import type * as IncomingPacket from "../src/IncomingPacket.js"
import { eventually, filled, openPair, settle, withBus } from "./utils/channels.js"
import { assertBytes, assertLeakFree, childScope } from "./utils/semantics.js"

describe("review 9: wake-ups", () => {
  it.scoped("a woken taker interrupted before it runs passes the wake-up on (no packet stranded in the queue)", () =>
    Effect.gen(function*() {
      const scope = yield* childScope
      const { client, server } = yield* openPair().pipe(Scope.extend(scope))
      const victim = yield* Deferred.make<Fiber.RuntimeFiber<unknown, unknown>>()
      // A: takes the first packet, which wakes B for the second; A then interrupts B before B runs.
      const a = yield* Effect.fork(Effect.scoped(Effect.gen(function*() {
        const packet = yield* server.take
        const b = yield* Deferred.await(victim)
        yield* Fiber.interrupt(b)
        yield* packet.complete(filled(0xa1))
      })))
      yield* settle()
      const b = yield* Effect.fork(Effect.scoped(Effect.flatMap(server.take, (packet) => packet.complete(filled(0xb1)))))
      yield* settle()
      // E: a third taker, waiting behind B: it must get the second packet.
      const e = yield* Effect.fork(Effect.scoped(Effect.flatMap(server.take, (packet) => packet.complete(filled(0xe1)))))
      yield* settle()
      yield* Deferred.succeed(victim, b as Fiber.RuntimeFiber<unknown, unknown>)
      const first = yield* Effect.fork(client.request(filled(1)))
      const second = yield* Effect.fork(client.request(filled(2)))
      yield* Fiber.join(a)
      yield* eventually(Effect.sync(() => e.unsafePoll() !== null), "E got the second packet")
      assertBytes(yield* Fiber.join(first), filled(0xa1))
      const reply = yield* Fiber.join(second)
      assert.isTrue(reply[0] === 0xe1 || reply[0] === 0xb1)
      yield* Scope.close(scope, Exit.void)
      yield* assertLeakFree("woken taker interrupted")
    }).pipe(withBus))

  it.scoped("a single serve worker busy in a handler does not keep the packets queued behind it from another waiting consumer", () =>
    Effect.gen(function*() {
      const scope = yield* childScope
      const { client, server } = yield* openPair().pipe(Scope.extend(scope))
      const second = yield* Deferred.make<void>()
      // The serve's single worker waits first, then a taker. Two requests arrive in one batch: the worker
      // gets the first and suspends until the taker has the second.
      const serving = yield* Effect.fork(server.serve((_packet: IncomingPacket.IncomingPacket) =>
        Effect.as(Deferred.await(second), filled(0x11))
      , { concurrency: 1 }))
      yield* settle()
      const taker = yield* Effect.fork(Effect.scoped(Effect.gen(function*() {
        const packet = yield* server.take
        yield* Deferred.succeed(second, undefined)
        yield* packet.complete(filled(0x22))
      })))
      yield* settle()
      const requests = yield* Effect.fork(Effect.all([client.request(filled(1)), client.request(filled(2))], { concurrency: 2 }))
      yield* eventually(Effect.sync(() => taker.unsafePoll() !== null), "the taker got the second packet")
      const [first, other] = yield* Fiber.join(requests)
      assert.deepStrictEqual([first[0], other[0]].sort(), [0x11, 0x22])
      yield* Fiber.interrupt(serving)
      yield* Scope.close(scope, Exit.void)
      yield* assertLeakFree("single worker and a taker")
    }).pipe(withBus))
})


// Review of issue 9's receive and completion paths: defects found by a second reader, each shown
// through the public API first, then fixed.
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber, Scope } from "effect"
import * as Channel from "../src/Channel.js"
import type * as IncomingPacket from "../src/IncomingPacket.js"
import { eventually, filled, INSTANCE, openPair, settle, TYPE, withBus } from "./utils/channels.js"
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


describe("review 9: a handler closing its own channel", () => {
  it.scopedLive("during a peer close's drain: not interrupted by the serve ending, its code after the close runs", () =>
    Effect.gen(function*() {
      const serverScope = yield* Scope.make()
      const clientScope = yield* Scope.make()
      const [server, client] = yield* Effect.all([
        Channel.open({ role: "server", interfaceType: TYPE, interfaceInstance: INSTANCE, drainTimeoutMillis: 300 }).pipe(
          Scope.extend(serverScope)
        ),
        Channel.open({ role: "client", interfaceType: TYPE, interfaceInstance: INSTANCE }).pipe(Scope.extend(clientScope))
      ], { concurrency: 2 })
      const started = yield* Deferred.make<void>()
      const go = yield* Deferred.make<void>()
      const ended = yield* Deferred.make<"returned" | "interrupted">()
      // Packet 1's handler hangs (the drain times out on it and interrupts it, ending the serve);
      // packet 2's handler closes its own channel while that drain runs, then goes on.
      yield* Effect.forkDaemon(server.serve((packet: IncomingPacket.IncomingPacket) => {
        if (packet.payload[0] === 1) return Effect.never
        return Effect.gen(function*() {
          yield* Deferred.succeed(started, undefined)
          yield* Deferred.await(go)
          yield* Scope.close(serverScope, Exit.void)
          yield* Deferred.succeed(ended, "returned")
        }).pipe(Effect.onInterrupt(() => Deferred.succeed(ended, "interrupted")))
      }, { concurrency: 2 }))
      yield* Effect.forkDaemon(Effect.exit(client.request(filled(1))))
      yield* Effect.forkDaemon(Effect.exit(client.request(filled(2))))
      yield* Deferred.await(started)
      yield* Scope.close(clientScope, Exit.void)
      yield* eventually(Effect.map(server.state, (state) => state === "Closing"), "the server's close drains")
      yield* Deferred.succeed(go, undefined)
      assert.strictEqual(yield* Deferred.await(ended), "returned")
      yield* assertLeakFree("handler closing during a peer close")
    }).pipe(withBus), 20_000)
})

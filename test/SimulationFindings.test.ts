// Regressions for what the simulation suite found outside the known defects of issue 8
// (test/utils/sim/FINDINGS.md). Each reproduces the finding without the simulator.
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber, Layer, Scope, TestClock } from "effect"
import * as Channel from "../src/Channel.js"
import * as FaultInjectingTransport from "../src/FaultInjectingTransport.js"
import * as InMemoryTransport from "../src/InMemoryTransport.js"
import { busStats, filled, INSTANCE, settle, TYPE, withBus } from "./utils/channels.js"
import { hold } from "./utils/semantics.js"

describe("simulation findings", () => {
  it.scoped("F3: a channel close whose closing fiber is interrupted half-way still completes (the offer goes, the peer hears it)", () =>
    Effect.gen(function*() {
      const serverScope = yield* Scope.make()
      const server = yield* Channel.open({ role: "server", interfaceType: TYPE, interfaceInstance: INSTANCE, drainTimeoutMillis: 1000 })
        .pipe(Scope.extend(serverScope), Effect.fork)
      const client = yield* Channel.open({ role: "client", interfaceType: TYPE, interfaceInstance: INSTANCE })
      const opened = yield* Fiber.join(server)
      yield* client.send(filled(1))
      const held = yield* hold(opened) // the close must wait for it (drain timeout)
      const closing = yield* Effect.fork(Scope.close(serverScope, Exit.void))
      yield* settle()
      assert.isNull(closing.unsafePoll(), "the close waits for the held packet")
      // e.g. a handler that closed its channel, interrupted by its owner: the interruption waits for the close
      const interrupting = yield* Effect.fork(Fiber.interrupt(closing))
      yield* settle()
      yield* TestClock.adjust("2 seconds")
      yield* Fiber.join(interrupting)
      assert.strictEqual(yield* opened.state, "Closed")
      assert.strictEqual(yield* client.closed, "Rescinded")
      yield* held.release
      assert.strictEqual((yield* busStats).offers, 0)
    }).pipe(withBus))

  it.live("F8 (seed 402260): a serve handler closing its channel while a peer close drains is not waited for", () =>
    Effect.gen(function*() {
      const serverScope = yield* Scope.make()
      // A drain that waited for the handler would end only by its timeout, interrupting the handler's close.
      const server = yield* Channel.open({ role: "server", interfaceType: TYPE, interfaceInstance: INSTANCE, drainTimeoutMillis: 2000 })
        .pipe(Scope.extend(serverScope), Effect.fork)
      const clientScope = yield* Scope.make()
      const client = yield* Channel.open({ role: "client", interfaceType: TYPE, interfaceInstance: INSTANCE })
        .pipe(Scope.extend(clientScope))
      const opened = yield* Fiber.join(server)
      const gate = yield* Deferred.make<void>()
      const handling = yield* Deferred.make<void>()
      const closedByHandler = yield* Deferred.make<Exit.Exit<void>>()
      const serving = yield* Effect.fork(opened.serve(() =>
        Effect.gen(function*() {
          yield* Deferred.succeed(handling, undefined)
          yield* Deferred.await(gate)
          yield* Scope.close(serverScope, Exit.void).pipe(Effect.onExit((exit) => Deferred.succeed(closedByHandler, exit)))
        }), { concurrency: 1 }).pipe(Effect.either))
      const request = yield* Effect.fork(Effect.either(client.request(filled(1))))
      yield* Deferred.await(handling)
      // The host's rescind starts the server's close in the background; its drain waits for the handler
      // (the guest has not heard of the rescind yet, so its rings stay).
      const control = yield* FaultInjectingTransport.FaultControl
      yield* control.holdMessages(["RescindChannelOffer"])
      assert.isTrue(yield* control.rescind())
      yield* settle()
      assert.strictEqual(yield* opened.state, "Closing")
      yield* Deferred.succeed(gate, undefined)
      yield* settle()
      assert.strictEqual(yield* control.releaseMessages, 1)
      const exit = yield* Deferred.await(closedByHandler)
      assert.isTrue(Exit.isSuccess(exit), "the handler's close returned, not interrupted by the drain timeout")
      assert.strictEqual(yield* opened.state, "Closed")
      yield* Fiber.join(serving)
      yield* Fiber.join(request)
      yield* Scope.close(clientScope, Exit.void)
      const stats = yield* busStats
      assert.strictEqual(stats.openChannels, 0)
      assert.strictEqual(stats.offers, 0)
    }).pipe(Effect.scoped, Effect.provide(FaultInjectingTransport.layer({}).pipe(Layer.provideMerge(InMemoryTransport.layer), Layer.orDie))))
})

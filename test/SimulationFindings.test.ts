// Regressions for what the simulation suite found outside the known defects of issue 8
// (test/utils/sim/FINDINGS.md). Each reproduces the finding without the simulator.
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Scope, TestClock } from "effect"
import * as Channel from "../src/Channel.js"
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
})

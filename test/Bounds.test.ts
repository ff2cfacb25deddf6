// Issue 8, section B: every wait bounded, every close returns. Each test reproduces one defect of the
// issue; a regression fails through the guard timeout instead of hanging the suite.
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber, Scope, Stream } from "effect"
import * as Channel from "../src/Channel.js"
import { eventually, filled, INSTANCE, settle, TYPE, withBus } from "./utils/channels.js"
import { assertLeakFree, tagOf } from "./utils/semantics.js"

/**
 * Fails the test (instead of hanging it) when `self` does not return within a generous real-time bound;
 * disconnected, so an uninterruptible hang (a close is a finalizer) cannot hold the timeout up.
 */
const returns = <A, E, R>(self: Effect.Effect<A, E, R>, label: string) =>
  Effect.timeoutFail(Effect.disconnect(self), { duration: "10 seconds", onTimeout: () => new Error(`${label} never returned`) })

/** Collects a channel's events from now on. */
const recordEvents = (channel: Channel.OpenedChannel) =>
  Effect.gen(function*() {
    const seen: Array<Channel.ChannelEvent> = []
    yield* Effect.forkScoped(Stream.runForEach(channel.events, (event) => Effect.sync(() => seen.push(event))))
    yield* settle()
    return seen
  })

/** A server and a client on one bus, each in a scope of its own that the test closes itself. */
const openApart = (options: {
  readonly server?: Partial<Channel.ChannelConfigInput>
  readonly client?: Partial<Channel.ChannelConfigInput>
}) =>
  Effect.gen(function*() {
    const serverScope = yield* Scope.make()
    const clientScope = yield* Scope.make()
    const [server, client] = yield* Effect.all([
      Channel.open({ role: "server", interfaceType: TYPE, interfaceInstance: INSTANCE, ...options.server } as Channel.ChannelConfigInput)
        .pipe(Scope.extend(serverScope)),
      Channel.open({ role: "client", interfaceType: TYPE, interfaceInstance: INSTANCE, ...options.client } as Channel.ChannelConfigInput)
        .pipe(Scope.extend(clientScope))
    ], { concurrency: 2 })
    // Whatever the test does, both end with it (a second close is a no-op).
    yield* Effect.addFinalizer(() => Effect.zipRight(Scope.close(clientScope, Exit.void), Scope.close(serverScope, Exit.void)))
    return {
      server,
      client,
      serverScope,
      clientScope,
      closeServer: Scope.close(serverScope, Exit.void),
      closeClient: Scope.close(clientScope, Exit.void)
    }
  })

/**
 * The reproduction of defect 6: the host→guest ring is full of packets the client never reads (quota 1),
 * so the server's 1000-byte failure completion can never be written.
 */
const stuckCompletion = Effect.gen(function*() {
  const pair = yield* openApart({
    server: { maxPacketSize: 1024, failureCompletion: new Uint8Array(1000), drainTimeoutMillis: 50 },
    client: { incomingRingPages: 2, transactionQuota: 1, maxPacketSize: 1024 }
  })
  const events = yield* recordEvents(pair.server)
  const sends = yield* Effect.fork(
    Effect.forEach([1, 2, 3, 4], (i) => pair.server.send(filled(i, 1000)), { discard: true })
  )
  yield* settle()
  const request = yield* Effect.fork(pair.client.request(filled(7)))
  const serving = yield* Effect.fork(pair.server.serve(() => Effect.fail("refused")))
  yield* eventually(Effect.map(pair.server.stats, (s) => s.handlerFailures === 1), "the handler failed")
  yield* settle()
  return { ...pair, events, sends, request, serving }
})

describe("6: pause, close and interrupting serve are bounded when completions cannot be written", () => {
  it.live("closing the server returns; the completion is dropped, counted and reported", () =>
    Effect.gen(function*() {
      const { closeServer, events, request, server } = yield* stuckCompletion
      yield* returns(closeServer, "server close")
      const stats = yield* server.stats
      assert.strictEqual(stats.completionsDropped, 1)
      assert.isTrue(events.some((event) => event._tag === "CompletionDropped"))
      const exit = yield* returns(Fiber.await(request), "the client's request")
      assert.isTrue(Exit.isFailure(exit))
    }).pipe(Effect.scoped, withBus))

  it.live("pausing the server returns; the completion stays queued for the peer until the close drops it", () =>
    Effect.gen(function*() {
      const { closeClient, closeServer, events, request, server } = yield* stuckCompletion
      yield* returns(server.pause, "server pause")
      assert.strictEqual(yield* server.state, "Paused")
      // Pausing does not end the open period: the completion is still owed, not dropped.
      assert.strictEqual((yield* server.stats).completionsDropped, 0)
      yield* returns(closeServer, "server close after pause")
      assert.strictEqual((yield* server.stats).completionsDropped, 1)
      assert.isTrue(events.some((event) => event._tag === "CompletionDropped"))
      assert.strictEqual(tagOf(yield* returns(Fiber.await(request), "the client's request")), "ChannelClosed")
      yield* returns(closeClient, "client close")
      yield* assertLeakFree()
    }).pipe(Effect.scoped, withBus))

  it.live("interrupting serve returns; the close afterwards returns too", () =>
    Effect.gen(function*() {
      const { closeClient, closeServer, request, server, serving } = yield* stuckCompletion
      yield* returns(Fiber.interrupt(serving), "interrupting serve")
      assert.strictEqual(yield* server.state, "Active")
      yield* returns(closeServer, "server close")
      assert.strictEqual((yield* server.stats).completionsDropped, 1)
      assert.strictEqual(tagOf(yield* returns(Fiber.await(request), "the client's request")), "ChannelClosed")
      yield* returns(closeClient, "client close")
      yield* assertLeakFree()
    }).pipe(Effect.scoped, withBus))

  it.live("two sides with small rings and traffic both ways close at the same time without a deadlock", () =>
    Effect.gen(function*() {
      const small = { maxPacketSize: 1024, failureCompletion: new Uint8Array(1000), drainTimeoutMillis: 50, transactionQuota: 1 }
      const { client, closeClient, closeServer, server } = yield* openApart({
        server: small,
        client: { ...small, incomingRingPages: 2, outgoingRingPages: 2 }
      })
      const gate = yield* Deferred.make<void>()
      const failing = () => Effect.zipRight(Deferred.await(gate), Effect.fail("refused"))
      yield* Effect.fork(server.serve(failing))
      yield* Effect.fork(client.serve(failing))
      const requests = yield* Effect.fork(
        Effect.all([client.request(filled(1)), server.request(filled(2))], { concurrency: 2, mode: "either" })
      )
      yield* eventually(
        Effect.map(Effect.all([server.stats, client.stats]), ([s, c]) => s.packetsOutstanding === 1 && c.packetsOutstanding === 1),
        "each side holds the other's request"
      )
      // Fill both rings with packets nobody reads (quota 1 is taken by the held requests).
      yield* Effect.fork(Effect.forEach([1, 2, 3, 4], (i) => server.send(filled(i, 1000)), { discard: true }))
      yield* Effect.fork(Effect.forEach([1, 2, 3, 4], (i) => client.send(filled(i, 1000)), { discard: true }))
      yield* eventually(
        Effect.map(Effect.all([server.stats, client.stats]), ([s, c]) => s.ringFullWaits > 0 && c.ringFullWaits > 0),
        "both rings full"
      )
      yield* Deferred.succeed(gate, undefined)
      yield* eventually(
        Effect.map(Effect.all([server.stats, client.stats]), ([s, c]) => s.handlerFailures === 1 && c.handlerFailures === 1),
        "both handlers failed"
      )
      yield* returns(Effect.all([closeServer, closeClient], { concurrency: 2 }), "closing both sides")
      yield* returns(Fiber.await(requests), "the requests")
      const dropped = (yield* server.stats).completionsDropped + (yield* client.stats).completionsDropped
      assert.isAtLeast(dropped, 1)
      yield* assertLeakFree()
    }).pipe(Effect.scoped, withBus))
})

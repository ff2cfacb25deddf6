// Issue 8, section B: every wait bounded, every close returns. Each test reproduces one defect of the
// issue; a regression fails through the guard timeout instead of hanging the suite.
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber, Metric, MetricLabel, Scope, Stream, TestClock } from "effect"
import * as Channel from "../src/Channel.js"
import * as Gpadl from "../src/Gpadl.js"
import * as GuestMemory from "../src/GuestMemory.js"
import type * as Packet from "../src/Packet.js"
import * as Ring from "../src/Ring.js"
import type { CallbackFailed, InvalidParameter, PacketTooLarge } from "../src/VmbusError.js"
import { busStats, eventually, filled, INSTANCE, onlyChannel, settle, TYPE, withBus } from "./utils/channels.js"
import { assertLeakFree, failureOf, hold, pollAfterSettle, tagOf } from "./utils/semantics.js"

/** A typed failure as plain fields (tag and reason), for one comparison. */
const failureOfExit = <A, E>(exit: Exit.Exit<A, E>) => {
  const error = failureOf(exit) as { readonly _tag: string; readonly reason?: unknown }
  return { _tag: error._tag, reason: error.reason }
}

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
const stuckCompletion = (name: string) => Effect.gen(function*() {
  const pair = yield* openApart({
    server: { maxPacketSize: 1024, failureCompletion: new Uint8Array(1000), drainTimeoutMillis: 50, name },
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
      const { closeServer, events, request, server } = yield* stuckCompletion("stuck-close")
      yield* returns(closeServer, "server close")
      const stats = yield* server.stats
      assert.strictEqual(stats.completionsDropped, 1)
      const labels = [MetricLabel.make("channel", "stuck-close"), MetricLabel.make("role", "server")]
      const metric = Metric.taggedWithLabels(Metric.counter("vmbus_completions_dropped", { incremental: true }), labels)
      assert.strictEqual((yield* Metric.value(metric)).count, 1)
      assert.isTrue(events.some((event) => event._tag === "CompletionDropped"))
      const exit = yield* returns(Fiber.await(request), "the client's request")
      assert.isTrue(Exit.isFailure(exit))
    }).pipe(Effect.scoped, withBus))

  it.live("pausing the server returns; the completion stays queued for the peer until the close drops it", () =>
    Effect.gen(function*() {
      const { closeClient, closeServer, events, request, server } = yield* stuckCompletion("stuck-pause")
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
      const { closeClient, closeServer, request, server, serving } = yield* stuckCompletion("stuck-serve")
      yield* returns(Fiber.interrupt(serving), "interrupting serve")
      assert.strictEqual(yield* server.state, "Active")
      yield* returns(closeServer, "server close")
      assert.strictEqual((yield* server.stats).completionsDropped, 1)
      assert.strictEqual(tagOf(yield* returns(Fiber.await(request), "the client's request")), "ChannelClosed")
      yield* returns(closeClient, "client close")
      yield* assertLeakFree()
    }).pipe(Effect.scoped, withBus))

  // In TestClock time, so the bounds themselves are checked without measuring anything.
  it.scoped("the close waits exactly the drain timeout for the completion, then returns", () =>
    Effect.gen(function*() {
      const { closeServer } = yield* stuckCompletion("stuck-clock-close")
      const closing = yield* Effect.fork(closeServer)
      assert.isUndefined(yield* pollAfterSettle(closing), "still within drainTimeoutMillis")
      yield* TestClock.adjust("50 millis")
      const exit = yield* pollAfterSettle(closing)
      assert.isTrue(exit !== undefined && Exit.isSuccess(exit), "returned at drainTimeoutMillis")
    }).pipe(withBus))

  it.scoped("the pause does not wait for a queued completion (the packet has left the consumer's hands)", () =>
    Effect.gen(function*() {
      const { server } = yield* stuckCompletion("stuck-clock-pause")
      const pausing = yield* Effect.fork(server.pause)
      const exit = yield* pollAfterSettle(pausing)
      assert.isTrue(exit !== undefined && Exit.isSuccess(exit), "returned without the clock moving")
      assert.strictEqual((yield* server.stats).packetsOutstanding, 1, "its completion still owed")
    }).pipe(withBus))

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

// ---------------------------------------------------------------------------------------------
// 7: a consumer that closes (or pauses) its own channel
// ---------------------------------------------------------------------------------------------

describe("7: closing or pausing a channel from inside its own consumer", () => {
  // The drain timeout is far beyond the guard: the close must not wait for the closing fiber's own packet.
  const patient = { server: { drainTimeoutMillis: 60_000 } } as const

  it.live("serve: a handler closes its own channel; the close, serve and the request all return", () =>
    Effect.gen(function*() {
      const { client, closeClient, closeServer, server } = yield* openApart(patient)
      const serving = yield* Effect.fork(server.serve(() => Effect.as(closeServer, filled(9))))
      yield* returns(Effect.exit(client.request(filled(1))), "the request")
      assert.isTrue(Exit.isSuccess(yield* returns(Fiber.await(serving), "serve")))
      assert.strictEqual(yield* server.state, "Closed")
      yield* returns(closeClient, "client close")
      yield* assertLeakFree()
    }).pipe(Effect.scoped, withBus))

  it.live("serve forked in the channel's own scope: a handler closing that scope does not deadlock", () =>
    Effect.gen(function*() {
      const { client, closeClient, closeServer, server, serverScope } = yield* openApart(patient)
      const closed = yield* Deferred.make<void>()
      // The close interrupts serve, and so this handler, once it has returned: record that it returned.
      yield* Effect.forkIn(
        server.serve(() => Effect.uninterruptible(Effect.zipRight(closeServer, Effect.asVoid(Deferred.done(closed, Exit.void))))),
        serverScope
      )
      yield* Effect.fork(client.request(filled(1)))
      yield* returns(Deferred.await(closed), "the handler's close")
      assert.strictEqual(yield* server.state, "Closed")
      yield* returns(closeClient, "client close")
      yield* assertLeakFree()
    }).pipe(Effect.scoped, withBus))

  it.live("take: the holder of a packet closes the channel", () =>
    Effect.gen(function*() {
      const { client, closeClient, closeServer, server } = yield* openApart(patient)
      const request = yield* Effect.fork(client.request(filled(1)))
      yield* returns(Effect.scoped(Effect.zipRight(server.take, closeServer)), "take, then close")
      assert.strictEqual(yield* server.state, "Closed")
      yield* returns(Fiber.await(request), "the request")
      yield* returns(closeClient, "client close")
      yield* assertLeakFree()
    }).pipe(Effect.scoped, withBus))

  it.live("packets: the stream's consumer closes the channel; the stream ends", () =>
    Effect.gen(function*() {
      const { client, closeClient, closeServer, server } = yield* openApart(patient)
      const request = yield* Effect.fork(client.request(filled(1)))
      yield* returns(Stream.runForEach(server.packets, () => closeServer), "the stream")
      assert.strictEqual(yield* server.state, "Closed")
      yield* returns(Fiber.await(request), "the request")
      yield* returns(closeClient, "client close")
      yield* assertLeakFree()
    }).pipe(Effect.scoped, withBus))

  it.live("serve: a handler pauses its channel; the pause returns and the handler's result is still sent", () =>
    Effect.gen(function*() {
      const { client, server } = yield* openApart(patient)
      yield* Effect.fork(server.serve(() => Effect.as(server.pause, filled(5))))
      const reply = yield* returns(client.request(filled(1)), "the request")
      assert.deepStrictEqual(Array.from(reply), Array.from(filled(5)))
      assert.strictEqual(yield* server.state, "Paused")
      yield* server.start
      assert.deepStrictEqual(Array.from(yield* returns(client.request(filled(2)), "second request")), Array.from(filled(5)))
      assert.strictEqual(yield* server.state, "Paused")
    }).pipe(Effect.scoped, withBus))
})

// ---------------------------------------------------------------------------------------------
// 8: a corrupt ring closes the whole channel at once, so the healthy peer learns of it
// ---------------------------------------------------------------------------------------------

const corruptWriteIndex = (ring: Uint8Array) => {
  const control = new Uint32Array(ring.buffer, ring.byteOffset, 32)
  Atomics.store(control, Ring.ControlOffset.writeIndex / 4, 3)
}

describe("8: a corrupt ring runs the whole close at once", () => {
  it.live("the client finds corruption: CLOSECHANNEL and GPADL teardown run, the server's pending request ends", () =>
    Effect.gen(function*() {
      const { client, closeClient, closeServer, server } = yield* openApart({ client: { transactionQuota: 1 } })
      const rings = yield* onlyChannel
      // A GPADL the host has mapped: its teardown must not wait for the owners' scopes either.
      const buffer = yield* GuestMemory.allocate(2)
      const gpadl = yield* Gpadl.create(client, buffer)
      yield* Gpadl.map(server, gpadl.handle)
      yield* server.send(filled(1))
      const held = yield* hold(client)
      const pending = yield* Effect.fork(server.request(filled(2)))
      yield* settle()
      corruptWriteIndex(rings.serverToClient)
      yield* held.release
      assert.strictEqual(yield* client.closed, "Corrupt")
      assert.strictEqual(yield* returns(server.closed, "the server's close"), "PeerClose")
      assert.deepStrictEqual(failureOfExit(yield* returns(Fiber.await(pending), "the server's request")), {
        _tag: "ChannelClosed",
        reason: "PeerClose"
      })
      // Nothing waits for the client's owner: the channel and its GPADLs are gone on the bus already.
      yield* eventually(Effect.map(busStats, (s) => s.openChannels === 0 && s.gpadls === 0), "client side closed")
      yield* returns(closeClient, "client close")
      yield* returns(closeServer, "server close")
    }).pipe(Effect.scoped, withBus))

  it.live("the server finds corruption: the offer is rescinded, the client's pending request ends", () =>
    Effect.gen(function*() {
      const { client, closeClient, closeServer, server } = yield* openApart({ server: { transactionQuota: 1 } })
      const rings = yield* onlyChannel
      yield* client.send(filled(1))
      const held = yield* hold(server)
      const pending = yield* Effect.fork(client.request(filled(2)))
      yield* settle()
      corruptWriteIndex(rings.clientToServer)
      yield* held.release
      assert.strictEqual(yield* server.closed, "Corrupt")
      assert.strictEqual(yield* returns(client.closed, "the client's close"), "Rescinded")
      assert.deepStrictEqual(failureOfExit(yield* returns(Fiber.await(pending), "the client's request")), {
        _tag: "ChannelClosed",
        reason: "Rescinded"
      })
      yield* eventually(Effect.map(busStats, (s) => s.offers === 0), "offer rescinded")
      yield* returns(closeClient, "client close")
      yield* returns(closeServer, "server close")
      yield* assertLeakFree()
    }).pipe(Effect.scoped, withBus))
})

// ---------------------------------------------------------------------------------------------
// 9: the receiver's packet budget follows the limits; the sender refuses what it would refuse
// ---------------------------------------------------------------------------------------------

describe("9: packet budget from maxExternalPages and maxPacketSize", () => {
  const onePageRanges = (buffer: GuestMemory.GuestBuffer, count: number): Array<Packet.GpaRange> =>
    buffer.pfns.slice(0, count).map((pfn) => ({ byteCount: GuestMemory.PAGE_SIZE, byteOffset: 0, pfns: [pfn] }))

  it.live.each([776, 1024])("%i one-page GPA ranges (defaults both sides) reach the handler", (count) =>
    Effect.gen(function*() {
      const { client, server } = yield* openApart({})
      const buffer = yield* GuestMemory.allocate(1024)
      yield* Effect.fork(server.serve((packet) =>
        Effect.map(Effect.orDie(packet.externalData), (views) => new Uint8Array(8).fill(views.length === count ? 1 : 2))
      ))
      const reply = yield* returns(client.request(new Uint8Array(4096), { ranges: onePageRanges(buffer, count) }), "request")
      assert.strictEqual(reply[0], 1)
      assert.strictEqual(yield* server.state, "Active")
    }).pipe(Effect.scoped, withBus))

  it.live("1025 pages are refused by the sender with PacketTooLarge (one range each, or one range)", () =>
    Effect.gen(function*() {
      const { client, server } = yield* openApart({})
      const buffer = yield* GuestMemory.allocate(1025)
      const many = yield* returns(Effect.flip(client.request(filled(1), { ranges: onePageRanges(buffer, 1025) })), "request")
      assert.deepStrictEqual({ tag: many._tag, limit: (many as PacketTooLarge).limit }, { tag: "PacketTooLarge", limit: "maxExternalPages" })
      const one = yield* returns(Effect.flip(client.request(filled(1), { external: [buffer] })), "request")
      assert.strictEqual(one._tag, "PacketTooLarge")
      const packet = yield* Effect.flip(client.sendPacket({
        _tag: "GpaDirect",
        transactionId: 0n,
        completionRequested: false,
        ranges: onePageRanges(buffer, 1025),
        payload: filled(1)
      }))
      assert.strictEqual(packet._tag, "PacketTooLarge")
      assert.strictEqual(yield* client.state, "Active")
      assert.strictEqual(yield* server.state, "Active")
      assert.strictEqual((yield* client.stats).requestsOutstanding, 0)
    }).pipe(Effect.scoped, withBus))

  it.live("transfer-page packets: the largest the budget allows is delivered, one range more is PacketTooLarge", () =>
    Effect.gen(function*() {
      const { client, server } = yield* openApart({})
      const set = yield* GuestMemory.allocate(1)
      yield* server.registerTransferPageSet(1, set)
      const seen = yield* Deferred.make<number>()
      yield* Effect.fork(server.serve((packet) =>
        Effect.flatMap(Effect.orDie(packet.externalData), (views) => Effect.asVoid(Deferred.succeed(seen, views.length)))
      ))
      // Budget with defaults: 16 + 8 + 1024 × 16 + 4096 bytes; a 4096-byte payload leaves room for 2048 ranges.
      const transfer = (ranges: number) =>
        client.sendPacket({
          _tag: "TransferPages",
          transactionId: 0n,
          completionRequested: false,
          transferPageSetId: 1,
          senderOwnsSet: false,
          ranges: Array.from({ length: ranges }, () => ({ byteOffset: 0, byteCount: 8 })),
          payload: new Uint8Array(4096)
        })
      const refused = yield* Effect.flip(transfer(2049))
      assert.strictEqual(refused._tag, "PacketTooLarge")
      yield* transfer(2048)
      assert.strictEqual(yield* returns(Deferred.await(seen), "delivery"), 2048)
      assert.strictEqual(yield* server.state, "Active")
    }).pipe(Effect.scoped, withBus))
})

// ---------------------------------------------------------------------------------------------
// 10: failureCompletion must fit
// ---------------------------------------------------------------------------------------------

describe("10: failureCompletion longer than maxPacketSize", () => {
  it.live.each([
    { role: "server", maxPacketSize: 1024, length: 1025 },
    { role: "client", maxPacketSize: undefined, length: 4097 }
  ] as const)("$role: $length bytes with maxPacketSize $maxPacketSize → InvalidParameter at open", ({ length, maxPacketSize, role }) =>
    Effect.gen(function*() {
      const config = {
        role,
        interfaceType: TYPE,
        interfaceInstance: INSTANCE,
        failureCompletion: new Uint8Array(length),
        ...(maxPacketSize === undefined ? {} : { maxPacketSize })
      } as Channel.ChannelConfigInput
      const error = yield* returns(Effect.flip(Effect.scoped(Channel.open(config))), "open")
      assert.deepStrictEqual({ tag: error._tag, field: (error as InvalidParameter).field }, {
        tag: "InvalidParameter",
        field: "failureCompletion"
      })
      yield* assertLeakFree()
    }).pipe(withBus))

  it.live("exactly maxPacketSize is accepted and sent", () =>
    Effect.gen(function*() {
      const { client, server } = yield* openApart({ server: { maxPacketSize: 1024, failureCompletion: filled(3, 1024) } })
      yield* Effect.fork(server.serve(() => Effect.fail("refused")))
      const reply = yield* returns(client.request(filled(1)), "request")
      assert.deepStrictEqual(Array.from(reply), Array.from(filled(3, 1024)))
    }).pipe(Effect.scoped, withBus))
})

// ---------------------------------------------------------------------------------------------
// 11: user callbacks that throw
// ---------------------------------------------------------------------------------------------

describe("11: user callbacks that throw never escape into the library", () => {
  const boom = () => {
    throw new Error("boom")
  }
  const callbackFailures = (events: ReadonlyArray<Channel.ChannelEvent>) =>
    events.filter((event) => event._tag === "CallbackFailed").map((event) => (event.error as CallbackFailed).callback)

  it.live("onSettled throws when the completion arrives: the receive loop goes on, the throw is reported", () =>
    Effect.gen(function*() {
      const { client, server } = yield* openApart({})
      const events = yield* recordEvents(client)
      yield* Effect.fork(server.serve((packet) => Effect.succeed(packet.payload)))
      yield* returns(client.request(filled(1), { onSettled: boom }), "request")
      assert.deepStrictEqual(Array.from(yield* returns(client.request(filled(2)), "next request")), Array.from(filled(2)))
      assert.strictEqual(yield* client.state, "Active")
      assert.deepStrictEqual(callbackFailures(events), ["onSettled"])
    }).pipe(Effect.scoped, withBus))

  it.live("onSettled throws while the close fails pending requests: every request ends, the close completes", () =>
    Effect.gen(function*() {
      const { client, closeClient, closeServer, server } = yield* openApart({})
      const events = yield* recordEvents(client)
      const first = yield* Effect.fork(client.request(filled(1), { onSettled: boom }))
      const second = yield* Effect.fork(client.request(filled(2), { onSettled: boom }))
      yield* eventually(Effect.map(server.stats, (s) => s.packetsReceived === 2), "both delivered")
      const exit = yield* returns(Effect.exit(closeClient), "client close")
      assert.isTrue(Exit.isSuccess(exit))
      assert.strictEqual(yield* client.state, "Closed")
      assert.strictEqual(tagOf(yield* returns(Fiber.await(first), "first")), "ChannelClosed")
      assert.strictEqual(tagOf(yield* returns(Fiber.await(second), "second")), "ChannelClosed")
      assert.deepStrictEqual(callbackFailures(events), ["onSettled", "onSettled"])
      yield* returns(closeServer, "server close")
      yield* assertLeakFree()
    }).pipe(Effect.scoped, withBus))

  it.live("hooks that throw instead of returning an Effect: start and close complete, the throws are reported", () =>
    Effect.gen(function*() {
      const serverScope = yield* Scope.make()
      let opened = false
      const server = yield* Channel.open<never>(
        { role: "server", interfaceType: TYPE, interfaceInstance: INSTANCE },
        {
          onStarted: () => {
            if (opened) boom()
            return Effect.void
          },
          onClosed: boom
        }
      ).pipe(Scope.extend(serverScope), Effect.fork)
      const client = yield* Channel.open({ role: "client", interfaceType: TYPE, interfaceInstance: INSTANCE })
      const channel = yield* Fiber.join(server)
      opened = true
      const events = yield* recordEvents(channel)
      yield* channel.pause
      yield* returns(channel.start, "start")
      assert.strictEqual(yield* channel.state, "Active")
      yield* Effect.fork(channel.serve((packet) => Effect.succeed(packet.payload)))
      assert.deepStrictEqual(Array.from(yield* returns(client.request(filled(4)), "request after start")), Array.from(filled(4)))
      assert.isTrue(Exit.isSuccess(yield* returns(Effect.exit(Scope.close(serverScope, Exit.void)), "server close")))
      assert.strictEqual(yield* channel.state, "Closed")
      assert.deepStrictEqual(callbackFailures(events), ["onStarted", "onClosed"])
    }).pipe(Effect.scoped, withBus))
})

// ---------------------------------------------------------------------------------------------
// 12: after `fail`, no consumer gets packets until the channel is reopened
// ---------------------------------------------------------------------------------------------

describe("12: after fail, the incoming queue stays stopped for every consumer", () => {
  it.live("pause and start do not revive delivery: take, packets and serve all fail with the failure", () =>
    Effect.gen(function*() {
      const { client, server } = yield* openApart({})
      yield* Effect.fork(client.request(filled(1)))
      yield* Effect.fork(client.request(filled(2)))
      yield* eventually(Effect.map(server.stats, (s) => s.packetsReceived === 2), "both delivered")
      yield* Effect.scoped(Effect.flatMap(server.take, (packet) => packet.fail("malformed request")))
      yield* server.pause
      yield* server.start
      assert.strictEqual(tagOf(yield* Effect.exit(Effect.scoped(server.take))), "MalformedPacket")
      assert.strictEqual(tagOf(yield* Effect.exit(Stream.runDrain(server.packets))), "MalformedPacket")
      let handled = 0
      const serving = yield* returns(
        Effect.exit(server.serve(() => Effect.sync(() => void handled++))),
        "serve"
      )
      assert.strictEqual(tagOf(serving), "MalformedPacket")
      assert.strictEqual(handled, 0)
      // The second packet was never handed out.
      assert.strictEqual((yield* server.stats).packetsOutstanding, 1)
    }).pipe(Effect.scoped, withBus))
})

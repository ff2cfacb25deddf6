// Semantic review of the channel model against kmcl-model.md (A3, B, C1–C21) and the channel/GPADL
// issue texts. The first group pins down deviations the review found and that are now fixed (the comment
// above each names the spec point); the second verifies points that held. Time is TestClock time.
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber, Metric, MetricLabel, Option, Ref, Scope, TestClock } from "effect"
import * as Channel from "../src/Channel.js"
import * as GuestMemory from "../src/GuestMemory.js"
import type * as IncomingPacket from "../src/IncomingPacket.js"
import * as InMemoryTransport from "../src/InMemoryTransport.js"
import * as Packet from "../src/Packet.js"
import { busStats, eventually, filled, INSTANCE, openPair, openPairInScope, settle, TYPE, withBus } from "./utils/channels.js"
import {
  assertBytes,
  assertLeakFree,
  childScope,
  failureOf,
  hold,
  pollAfterSettle,
  successOf,
  tagOf,
  takeAndComplete
} from "./utils/semantics.js"

const FAILURE = filled(0xee)
const SMALL = { outgoingRingPages: 2, incomingRingPages: 2, maxPacketSize: 1000 } as const

/** A client whose guest→host ring is full: quota 1 on the server, one packet delivered, three in the ring. */
const fullGuestToHostRing = (options: { readonly client?: Partial<Channel.ChannelConfigInput> } = {}) =>
  Effect.gen(function*() {
    const pair = yield* openPair({
      client: { ...SMALL, ...options.client },
      server: { maxPacketSize: 1000, transactionQuota: 1 }
    })
    yield* Effect.forEach([0, 1, 2, 3], (i) => pair.client.send(filled(i, 1000)), { discard: true })
    yield* settle()
    assert.strictEqual(tagOf(yield* Effect.exit(pair.client.send(filled(9, 1000), { ifFull: "fail" }))), "RingFull")
    return pair
  })

// ---------------------------------------------------------------------------------------------
// Former deviations (regression tests; each comment names the spec point)
// ---------------------------------------------------------------------------------------------

describe("deviations", () => {
  // Regression (issue "handler's result becomes the completion payload"; C2 "a packet not completed by its
  // handler is completed automatically ... with a failure status"): when a serve handler returns a payload
  // larger than maxPacketSize, handleOne ignores the PacketTooLarge of `complete` and the packet stays
  // pending forever: its quota slot is lost and the requester waits until the channel closes.
  it.scoped("serve: a handler result larger than maxPacketSize still completes the packet (with the failure payload)", () =>
    Effect.gen(function*() {
      const { client, server } = yield* openPair({
        server: { maxPacketSize: 64, failureCompletion: FAILURE, drainTimeoutMillis: 0 },
        client: { maxPacketSize: 64 }
      })
      yield* Effect.forkScoped(server.serve(() => Effect.succeed(new Uint8Array(128))))
      const request = yield* Effect.fork(client.request(filled(1)))
      const exit = yield* pollAfterSettle(request)
      assert.isDefined(exit, "the request must settle: the packet has to be completed exactly once")
      assertBytes(successOf(exit!), FAILURE)
      assert.strictEqual((yield* server.stats).packetsOutstanding, 0)
    }).pipe(withBus))

  // Regression (A3.2.2 / issue "a completion is sent ... exactly once"): `complete` marks the packet
  // completed before writing the completion; if the completing fiber is interrupted while the completion
  // waits for ring space, the packet is released with no completion on the wire, and the sender's request
  // never settles (zero completions instead of one).
  it.scoped("interrupting complete() while the completion waits for ring space still delivers one completion", () =>
    Effect.gen(function*() {
      const { client, server } = yield* openPair({
        client: { ...SMALL, transactionQuota: 1 },
        server: { maxPacketSize: 1000, failureCompletion: FAILURE }
      })
      const request = yield* Effect.fork(client.request(filled(1)))
      const held = yield* hold(server)
      // Fill the host→guest ring with in-band packets the client (quota 1) does not take.
      const flooding = yield* Effect.fork(
        Effect.forEach(Array.from({ length: 8 }, (_, i) => i), (i) => server.send(filled(i, 1000)), { discard: true })
      )
      yield* eventually(Effect.map(server.stats, (s) => s.ringFullWaits > 0), "host→guest ring full")
      // Completions are queued ahead of waiting sends, so this one may already be in the ring; either way
      // interrupting the completing fiber must not lose or duplicate it.
      const completing = yield* Effect.fork(held.packet.complete(filled(0x42)))
      yield* settle()
      yield* Fiber.interrupt(completing)
      // The client drains its ring; the request must then settle with exactly one completion.
      yield* Effect.forEach(Array.from({ length: 8 }), () => takeAndComplete(client), { discard: true })
      yield* Fiber.join(flooding)
      const exit = yield* pollAfterSettle(request)
      assert.isDefined(exit, "the request never got a completion")
      assert.strictEqual((yield* client.stats).completionsReceived, 1)
      yield* held.release
    }).pipe(withBus))

  // Regression (C15 "then handler fibers are interrupted, their packets auto-complete, and the close
  // proceeds"; issue "no fiber hangs"): the drain timeout interrupts serve workers with
  // Fiber.interruptAll, but a worker writing its completion into a full ring is uninterruptible and the
  // channel is not yet closed (endOpenPeriod runs after the drain), so the close hangs for as long as the
  // peer does not read.
  it.scoped("close proceeds after drainTimeout even when a serve completion waits for ring space", () =>
    Effect.gen(function*() {
      const serverScope = yield* childScope
      const clientScope = yield* childScope
      const [server, client] = yield* Effect.all([
        Channel.open({
          role: "server",
          interfaceType: TYPE,
          interfaceInstance: INSTANCE,
          maxPacketSize: 1000,
          drainTimeoutMillis: 1000
        }).pipe(Scope.extend(serverScope)),
        Channel.open({ role: "client", interfaceType: TYPE, ...SMALL, transactionQuota: 1 }).pipe(Scope.extend(clientScope))
      ], { concurrency: 2 })
      yield* Effect.forkIn(
        Effect.forEach(Array.from({ length: 8 }, (_, i) => i), (i) => server.send(filled(i, 1000)), { discard: true }),
        serverScope
      )
      yield* eventually(Effect.map(server.stats, (s) => s.ringFullWaits > 0), "host→guest ring full")
      yield* Effect.forkIn(server.serve(() => Effect.succeed(filled(0x42))), serverScope)
      yield* Effect.forkIn(client.request(filled(1)), clientScope)
      yield* eventually(Effect.map(server.stats, (s) => s.packetsReceived === 1), "request delivered")
      const closing = yield* Effect.forkDaemon(Scope.close(serverScope, Exit.void))
      yield* TestClock.adjust(1000)
      const exit = yield* pollAfterSettle(closing)
      assert.isDefined(exit, "the server's close must end after drainTimeout")
      assert.strictEqual(yield* server.state, "Closed")
      yield* Scope.close(clientScope, Exit.void)
    }).pipe(withBus))

  // Regression (C1 "every pending transaction fails with ChannelClosed when its open period ends"; issue
  // "no fiber hangs"; conventions §8.7 "defects don't prevent cleanup"): a defect in onSuspend aborts
  // closeOnce before drain/endOpenPeriod, so a pending request never settles and the state stays Closing.
  it.scoped("a dying onSuspend hook does not stop the close: pending requests fail with ChannelClosed", () =>
    Effect.gen(function*() {
      const scope = yield* childScope
      const [, client] = yield* Effect.all([
        Channel.open({ role: "server", interfaceType: TYPE, interfaceInstance: INSTANCE }),
        Channel.open({ role: "client", interfaceType: TYPE }, { onSuspend: Effect.die("boom") }).pipe(Scope.extend(scope))
      ], { concurrency: 2 })
      const request = yield* Effect.fork(client.request(filled(1)))
      yield* settle()
      yield* Effect.exit(Scope.close(scope, Exit.void))
      const exit = yield* pollAfterSettle(request)
      assert.isDefined(exit, "the pending request hangs")
      assert.strictEqual(tagOf(exit!), "ChannelClosed")
      assert.strictEqual(yield* client.state, "Closed")
    }).pipe(withBus))

  // Regression (B3 state model Opening → Active → … → Closed; C14): a peer close or rescind while the open
  // hooks run closes the channel in the background (state Closed), then `run` sets the state back to
  // Active and starts the receive loop. `open` succeeds with a channel whose `closed` is resolved but whose
  // state is Active forever; onSuspend/onClosed never run.
  it.scoped("a rescind during onStarted: the returned channel is not left Active", () =>
    Effect.gen(function*() {
      const control = yield* InMemoryTransport.Control
      const gate = yield* Deferred.make<void>()
      const inHook = yield* Deferred.make<void>()
      yield* Effect.forkScoped(Channel.open({ role: "server", interfaceType: TYPE, interfaceInstance: INSTANCE }))
      const opening = yield* Effect.forkScoped(
        Channel.open({ role: "client", interfaceType: TYPE }, {
          onStarted: () => Effect.zipRight(Deferred.succeed(inHook, undefined), Deferred.await(gate))
        })
      )
      yield* Deferred.await(inHook)
      assert.isTrue(yield* control.rescind(INSTANCE))
      yield* settle()
      yield* Deferred.succeed(gate, undefined)
      const exit = yield* Fiber.await(opening)
      if (Exit.isSuccess(exit)) {
        const client = exit.value
        assert.strictEqual(yield* client.closed, "Rescinded")
        yield* settle()
        assert.notStrictEqual(yield* client.state, "Active", "state went Closed → Active")
      } else {
        assert.strictEqual(tagOf(exit), "ChannelClosed")
      }
    }).pipe(withBus))

  // Regression (issue "a corrupt ring fails the channel"; C5 strictCompletions → MalformedPacket; B3 hooks
  // onSuspend → onClosed): with strictCompletions an unknown completion calls endOpenPeriod("Corrupt")
  // but, unlike failCorrupt, never starts the close: the state stays Active and onSuspend/onClosed do not
  // run until the user closes the scope.
  it.scoped("strictCompletions: an unknown completion closes the channel like a corrupt ring (state, hooks)", () =>
    Effect.gen(function*() {
      const log = yield* Ref.make<Array<string>>([])
      const [server, client] = yield* Effect.all([
        Channel.open({ role: "server", interfaceType: TYPE, interfaceInstance: INSTANCE }),
        Channel.open({ role: "client", interfaceType: TYPE, strictCompletions: true }, {
          onSuspend: Ref.update(log, (l) => [...l, "suspend"]),
          onClosed: (reason) => Ref.update(log, (l) => [...l, `closed:${reason}`])
        })
      ], { concurrency: 2 })
      yield* server.sendPacket(Packet.completion(999n))
      assert.strictEqual(yield* client.closed, "Corrupt")
      yield* settle()
      assert.strictEqual(yield* client.state, "Closed")
      assert.deepStrictEqual(yield* Ref.get(log), ["suspend", "closed:Corrupt"])
    }).pipe(withBus))

  // Regression (issue "pause and start work"; C15 applies to the drain only): when a serve handler hangs
  // past drainTimeout during pause, drainOutstanding interrupts the serve *worker* fibers (handlerFibers),
  // not just the handler, so `serve` ends; after start nothing is served any more.
  it.scoped("pause with a hung serve handler: after start, serve still handles new packets", () =>
    Effect.gen(function*() {
      const { client, server } = yield* openPair({ server: { drainTimeoutMillis: 1000, failureCompletion: FAILURE } })
      const first = yield* Ref.make(true)
      const serving = yield* Effect.forkScoped(server.serve(() =>
        Effect.flatMap(Ref.getAndSet(first, false), (isFirst) => isFirst ? Effect.never : Effect.succeed(filled(0x42)))
      ))
      const hung = yield* Effect.fork(client.request(filled(1)))
      // In the handler's hands, not just delivered: pause keeps packets no handler took yet.
      yield* eventually(Effect.map(Ref.get(first), (isFirst) => !isFirst), "first request handled")
      const pausing = yield* Effect.fork(server.pause)
      yield* TestClock.adjust(1000)
      yield* Fiber.join(pausing)
      assertBytes(yield* Fiber.join(hung), FAILURE)
      yield* server.start
      const next = yield* Effect.fork(client.request(filled(2)))
      const exit = yield* pollAfterSettle(next)
      assert.isNull(serving.unsafePoll(), "serve must keep running across pause/start")
      assert.isDefined(exit, "the request after start is never served")
      assertBytes(successOf(exit!), filled(0x42))
    }).pipe(withBus))

  // Regression (C9 "sends while paused fail with InvalidState"; issue "pause ... fails pending requests"):
  // a request (or send) already waiting for ring space when the channel pauses is not stopped: slowWrite
  // only re-checks `writable` (closed), so the packet is written into the ring while Paused, after its
  // transaction was already failed — the peer's completion then arrives as a DuplicateCompletion.
  it.scoped("a request waiting for ring space when the channel pauses is not written while paused", () =>
    Effect.gen(function*() {
      const { client, server } = yield* fullGuestToHostRing()
      const request = yield* Effect.fork(client.request(filled(5, 1000)))
      const sending = yield* Effect.fork(client.send(filled(6, 1000)))
      yield* eventually(Effect.map(client.stats, (s) => s.ringFullWaits > 0 && s.requestsOutstanding === 1), "waiting")
      yield* client.pause
      // The server drains the ring.
      yield* Effect.forEach([0, 1, 2, 3], () => takeAndComplete(server), { discard: true })
      yield* settle()
      assert.strictEqual((yield* client.stats).packetsSent, 4, "nothing may be written while Paused")
      const requestExit = yield* Fiber.await(request)
      assert.isTrue(Exit.isFailure(requestExit))
      const sendExit = yield* Fiber.await(sending)
      assert.isTrue(Exit.isFailure(sendExit), "a send while paused must fail")
    }).pipe(withBus))

  // Regression (C6 "copy at send: the caller may reuse its buffer as soon as send has been called"):
  // sendBatch copies only the payload currently being written; the later payloads of a batch waiting for
  // ring space are still the caller's buffers, so mutating them changes what goes on the wire.
  it.scoped("sendBatch: payloads are copied at the call, even those still waiting for ring space", () =>
    Effect.gen(function*() {
      const { client, server } = yield* fullGuestToHostRing()
      const payloads = [filled(0x10, 1000), filled(0x11, 1000), filled(0x12, 1000)]
      const batch = yield* Effect.fork(client.sendBatch(payloads))
      yield* settle()
      for (const p of payloads) p.fill(0x77)
      const received = yield* Effect.forEach(Array.from({ length: 7 }), () => takeAndComplete(server))
      yield* Fiber.join(batch)
      assert.deepStrictEqual(received.slice(4).map((p) => p[0]), [0x10, 0x11, 0x12])
    }).pipe(withBus))

  // Regression (B5 / C11 "sendSync(payload, { timeout }) ... A zero timeout means fail with RingFull instead
  // of queueing"): `request(..., { timeout: 0 })` on a full ring fails with Cancelled (the timeout fires
  // while the packet waits for space); only the separate `ifFull: "fail"` option gives RingFull.
  it.scoped("request with timeout 0 on a full ring fails with RingFull", () =>
    Effect.gen(function*() {
      const { client } = yield* fullGuestToHostRing()
      const exit = yield* Effect.exit(client.request(filled(5, 1000), { timeout: 0 }))
      assert.strictEqual(tagOf(exit), "RingFull")
    }).pipe(withBus))

  // Regression (C15: only packets still pending after drainTimeout are forced; A3.2.3 one completion per
  // requested completion): forceCompleteAll writes the failure completion with writeNow and silently drops
  // it when the ring is full. On pause (the channel stays open) the requester then never gets a completion.
  it.scoped("pause force-completion on a full ring still delivers the failure completion", () =>
    Effect.gen(function*() {
      const { client, server } = yield* openPair({
        client: { ...SMALL, transactionQuota: 1 },
        server: { maxPacketSize: 1000, failureCompletion: FAILURE, drainTimeoutMillis: 1000 }
      })
      const request = yield* Effect.fork(client.request(filled(1)))
      const held = yield* hold(server)
      // Fill the host→guest ring to the last byte with packets the size of the failure completion.
      let sent = 0
      for (let round = 0; round < 3; round++) {
        while (Exit.isSuccess(yield* Effect.exit(server.send(filled(sent), { ifFull: "fail" })))) sent++
        yield* settle()
      }
      assert.isAbove(sent, 100)
      assert.strictEqual((yield* client.stats).packetsOutstanding, 1, "the client (quota 1) holds one, the rest fill the ring")
      const pausing = yield* Effect.fork(server.pause)
      yield* TestClock.adjust(1000)
      yield* Fiber.join(pausing)
      assert.strictEqual(yield* held.packet.disposition, "autoCompleted")
      // The client drains its ring: the failure completion must reach it.
      yield* Effect.forEach(Array.from({ length: sent }), () => takeAndComplete(client), { discard: true })
      const exit = yield* pollAfterSettle(request)
      assert.isDefined(exit, "the requester never gets its completion")
      assertBytes(successOf(exit!), FAILURE)
      yield* held.release
    }).pipe(withBus))

  // Regression (C2 "the local record is marked autoCompleted ... and counted in metrics"): autoCompleted
  // (and handlerFailures) exist only in `stats`; no Effect metric counts automatic completions.
  it.scoped("automatic completions are counted in an Effect metric", () =>
    Effect.gen(function*() {
      const { client, close, server } = yield* openPairInScope({ server: { name: "auto-metric" } })
      const { release } = yield* Effect.zipRight(Effect.fork(client.request(filled(1))), hold(server))
      yield* release
      yield* close
      const snapshot = yield* Metric.snapshot
      const counted = snapshot.filter((pair) =>
        /auto/i.test(pair.metricKey.name) &&
        pair.metricKey.tags.some((tag) => tag.key === "channel" && tag.value === "auto-metric")
      )
      assert.isAbove(counted.length, 0, "no metric for automatic completions")
    }).pipe(withBus))

  // Regression (A3.2.6 "no new deliveries follow" + B4 quota semantics; issue "pause and start work"):
  // packets already read from the ring but not yet taken by a consumer are completed with the failure
  // payload by pause (drainOutstanding splices the queue), although the receiver never saw them; KMCL
  // keeps undelivered packets for after the restart.
  it.scoped("pause does not fail packets that were never handed to a consumer; start delivers them", () =>
    Effect.gen(function*() {
      const { client, server } = yield* openPair({ server: { failureCompletion: FAILURE } })
      const requests = yield* Effect.forEach([1, 2], (i) => Effect.fork(client.request(filled(i))))
      yield* eventually(Effect.map(server.stats, (s) => s.packetsReceived === 2), "both read from the ring")
      yield* server.pause
      yield* server.start
      yield* Effect.forkScoped(server.serve(() => Effect.succeed(filled(0x42))))
      for (const fiber of requests) {
        const exit = yield* pollAfterSettle(fiber)
        assert.isDefined(exit)
        assertBytes(successOf(exit!), filled(0x42), "the request was failed by pause without being delivered")
      }
    }).pipe(withBus))
})

// ---------------------------------------------------------------------------------------------
// Verified: points that hold
// ---------------------------------------------------------------------------------------------

describe("verified", () => {
  it.scoped("many fibers completing one packet concurrently: exactly one succeeds, one completion on the wire", () =>
    Effect.gen(function*() {
      const { client, server } = yield* openPair()
      const request = yield* Effect.fork(client.request(filled(1)))
      const { packet, release } = yield* hold(server)
      const exits = yield* Effect.forEach(
        Array.from({ length: 32 }, (_, i) => i),
        (i) => Effect.exit(i % 2 === 0 ? packet.complete(filled(0x40 + i)) : packet.fail("x")),
        { concurrency: "unbounded" }
      )
      const ok = exits.filter(Exit.isSuccess)
      assert.strictEqual(ok.length, 1)
      for (const exit of exits.filter(Exit.isFailure)) assert.strictEqual(tagOf(exit), "PacketAlreadyCompleted")
      yield* release
      assertBytes(yield* Fiber.join(request), filled(0x40))
      yield* settle()
      assert.strictEqual((yield* client.stats).completionsReceived, 1)
      assert.strictEqual((yield* server.stats).completionsSent, 1)
    }).pipe(withBus))

  it.scoped("C6: the payload is copied at send (fast path, and while waiting for ring space)", () =>
    Effect.gen(function*() {
      const { client, server } = yield* fullGuestToHostRing()
      const waiting = filled(0x55, 1000)
      const sending = yield* Effect.fork(client.send(waiting))
      yield* settle()
      waiting.fill(0x66)
      const req = filled(0x57, 1000)
      const requesting = yield* Effect.fork(client.request(req))
      yield* settle()
      req.fill(0x66)
      const received = yield* Effect.forEach(Array.from({ length: 6 }), () => takeAndComplete(server))
      yield* Fiber.join(sending)
      yield* Fiber.join(requesting)
      assert.deepStrictEqual(received.map((p) => p[0]), [0, 1, 2, 3, 0x55, 0x57])
      const fast = filled(0x20)
      yield* client.send(fast)
      fast.fill(0x21)
      assertBytes(yield* takeAndComplete(server), filled(0x20))
    }).pipe(withBus))

  it.effect("request interrupted after k = 0..40 yields: ids freed, one completion each, nothing leaks", () =>
    Effect.gen(function*() {
      for (let k = 0; k <= 40; k++) {
        yield* Effect.scoped(Effect.gen(function*() {
          const { client, server } = yield* openPair()
          yield* Effect.forkScoped(server.serve((p) => Effect.succeed(p.payload)))
          const fiber = yield* Effect.fork(client.request(filled(k)))
          for (let i = 0; i < k; i++) yield* Effect.yieldNow()
          yield* Fiber.interrupt(fiber)
          yield* eventually(Effect.map(client.stats, (s) => s.requestsOutstanding === 0), `k=${k} id freed`)
          const stats = yield* client.stats
          assert.strictEqual(stats.unknownCompletions, 0, `k=${k}`)
          assert.isAtMost(stats.completionsReceived, 1, `k=${k}`)
          assert.strictEqual(stats.completionsReceived, stats.packetsSent, `k=${k}: every written request completed`)
          // The channel still works.
          assertBytes(yield* client.request(filled(0x33)), filled(0x33))
        }))
        yield* assertLeakFree(`k=${k}`)
      }
    }).pipe(withBus))

  it.effect("Channel.open racing its own close (interrupt after k yields), then a full round trip; nothing leaks", () =>
    Effect.gen(function*() {
      for (let k = 0; k < 30; k++) {
        const fiber = yield* Effect.fork(Effect.scoped(Effect.gen(function*() {
          const { client, server } = yield* openPair()
          yield* Effect.forkScoped(server.serve(() => Effect.succeed(filled(1))))
          yield* client.request(filled(2))
          return yield* Effect.never
        })))
        for (let i = 0; i < k; i++) yield* Effect.yieldNow()
        yield* Fiber.interrupt(fiber)
        yield* assertLeakFree(`k=${k}`)
      }
    }).pipe(withBus))

  it.scoped("C5: transaction ids are never 0 and distinct while outstanding", () =>
    Effect.gen(function*() {
      const { client, server } = yield* openPair({ server: { transactionQuota: 100 } })
      const requests = yield* Effect.forEach(Array.from({ length: 50 }), () => Effect.fork(client.request(filled(1))))
      const held = yield* Effect.forEach(Array.from({ length: 50 }), () => hold(server))
      const ids = held.map((h) => Option.getOrThrow(h.packet.transactionId))
      assert.isFalse(ids.includes(0n))
      assert.strictEqual(new Set(ids).size, 50)
      yield* Effect.forEach(held, (h) => h.release, { discard: true })
      yield* Effect.forEach(requests, Fiber.join, { discard: true })
    }).pipe(withBus))

  it.scoped("maxOutstandingTransactions bounds the pending table (TooManyTransactions); a completion frees a slot", () =>
    Effect.gen(function*() {
      const { client, server } = yield* openPair({ client: { maxOutstandingTransactions: 2 } })
      const a = yield* Effect.fork(client.request(filled(1)))
      const b = yield* Effect.fork(client.request(filled(2)))
      yield* settle()
      assert.strictEqual(tagOf(yield* Effect.exit(client.request(filled(3)))), "TooManyTransactions")
      yield* takeAndComplete(server)
      yield* Fiber.join(a)
      const c = yield* Effect.fork(client.request(filled(3)))
      yield* Effect.forEach([0, 1], () => takeAndComplete(server), { discard: true })
      yield* Fiber.join(b)
      yield* Fiber.join(c)
    }).pipe(withBus))

  it.effect("sends and requests racing a rescind end in success or ChannelClosed, never a defect", () =>
    Effect.gen(function*() {
      for (let k = 0; k < 20; k++) {
        yield* Effect.scoped(Effect.gen(function*() {
          const control = yield* InMemoryTransport.Control
          const { client, server } = yield* openPair()
          yield* Effect.forkScoped(server.serve(() => Effect.succeed(filled(1))))
          const fibers = yield* Effect.forEach(Array.from({ length: 10 }, (_, i) => i), (i) =>
            Effect.fork(i % 2 === 0 ? client.send(filled(i)) : Effect.asVoid(client.request(filled(i)))))
          for (let i = 0; i < k; i++) yield* Effect.yieldNow()
          yield* control.rescind(INSTANCE)
          for (const fiber of fibers) {
            const exit = yield* Fiber.await(fiber)
            if (Exit.isFailure(exit)) assert.strictEqual(tagOf(exit), "ChannelClosed", `k=${k}`)
          }
        }))
        yield* assertLeakFree(`k=${k}`)
      }
    }).pipe(withBus))

  it.scoped("pause/start cycles on the server with traffic: every client request is answered", () =>
    Effect.gen(function*() {
      const { client, server } = yield* openPair()
      yield* Effect.forkScoped(server.serve((p) => Effect.succeed(p.payload)))
      const requests = yield* Effect.forEach(Array.from({ length: 40 }, (_, i) => i), (i) =>
        Effect.fork(client.request(filled(i))))
      for (let cycle = 0; cycle < 5; cycle++) {
        yield* settle(3)
        yield* server.pause
        yield* settle(3)
        yield* server.start
      }
      const replies = yield* Effect.forEach(requests, Fiber.join)
      replies.forEach((r, i) => assertBytes(r, filled(i)))
      assert.strictEqual((yield* server.stats).autoCompleted, 0)
    }).pipe(withBus))

  it.scoped("quota lowered below the outstanding count: delivery resumes only once outstanding < quota", () =>
    Effect.gen(function*() {
      const { client, server } = yield* openPair({ server: { transactionQuota: 3 } })
      yield* Effect.forEach([0, 1, 2, 3, 4], (i) => client.send(filled(i)), { discard: true })
      const held = yield* Effect.forEach([0, 1, 2], () => hold(server))
      yield* server.setTransactionQuota(1)
      yield* held[0]!.release
      yield* held[1]!.release
      yield* settle()
      assert.strictEqual((yield* server.stats).packetsReceived, 3)
      yield* held[2]!.release
      yield* eventually(Effect.map(server.stats, (s) => s.packetsReceived === 4), "one more")
      yield* settle()
      assert.strictEqual((yield* server.stats).packetsReceived, 4)
    }).pipe(withBus))

  it.effect.each(["onOpened", "onStarted", "onPostStarted"] as const)("a failing %s fails the open; nothing is left open", (hook) =>
    Effect.gen(function*() {
      const serverScope = yield* Scope.make()
      yield* Effect.fork(Channel.open({ role: "server", interfaceType: TYPE, interfaceInstance: INSTANCE }).pipe(Scope.extend(serverScope)))
      const exit = yield* Effect.exit(Effect.scoped(Channel.open<"refused">({ role: "client", interfaceType: TYPE }, {
        [hook]: () => Effect.fail("refused" as const)
      })))
      assert.strictEqual(failureOf(exit), "refused")
      yield* settle()
      assert.strictEqual((yield* busStats).openChannels, 0)
      yield* Scope.close(serverScope, Exit.void)
      yield* assertLeakFree(hook)
    }).pipe(withBus))

  it.scoped("metrics: flushed at close, the per-channel counters equal the channel's stats", () =>
    Effect.gen(function*() {
      const { client, close, server } = yield* openPairInScope({ client: { name: "metric-check" } })
      yield* Effect.forkScoped(server.serve(() => Effect.succeed(filled(1))))
      for (let i = 0; i < 5; i++) yield* client.request(filled(i))
      yield* client.send(filled(9))
      const stats = yield* client.stats
      yield* close
      const labels = [MetricLabel.make("channel", "metric-check"), MetricLabel.make("role", "client")]
      const sent = yield* Metric.value(Metric.taggedWithLabels(Metric.counter("vmbus_packets_sent", { incremental: true }), labels))
      const received = yield* Metric.value(
        Metric.taggedWithLabels(Metric.counter("vmbus_completions_received", { incremental: true }), labels)
      )
      assert.strictEqual(sent.count, stats.packetsSent)
      assert.strictEqual(received.count, 5)
    }).pipe(withBus))

  it.scoped("PacketTooLarge up front for send, request and complete; a too-large complete leaves the packet pending", () =>
    Effect.gen(function*() {
      const { client, server } = yield* openPair({ client: { maxPacketSize: 64 }, server: { maxPacketSize: 64 } })
      assert.strictEqual(tagOf(yield* Effect.exit(client.send(new Uint8Array(65)))), "PacketTooLarge")
      assert.strictEqual(tagOf(yield* Effect.exit(client.request(new Uint8Array(65)))), "PacketTooLarge")
      assert.strictEqual((yield* client.stats).requestsOutstanding, 0)
      const request = yield* Effect.fork(client.request(filled(1)))
      const { packet, release } = yield* hold(server)
      assert.strictEqual(tagOf(yield* Effect.exit(packet.complete(new Uint8Array(65)))), "PacketTooLarge")
      assert.strictEqual(yield* packet.disposition, "pending")
      yield* packet.complete(filled(2))
      yield* release
      assertBytes(yield* Fiber.join(request), filled(2))
    }).pipe(withBus))

  it.effect("external data: buffers pinned by an interrupted request are released at completion; views die at completion", () =>
    Effect.gen(function*() {
      yield* Effect.scoped(Effect.gen(function*() {
        const { client, server } = yield* openPair()
        const bufferScope = yield* Scope.make()
        const buffer = yield* GuestMemory.allocate(2).pipe(Scope.extend(bufferScope))
        buffer.bytes.fill(0x5a)
        const request = yield* Effect.fork(client.request(filled(1), { external: [buffer] }))
        const { packet, release } = yield* hold(server)
        yield* Fiber.interrupt(request)
        yield* Scope.close(bufferScope, Exit.void)
        const pagesWhilePending = (yield* busStats).guestPagesAllocated
        const views = yield* packet.externalData
        const bytes = views[0]!.read(0, 8)
        assert.deepStrictEqual(Array.from(successOfEither(bytes)), Array.from(filled(0x5a)))
        yield* packet.complete()
        assert.strictEqual(tagOfEither(views[0]!.read(0, 8)), "ExternalDataUnavailable")
        yield* release
        yield* eventually(Effect.map(client.stats, (s) => s.requestsOutstanding === 0), "settled")
        assert.strictEqual((yield* busStats).guestPagesAllocated, pagesWhilePending - 2)
      }))
      yield* assertLeakFree("external")
    }).pipe(withBus))

  it.scoped("a handler interrupted from outside (serve fiber interrupted) auto-completes its packet", () =>
    Effect.gen(function*() {
      const { client, server } = yield* openPair({ server: { failureCompletion: FAILURE } })
      const started = yield* Deferred.make<void>()
      const serving = yield* Effect.fork(server.serve((_: IncomingPacket.IncomingPacket) =>
        Effect.zipRight(Deferred.succeed(started, undefined), Effect.never)
      ))
      const request = yield* Effect.fork(client.request(filled(1)))
      yield* Deferred.await(started)
      yield* Fiber.interrupt(serving)
      assertBytes(yield* Fiber.join(request), FAILURE)
      assert.strictEqual((yield* server.stats).packetsOutstanding, 0)
    }).pipe(withBus))
})

const successOfEither = <A, E>(either: { readonly _tag: "Right"; readonly right: A } | { readonly _tag: "Left"; readonly left: E }): A => {
  if (either._tag === "Left") throw new Error(`expected Right, got ${String(either.left)}`)
  return either.right
}

const tagOfEither = <A, E>(either: { readonly _tag: "Right"; readonly right: A } | { readonly _tag: "Left"; readonly left: E }): string => {
  if (either._tag === "Right") throw new Error("expected Left")
  return (either.left as { _tag: string })._tag
}

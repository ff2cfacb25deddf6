// The KMCL channel model over the in-memory transport (kmcl-model.md Part B, decisions C1–C15):
// exactly-once completion, transaction ids, close while busy in both directions, rescind, timeouts,
// quota and ring-full backpressure, unknown/duplicate completions, a corrupt peer ring, configuration
// validation, pause/start and lifecycle hooks. Time is TestClock time; nothing sleeps for real.
import { assert, describe, it } from "@effect/vitest"
import {
  Cause,
  Chunk,
  Deferred,
  Effect,
  Either,
  ExecutionStrategy,
  Exit,
  FastCheck,
  Fiber,
  Option,
  Ref,
  Scope,
  Stream,
  TestClock
} from "effect"
import * as Channel from "../src/Channel.js"
import type * as IncomingPacket from "../src/IncomingPacket.js"
import * as InMemoryTransport from "../src/InMemoryTransport.js"
import * as Packet from "../src/Packet.js"
import * as Ring from "../src/Ring.js"
import {
  busStats,
  eventually,
  filled,
  INSTANCE,
  onlyChannel,
  openPair,
  openPairInScope,
  settle,
  TYPE,
  withBus
} from "./utils/channels.js"

const FAILURE = filled(0xee)

const failureOf = <A, E>(exit: Exit.Exit<A, E>): E => {
  if (Exit.isSuccess(exit)) throw new Error(`expected a failure, got success ${String(exit.value)}`)
  const failure = Cause.failureOption(exit.cause)
  if (Option.isNone(failure)) throw new Error(`expected a typed failure, got ${Cause.pretty(exit.cause)}`)
  return failure.value
}

const successOf = <A, E>(exit: Exit.Exit<A, E>): A => {
  if (Exit.isFailure(exit)) throw new Error(`expected success, got ${Cause.pretty(exit.cause)}`)
  return exit.value
}

/** Asserts a failure with the given tag (and fields); compares fields, not objects (errors carry spans). */
const assertFailsWith = <A, E>(exit: Exit.Exit<A, E>, tag: string, fields: Record<string, unknown> = {}) => {
  const error = failureOf(exit) as Record<string, unknown>
  assert.strictEqual(error._tag, tag, `expected ${tag}, got ${String(error._tag)}`)
  for (const [key, value] of Object.entries(fields)) assert.deepStrictEqual(error[key], value, `${tag}.${key}`)
  return error
}

const assertBytes = (actual: Uint8Array, expected: Uint8Array, message?: string) =>
  assert.deepStrictEqual(Array.from(actual), Array.from(expected), message)

/** A scope closed with the ambient one (after anything opened later in it), or earlier by the test. */
const childScope = Effect.flatMap(Effect.scope, (parent) => Scope.fork(parent, ExecutionStrategy.sequential))

const assertLeakFree = Effect.gen(function*() {
  const stats = yield* busStats
  assert.strictEqual(stats.openChannels, 0, "openChannels")
  assert.strictEqual(stats.outstandingTransactions, 0, "outstandingTransactions")
  assert.strictEqual(stats.outstandingPackets, 0, "outstandingPackets")
})

/**
 * Takes one packet into a scope the test closes itself (the packet is held until then). The scope is a
 * child of the ambient one, so a failing test still releases the packet before its channels close.
 */
const hold = (channel: Channel.OpenedChannel) =>
  Effect.gen(function*() {
    const scope = yield* Scope.fork(yield* Effect.scope, ExecutionStrategy.sequential)
    const packet = yield* channel.take.pipe(Scope.extend(scope))
    return { packet, release: Scope.close(scope, Exit.void) }
  })

// ---------------------------------------------------------------------------------------------
// Property: every request gets exactly one completion, whatever the handler does
// ---------------------------------------------------------------------------------------------

type Outcome = "success" | "fail" | "die" | "interrupt" | "never" | "twice"
const outcomes: ReadonlyArray<Outcome> = ["success", "fail", "die", "interrupt", "never", "twice"]
const DRAIN_MILLIS = 2000

describe("exactly-once completion (property)", () => {
  it.effect.prop(
    "each request resolves once: handler payload on success, failureCompletion otherwise; nothing leaks",
    { plan: FastCheck.array(FastCheck.constantFrom(...outcomes), { minLength: 1, maxLength: 10 }) },
    ({ plan }) =>
      Effect.gen(function*() {
        const reply = (i: number) => filled(0x10 + i)
        const second = (i: number) => filled(0x80 + i)
        const { client, close, scope, server } = yield* openPairInScope({
          server: { failureCompletion: FAILURE, drainTimeoutMillis: DRAIN_MILLIS }
        })
        const seenIds = yield* Ref.make<Array<bigint>>([])
        const secondCompletes = yield* Ref.make<Array<Exit.Exit<void, unknown>>>([])
        const handler = (packet: IncomingPacket.IncomingPacket): Effect.Effect<Uint8Array | void, string> => {
          const i = packet.payload[0]!
          return Ref.update(seenIds, (ids) => [...ids, Option.getOrThrow(packet.transactionId)]).pipe(
            Effect.zipRight(Effect.suspend((): Effect.Effect<Uint8Array | void, string> => {
              switch (plan[i]!) {
                case "success":
                  return Effect.succeed(reply(i))
                case "fail":
                  return Effect.fail("typed failure")
                case "die":
                  return Effect.die("defect")
                case "interrupt":
                  return Effect.interrupt
                case "never":
                  return Effect.never
                case "twice":
                  return packet.complete(reply(i)).pipe(
                    Effect.orDie,
                    Effect.zipRight(Effect.exit(packet.complete(second(i)))),
                    Effect.flatMap((exit) => Ref.update(secondCompletes, (all) => [...all, exit]))
                  )
              }
            }))
          )
        }
        yield* Effect.forkIn(server.serve(handler), scope)
        const fibers = yield* Effect.forEach(plan, (_, i) => Effect.fork(client.request(filled(i))))
        const hung = plan.filter((o) => o === "never").length
        // Every handler that can finish does; then the hung ones are forced by the drain timeout (C15).
        yield* Effect.forEach(fibers.filter((_, i) => plan[i] !== "never"), Fiber.await, { discard: true })
        if (hung > 0) {
          yield* eventually(Effect.map(server.stats, (s) => s.packetsOutstanding === hung), "hung packets delivered")
          // Delivered is not enough: pause keeps packets no handler took yet; wait until every handler ran.
          yield* eventually(Effect.map(Ref.get(seenIds), (ids) => ids.length === plan.length), "every handler started")
          const pause = yield* Effect.fork(server.pause)
          yield* settle()
          assert.isNull(pause.unsafePoll(), "pause waits for the hung handlers")
          yield* TestClock.adjust(DRAIN_MILLIS)
          yield* Fiber.join(pause)
        }
        const exits = yield* Effect.forEach(fibers, Fiber.await)
        exits.forEach((exit, i) => {
          const expected = plan[i] === "success" || plan[i] === "twice" ? reply(i) : FAILURE
          assertBytes(successOf(exit), expected, `request ${i} (${plan[i]})`)
        })
        // A second complete is PacketAlreadyCompleted and sends nothing.
        const seconds = yield* Ref.get(secondCompletes)
        assert.strictEqual(seconds.length, plan.filter((o) => o === "twice").length)
        for (const exit of seconds) assert.strictEqual((failureOf(exit) as { _tag: string })._tag, "PacketAlreadyCompleted")
        // Exactly one completion per request, and every id distinct (C5: 1, 2, 3, …).
        const ids = yield* Ref.get(seenIds)
        assert.deepStrictEqual([...ids].sort((a, b) => Number(a - b)), plan.map((_, i) => BigInt(i + 1)))
        const clientStats = yield* client.stats
        const serverStats = yield* server.stats
        assert.strictEqual(clientStats.completionsReceived, plan.length)
        assert.strictEqual(clientStats.unknownCompletions, 0)
        assert.strictEqual(clientStats.requestsOutstanding, 0)
        assert.strictEqual(serverStats.completionsSent, plan.length)
        assert.strictEqual(serverStats.packetsOutstanding, 0)
        assert.strictEqual(
          serverStats.autoCompleted,
          plan.filter((o) => o !== "success" && o !== "twice").length,
          "auto-completed with the failure payload"
        )
        const before = yield* busStats
        assert.strictEqual(before.outstandingTransactions, 0)
        assert.strictEqual(before.outstandingPackets, 0)
        yield* close
        yield* assertLeakFree
      }).pipe(withBus),
    { fastCheck: { numRuns: 30 } }
  )
})

// ---------------------------------------------------------------------------------------------
// Exactly-once: completion only when requested, double complete, automatic completion
// ---------------------------------------------------------------------------------------------

describe("exactly-once completion", () => {
  it.scoped("a packet sent without completion is completed locally and puts nothing on the wire", () =>
    Effect.gen(function*() {
      const { client, server } = yield* openPair()
      const rings = yield* onlyChannel
      yield* client.send(filled(1))
      const { packet, release } = yield* hold(server)
      assert.isFalse(packet.completionRequested)
      assert.isTrue(Option.isNone(packet.transactionId))
      yield* packet.complete(filled(9))
      assert.strictEqual(yield* packet.disposition, "completed")
      yield* release
      // Nothing was written to the host→guest ring.
      const snapshot = Ring.inspect(rings.serverToClient) as Ring.ControlSnapshot
      assert.strictEqual(snapshot.writeIndex, 0)
      assert.strictEqual((yield* server.stats).completionsSent, 0)
      // A later request round-trips; it is the only completion the client ever sees.
      const done = yield* Effect.fork(client.request(filled(2)))
      const second = yield* hold(server)
      assert.isTrue(second.packet.completionRequested)
      yield* second.packet.complete(filled(3))
      assertBytes(yield* Fiber.join(done), filled(3))
      yield* second.release
      assert.strictEqual((yield* client.stats).completionsReceived, 1)
      assert.strictEqual((yield* server.stats).completionsSent, 1)
      assert.strictEqual((yield* server.stats).packetsOutstanding, 0)
    }).pipe(withBus))

  it.scoped("a second complete (or fail) is PacketAlreadyCompleted and sends no second completion", () =>
    Effect.gen(function*() {
      const { client, server } = yield* openPair()
      const done = yield* Effect.fork(client.request(filled(1)))
      const { packet, release } = yield* hold(server)
      yield* packet.complete(filled(2))
      const again = failureOf(yield* Effect.exit(packet.complete(filled(3))))
      assert.strictEqual(again._tag, "PacketAlreadyCompleted")
      assert.strictEqual((again as { transactionId: bigint }).transactionId, Option.getOrThrow(packet.transactionId))
      assert.strictEqual(failureOf(yield* Effect.exit(packet.fail("late")))._tag, "PacketAlreadyCompleted")
      assert.strictEqual(yield* packet.disposition, "completed")
      yield* release
      // The scope closing after a completion does not complete again either.
      assert.strictEqual(yield* packet.disposition, "completed")
      assertBytes(yield* Fiber.join(done), filled(2))
      // A round trip later proves no stray completion is queued behind the first.
      const next = yield* Effect.fork(client.request(filled(4)))
      const held = yield* hold(server)
      yield* held.packet.complete(filled(5))
      assertBytes(yield* Fiber.join(next), filled(5))
      yield* held.release
      const stats = yield* client.stats
      assert.strictEqual(stats.completionsReceived, 2)
      assert.strictEqual(stats.unknownCompletions, 0)
      assert.strictEqual((yield* server.stats).completionsSent, 2)
    }).pipe(withBus))

  it.scoped.each([
    { name: "default (empty) failure payload", config: {}, expected: new Uint8Array(0) },
    { name: "configured failureCompletion", config: { failureCompletion: FAILURE }, expected: FAILURE }
  ])("a packet whose scope closes without completion is auto-completed: $name", ({ config, expected }) =>
    Effect.gen(function*() {
      const { client, server } = yield* openPair({ server: config })
      const done = yield* Effect.fork(client.request(filled(1)))
      const { packet, release } = yield* hold(server)
      assert.strictEqual(yield* packet.disposition, "pending")
      assert.strictEqual((yield* server.stats).packetsOutstanding, 1)
      yield* release
      assert.strictEqual(yield* packet.disposition, "autoCompleted")
      assertBytes(yield* Fiber.join(done), expected)
      const stats = yield* server.stats
      assert.strictEqual(stats.autoCompleted, 1)
      assert.strictEqual(stats.completionsSent, 1)
      assert.strictEqual(stats.packetsOutstanding, 0)
      assert.strictEqual((yield* client.stats).requestsOutstanding, 0)
      // The holder completing afterwards is told it is too late.
      assert.strictEqual(failureOf(yield* Effect.exit(packet.complete(filled(7))))._tag, "PacketAlreadyCompleted")
    }).pipe(withBus))

  it.scoped("serve: the handler's value is the completion; failures and defects complete with the failure payload", () =>
    Effect.gen(function*() {
      const { client, server } = yield* openPair({ server: { failureCompletion: FAILURE } })
      yield* Effect.forkScoped(server.serve((packet) =>
        packet.payload[0] === 1 ? Effect.succeed(filled(0x21)) : packet.payload[0] === 2 ? Effect.fail("no") : Effect.die("boom")
      ))
      assertBytes(yield* client.request(filled(1)), filled(0x21))
      assertBytes(yield* client.request(filled(2)), FAILURE)
      assertBytes(yield* client.request(filled(3)), FAILURE)
      const stats = yield* server.stats
      assert.strictEqual(stats.handlerFailures, 2)
      assert.strictEqual(stats.autoCompleted, 2)
    }).pipe(withBus))
})

// ---------------------------------------------------------------------------------------------
// Close while busy (C1, C2, C9, C15)
// ---------------------------------------------------------------------------------------------

describe("close while busy", () => {
  it.effect("the server closes with requests pending: held ones auto-complete, the rest fail ChannelClosed(Rescinded)", () =>
    Effect.gen(function*() {
      const serverScope = yield* Scope.make()
      const clientScope = yield* Scope.make()
      const [server, client] = yield* Effect.all([
        Channel.open({
          role: "server",
          interfaceType: TYPE,
          interfaceInstance: INSTANCE,
          transactionQuota: 1,
          failureCompletion: FAILURE
        }).pipe(Scope.extend(serverScope)),
        Channel.open({ role: "client", interfaceType: TYPE }).pipe(Scope.extend(clientScope))
      ], { concurrency: 2 })
      // The server holds the first request forever; quota 1 keeps the others in the ring.
      yield* Effect.forkIn(Effect.scoped(Effect.zipRight(server.take, Effect.never)), serverScope)
      const requests = yield* Effect.forEach([1, 2, 3], (i) => Effect.fork(client.request(filled(i))))
      yield* eventually(Effect.map(server.stats, (s) => s.packetsOutstanding === 1), "first request held")
      yield* eventually(Effect.map(client.stats, (s) => s.packetsSent === 3), "all requests written")
      yield* Scope.close(serverScope, Exit.void)
      assert.strictEqual(yield* server.closed, "LocalClose")
      assert.strictEqual(yield* client.closed, "Rescinded")
      const exits = yield* Effect.forEach(requests, Fiber.await)
      // The held packet was auto-completed (C2) before the rescind (C1) reached the client.
      assertBytes(successOf(exits[0]!), FAILURE)
      for (const exit of exits.slice(1)) {
        const error = failureOf(exit)
        assert.strictEqual(error._tag, "ChannelClosed")
        assert.strictEqual((error as { reason: string }).reason, "Rescinded")
      }
      assert.strictEqual((yield* client.stats).requestsOutstanding, 0)
      // Sends after the open period ended fail with ChannelClosed, never a defect (C9).
      const send = failureOf(yield* Effect.exit(client.send(filled(9))))
      assert.strictEqual(send._tag, "ChannelClosed")
      assert.strictEqual((send as { reason: string }).reason, "Rescinded")
      yield* Scope.close(clientScope, Exit.void)
      yield* assertLeakFree
    }).pipe(withBus))

  it.scoped("the client closes while the server holds packets: the server sees PeerClose, its packets auto-complete", () =>
    Effect.gen(function*() {
      const serverScope = yield* childScope
      const clientScope = yield* childScope
      const [server, client] = yield* Effect.all([
        Channel.open({ role: "server", interfaceType: TYPE, interfaceInstance: INSTANCE }).pipe(Scope.extend(serverScope)),
        Channel.open({ role: "client", interfaceType: TYPE }).pipe(Scope.extend(clientScope))
      ], { concurrency: 2 })
      const pending = yield* Effect.fork(client.request(filled(1)))
      yield* client.send(filled(2))
      const a = yield* hold(server)
      const b = yield* hold(server)
      assert.strictEqual((yield* server.stats).packetsOutstanding, 2)
      yield* Scope.close(clientScope, Exit.void)
      // The client's own pending request ends with its local close (C1).
      assertFailsWith(yield* Fiber.await(pending), "ChannelClosed", { reason: "LocalClose" })
      assert.strictEqual(yield* client.closed, "LocalClose")
      assert.strictEqual(yield* server.closed, "PeerClose")
      assert.strictEqual((yield* busStats).openChannels, 0)
      // The server's packets complete without touching the dead ring; the quota is returned.
      yield* a.release
      yield* b.packet.complete(filled(3))
      yield* b.release
      assert.strictEqual(yield* a.packet.disposition, "autoCompleted")
      assert.strictEqual(yield* b.packet.disposition, "completed")
      const stats = yield* server.stats
      assert.strictEqual(stats.packetsOutstanding, 0)
      assert.strictEqual(stats.completionsSent, 0)
      // Receiving and sending on the server now report the peer close (C9).
      assertFailsWith(yield* Effect.exit(Effect.scoped(server.take)), "ChannelClosed", { reason: "PeerClose" })
      assertFailsWith(yield* Effect.exit(server.send(filled(4))), "ChannelClosed", { reason: "PeerClose" })
      yield* Scope.close(serverScope, Exit.void)
      yield* assertLeakFree
      assert.strictEqual((yield* busStats).offers, 0)
    }).pipe(withBus))

  it.scoped("pause with a held packet waits at most drainTimeout, then completes it with the failure payload (C15)", () =>
    Effect.gen(function*() {
      const { client, server } = yield* openPair({ server: { drainTimeoutMillis: 1000, failureCompletion: FAILURE } })
      const request = yield* Effect.fork(client.request(filled(1)))
      const held = yield* hold(server)
      const pausing = yield* Effect.fork(server.pause)
      yield* settle()
      assert.isNull(pausing.unsafePoll(), "pause waits for the held packet")
      yield* TestClock.adjust(999)
      yield* settle()
      assert.isNull(pausing.unsafePoll(), "still waiting before drainTimeout")
      yield* TestClock.adjust(1)
      yield* Fiber.join(pausing)
      assert.strictEqual(yield* held.packet.disposition, "autoCompleted")
      assertBytes(yield* Fiber.join(request), FAILURE)
      assert.strictEqual(failureOf(yield* Effect.exit(held.packet.complete()))._tag, "PacketAlreadyCompleted")
    }).pipe(withBus))

  // Regression: the close runs as a scope finalizer (uninterruptibly), so the drain wait must be made
  // interruptible for its timeout to fire.
  it.scoped("close with a held packet waits at most drainTimeout, then completes it (C15)", () =>
    Effect.gen(function*() {
      const { client, close, server } = yield* openPairInScope({ client: { drainTimeoutMillis: 1000 } })
      yield* server.send(filled(1))
      const held = yield* hold(client)
      const closing = yield* Effect.forkDaemon(close)
      yield* settle()
      assert.isNull(closing.unsafePoll(), "close waits for the held packet")
      assert.strictEqual(yield* client.state, "Closing")
      yield* TestClock.adjust(999)
      yield* settle()
      assert.isNull(closing.unsafePoll(), "still waiting before drainTimeout")
      yield* TestClock.adjust(1)
      yield* settle()
      assert.isNotNull(closing.unsafePoll(), "the close must end at drainTimeout")
      assert.strictEqual(yield* held.packet.disposition, "autoCompleted")
      assert.strictEqual(failureOf(yield* Effect.exit(held.packet.complete()))._tag, "PacketAlreadyCompleted")
      assert.strictEqual(yield* client.state, "Closed")
      yield* held.release
      yield* assertLeakFree
    }).pipe(withBus))

  it.scoped("close with a hung serve handler: after drainTimeout it is interrupted, its packet auto-completes (C15)", () =>
    Effect.gen(function*() {
      const serverScope = yield* childScope
      const clientScope = yield* childScope
      const [server, client] = yield* Effect.all([
        Channel.open({
          role: "server",
          interfaceType: TYPE,
          interfaceInstance: INSTANCE,
          drainTimeoutMillis: 5000,
          failureCompletion: FAILURE
        }).pipe(Scope.extend(serverScope)),
        Channel.open({ role: "client", interfaceType: TYPE }).pipe(Scope.extend(clientScope))
      ], { concurrency: 2 })
      const interrupted = yield* Deferred.make<void>()
      // `serve` runs outside the channel's scope, so only the drain can end the hung handler.
      const serving = yield* Effect.fork(server.serve(() => Effect.onInterrupt(Effect.never, () => Deferred.succeed(interrupted, undefined))))
      const request = yield* Effect.fork(client.request(filled(1)))
      yield* eventually(Effect.map(server.stats, (s) => s.packetsOutstanding === 1), "packet delivered")
      const closing = yield* Effect.forkDaemon(Scope.close(serverScope, Exit.void))
      yield* settle()
      assert.isNull(closing.unsafePoll(), "the close waits for the handler")
      yield* TestClock.adjust(5000)
      yield* settle()
      assert.isNotNull(closing.unsafePoll(), "the close must end at drainTimeout")
      assert.isTrue(yield* Deferred.isDone(interrupted), "the hung handler was interrupted")
      assert.strictEqual((yield* server.stats).autoCompleted, 1)
      assert.strictEqual((yield* server.stats).packetsOutstanding, 0)
      // The request settles exactly once: with the failure payload, or ChannelClosed if the rescind wins.
      const exit = yield* Fiber.await(request)
      if (Exit.isSuccess(exit)) assertBytes(exit.value, FAILURE)
      else assertFailsWith(exit, "ChannelClosed", { reason: "Rescinded" })
      yield* Fiber.join(serving)
      yield* Scope.close(clientScope, Exit.void)
      yield* assertLeakFree
    }).pipe(withBus))

  it.scoped("Control.rescind: pending requests, sends and take fail with ChannelClosed(Rescinded)", () =>
    Effect.gen(function*() {
      const control = yield* InMemoryTransport.Control
      const { client, close, server } = yield* openPairInScope()
      const held = yield* Effect.fork(client.request(filled(1)))
      const queued = yield* Effect.fork(client.request(filled(2)))
      const taken = yield* hold(server)
      assert.isTrue(yield* control.rescind(INSTANCE))
      assert.isFalse(yield* control.rescind("00000000-0000-0000-0000-000000000000"))
      assert.strictEqual(yield* client.closed, "Rescinded")
      for (const fiber of [held, queued]) {
        assertFailsWith(yield* Fiber.await(fiber), "ChannelClosed", { reason: "Rescinded" })
      }
      assert.strictEqual((yield* client.stats).requestsOutstanding, 0)
      for (const attempt of [client.send(filled(3)), client.request(filled(4)), client.sendBatch([filled(5)])]) {
        assertFailsWith(yield* Effect.exit(attempt), "ChannelClosed", { reason: "Rescinded" })
      }
      assertFailsWith(yield* Effect.exit(Effect.scoped(client.take)), "ChannelClosed", { reason: "Rescinded" })
      assert.strictEqual((yield* busStats).offers, 0)
      // The held packet can still be released; then both sides close cleanly.
      yield* taken.release
      assert.strictEqual(yield* taken.packet.disposition, "autoCompleted")
      assert.strictEqual(yield* server.closed, "Rescinded")
      yield* close
      yield* assertLeakFree
    }).pipe(withBus))
})

// ---------------------------------------------------------------------------------------------
// Request timeout and interruption (C8)
// ---------------------------------------------------------------------------------------------

describe("request timeout and interruption", () => {
  it.scoped("a timed-out request fails with Cancelled; its id stays reserved until the late completion", () =>
    Effect.gen(function*() {
      const { client, server } = yield* openPair()
      const request = yield* Effect.fork(client.request(filled(1), { timeout: "1 second" }))
      const held = yield* hold(server)
      yield* TestClock.adjust("999 millis")
      yield* settle()
      assert.isNull(request.unsafePoll(), "not yet timed out")
      yield* TestClock.adjust("1 millis")
      assertFailsWith(yield* Fiber.await(request), "Cancelled")
      assert.strictEqual((yield* client.stats).requestsOutstanding, 1, "the id stays reserved")
      assert.strictEqual((yield* busStats).outstandingTransactions, 1)
      // The late completion frees it; it is not an unknown completion.
      yield* held.packet.complete(filled(2))
      yield* eventually(Effect.map(client.stats, (s) => s.requestsOutstanding === 0), "id freed by the late completion")
      const stats = yield* client.stats
      assert.strictEqual(stats.completionsReceived, 1)
      assert.strictEqual(stats.unknownCompletions, 0)
      assert.strictEqual((yield* busStats).outstandingTransactions, 0)
      // The next request gets a fresh id and its own completion.
      yield* held.release
      const next = yield* Effect.fork(client.request(filled(3)))
      const second = yield* hold(server)
      assert.strictEqual(Option.getOrThrow(second.packet.transactionId), Option.getOrThrow(held.packet.transactionId) + 1n)
      yield* second.packet.complete(filled(4))
      assertBytes(yield* Fiber.join(next), filled(4))
    }).pipe(withBus))

  it.scoped("interrupting a waiting request stops the wait only; the completion still frees the id", () =>
    Effect.gen(function*() {
      const { client, server } = yield* openPair()
      const request = yield* Effect.fork(client.request(filled(1)))
      const held = yield* hold(server)
      yield* Fiber.interrupt(request)
      assert.isTrue(Exit.isInterrupted(yield* Fiber.await(request)))
      assert.strictEqual((yield* client.stats).requestsOutstanding, 1)
      yield* held.packet.complete(filled(2))
      yield* eventually(Effect.map(client.stats, (s) => s.requestsOutstanding === 0), "id freed")
      assert.strictEqual((yield* client.stats).unknownCompletions, 0)
    }).pipe(withBus))

  it.scoped("an interrupted request that never reached the ring frees its id at once", () =>
    Effect.gen(function*() {
      const { client } = yield* openPair({
        client: { outgoingRingPages: 2, incomingRingPages: 2, maxPacketSize: 1000 },
        server: { maxPacketSize: 1000, transactionQuota: 1 }
      })
      // Fill the guest→host ring: one packet delivered (quota 1), three in the ring.
      yield* Effect.forEach([1, 2, 3, 4], (i) => client.send(filled(i, 1000)), { discard: true })
      yield* settle()
      const waitsBefore = (yield* client.stats).ringFullWaits
      const request = yield* Effect.fork(client.request(filled(5, 1000)))
      yield* eventually(
        Effect.map(client.stats, (s) => s.ringFullWaits > waitsBefore && s.requestsOutstanding === 1),
        "request registered and waiting for ring space"
      )
      yield* Fiber.interrupt(request)
      assert.strictEqual((yield* client.stats).requestsOutstanding, 0)
      assert.strictEqual((yield* busStats).outstandingTransactions, 0)
    }).pipe(withBus))
})

// ---------------------------------------------------------------------------------------------
// Transaction quota (C12)
// ---------------------------------------------------------------------------------------------

const takeAndComplete = (channel: Channel.OpenedChannel) =>
  Effect.scoped(Effect.flatMap(channel.take, (packet) => Effect.as(packet.complete(), packet.payload)))

describe("transaction quota", () => {
  it.scoped("only `quota` packets are delivered; completing one delivers the next; raising it resumes at once", () =>
    Effect.gen(function*() {
      const { client, server } = yield* openPair({ server: { transactionQuota: 2 } })
      const rings = yield* onlyChannel
      yield* Effect.forEach(Array.from({ length: 10 }, (_, i) => i), (i) => client.send(filled(i)), { discard: true })
      yield* settle()
      let stats = yield* server.stats
      assert.strictEqual(stats.packetsOutstanding, 2)
      assert.strictEqual(stats.packetsReceived, 2)
      const inRing = Ring.inspect(rings.clientToServer) as Ring.ControlSnapshot
      assert.strictEqual(inRing.bytesToRead, 8 * Packet.inBandRingSize(8), "eight packets wait in the ring")
      // Completing one lets exactly one more out of the ring.
      const first = yield* takeAndComplete(server)
      assertBytes(first, filled(0))
      yield* settle()
      stats = yield* server.stats
      assert.strictEqual(stats.packetsReceived, 3)
      assert.strictEqual(stats.packetsOutstanding, 2)
      // Raising the quota delivers the rest without any completion (deliberate deviation from KMCL).
      yield* server.setTransactionQuota(20)
      yield* eventually(Effect.map(server.stats, (s) => s.packetsReceived === 10), "all delivered after raising the quota")
      assert.strictEqual((yield* server.stats).packetsOutstanding, 9)
      const rest = yield* Effect.forEach(Array.from({ length: 9 }), () => takeAndComplete(server))
      assert.deepStrictEqual(rest.map((p) => p[0]), [1, 2, 3, 4, 5, 6, 7, 8, 9])
      assert.strictEqual((yield* server.stats).packetsOutstanding, 0)
    }).pipe(withBus))

  it.scoped("lowering the quota applies to new deliveries only", () =>
    Effect.gen(function*() {
      const { client, server } = yield* openPair({ server: { transactionQuota: 2 } })
      yield* Effect.forEach([0, 1, 2, 3], (i) => client.send(filled(i)), { discard: true })
      const a = yield* hold(server)
      const b = yield* hold(server)
      yield* server.setTransactionQuota(1)
      yield* a.release
      yield* settle()
      assert.strictEqual((yield* server.stats).packetsReceived, 2, "one outstanding = the new quota: nothing more")
      yield* b.release
      yield* eventually(Effect.map(server.stats, (s) => s.packetsReceived === 3), "one more delivered")
      yield* settle()
      assert.strictEqual((yield* server.stats).packetsReceived, 3)
      assertFailsWith(yield* Effect.exit(server.setTransactionQuota(0)), "InvalidParameter", { field: "transactionQuota" })
      assertFailsWith(yield* Effect.exit(server.setTransactionQuota(1.5)), "InvalidParameter", { field: "transactionQuota" })
    }).pipe(withBus))
})

// ---------------------------------------------------------------------------------------------
// Ring-full backpressure (C11)
// ---------------------------------------------------------------------------------------------

const SMALL = { outgoingRingPages: 2, incomingRingPages: 2, maxPacketSize: 1000 } as const

describe("ring-full backpressure", () => {
  it.scoped.each([
    { direction: "guest→host", senderIsClient: true },
    { direction: "host→guest", senderIsClient: false }
  ])("$direction: the sender waits (no error, no spin) until the receiver drains; order is kept", ({ senderIsClient }) =>
    Effect.gen(function*() {
      const count = 24
      const { client, server } = yield* openPair({
        client: { ...SMALL, transactionQuota: 1 },
        server: { maxPacketSize: 1000, transactionQuota: 1 }
      })
      const [sender, receiver] = senderIsClient ? [client, server] : [server, client]
      const sending = yield* Effect.fork(
        Effect.forEach(Array.from({ length: count }, (_, i) => i), (i) => sender.send(filled(i, 1000)), { discard: true })
      )
      yield* eventually(Effect.map(sender.stats, (s) => s.ringFullWaits > 0), "the sender waits for space")
      yield* settle()
      assert.isNull(sending.unsafePoll(), "blocked, not failed")
      const waitsWhileBlocked = (yield* sender.stats).ringFullWaits
      yield* settle(200)
      assert.strictEqual((yield* sender.stats).ringFullWaits, waitsWhileBlocked, "no busy retry while nothing drains")
      // A non-waiting send on the full ring fails at once.
      assertFailsWith(yield* Effect.exit(sender.send(filled(99), { ifFull: "fail" })), "RingFull")
      const received = yield* Effect.forEach(Array.from({ length: count }), () => takeAndComplete(receiver))
      yield* Fiber.join(sending)
      assert.deepStrictEqual(received.map((p) => p[0]), Array.from({ length: count }, (_, i) => i))
      assert.isTrue(received.every((p) => p.length === 1000))
      const stats = yield* sender.stats
      assert.isAbove(stats.ringFullWaits, 0)
      assert.isAtMost(stats.ringFullWaits, count, "one wait per signal at most")
      assert.strictEqual(stats.packetsSent, count)
    }).pipe(withBus))

  it.scoped("ifFull: \"fail\" on a full ring fails with RingFull and writes nothing", () =>
    Effect.gen(function*() {
      const { client, server } = yield* openPair({ client: SMALL, server: { maxPacketSize: 1000, transactionQuota: 1 } })
      // One packet delivered (quota 1), three fill the 4 KiB ring.
      yield* Effect.forEach([0, 1, 2, 3], (i) => client.send(filled(i, 1000)), { discard: true })
      yield* settle()
      const error = assertFailsWith(yield* Effect.exit(client.send(filled(4, 1000), { ifFull: "fail" })), "RingFull")
      assert.isAtLeast(error.required as number, error.available as number, "a packet needs strictly more than its size")
      assertFailsWith(yield* Effect.exit(client.request(filled(5, 1000), { ifFull: "fail" })), "RingFull")
      assert.strictEqual((yield* client.stats).requestsOutstanding, 0, "a request that never left frees its id")
      assert.strictEqual((yield* client.stats).packetsSent, 4)
      const received = yield* Effect.forEach([0, 1, 2, 3], () => takeAndComplete(server))
      assert.deepStrictEqual(received.map((p) => p[0]), [0, 1, 2, 3])
      // A packet that can never fit is PacketTooLarge up front, never a wait.
      assertFailsWith(yield* Effect.exit(client.send(new Uint8Array(1001))), "PacketTooLarge")
    }).pipe(withBus))

  it.scoped("completions from server to client survive a full host→guest ring", () =>
    Effect.gen(function*() {
      const { client, server } = yield* openPair({
        client: { ...SMALL, transactionQuota: 1 },
        server: { maxPacketSize: 1000 }
      })
      yield* Effect.forkScoped(server.serve((packet) => Effect.succeed(filled(0x40 + packet.payload[0]!, 1000))))
      // The host fills the host→guest ring with in-band packets the guest does not take yet.
      const flooding = yield* Effect.fork(
        Effect.forEach(Array.from({ length: 8 }, (_, i) => i), (i) => server.send(filled(i, 1000)), { discard: true })
      )
      yield* eventually(Effect.map(server.stats, (s) => s.ringFullWaits > 0), "host→guest ring full")
      const requests = yield* Effect.forEach([1, 2, 3, 4], (i) => Effect.fork(client.request(filled(i))))
      yield* settle()
      assert.isTrue(requests.every((fiber) => fiber.unsafePoll() === null), "completions wait for ring space")
      const drained = yield* Effect.forEach(Array.from({ length: 8 }), () => takeAndComplete(client))
      assert.deepStrictEqual(drained.map((p) => p[0]), [0, 1, 2, 3, 4, 5, 6, 7])
      yield* Fiber.join(flooding)
      const replies = yield* Effect.forEach(requests, Fiber.join)
      replies.forEach((reply, i) => assertBytes(reply, filled(0x41 + i, 1000)))
      const stats = yield* client.stats
      assert.strictEqual(stats.completionsReceived, 4)
      assert.strictEqual(stats.requestsOutstanding, 0)
    }).pipe(withBus))
})

// ---------------------------------------------------------------------------------------------
// Unknown and duplicate completions (C5)
// ---------------------------------------------------------------------------------------------

const collectEvents = (channel: Channel.OpenedChannel, n: number) =>
  Effect.gen(function*() {
    const fiber = yield* Effect.fork(Stream.runCollect(Stream.take(channel.events, n)))
    yield* settle() // the subscription is live once the fiber has started
    return Effect.map(Fiber.join(fiber), Chunk.toReadonlyArray)
  })

describe("unknown and duplicate completions", () => {
  it.scoped("a completion for an unknown or finished id is reported and counted, not fatal", () =>
    Effect.gen(function*() {
      const { client, server } = yield* openPair()
      yield* Effect.forkScoped(server.serve(() => Effect.succeed(filled(1))))
      yield* client.request(filled(0)) // id 1, completed
      const events = yield* collectEvents(client, 3)
      yield* server.sendPacket(Packet.completion(999n, filled(2)))
      yield* server.sendPacket(Packet.completion(1n, filled(3)))
      yield* server.sendPacket(Packet.completion(0n))
      const reported = yield* events
      assert.deepStrictEqual(reported.map((e) => e._tag), ["UnknownCompletion", "DuplicateCompletion", "UnknownCompletion"])
      assert.deepStrictEqual(reported.map((e) => (e.error as { value?: unknown }).value), [999n, 1n, 0n])
      const stats = yield* client.stats
      assert.strictEqual(stats.unknownCompletions, 3)
      assert.strictEqual(stats.completionsReceived, 4)
      // Nothing hangs: the channel keeps working.
      assertBytes(yield* client.request(filled(4)), filled(1))
      assert.strictEqual(yield* client.state, "Active")
    }).pipe(withBus))

  it.scoped("a completion written straight into the ring by the peer is detected when the reader wakes", () =>
    Effect.gen(function*() {
      const { client, server } = yield* openPair()
      const rings = yield* onlyChannel
      yield* server.send(filled(1))
      const held = yield* hold(client)
      // The host side is idle: write a completion for an unknown id behind the server's back.
      const ring = Ring.OutgoingRing.attach(rings.serverToClient)
      if (!(ring instanceof Ring.OutgoingRing)) return assert.fail(`attach failed: ${ring._tag}`)
      assert.isUndefined(ring.write(Packet.completion(77n, filled(5))))
      ring.commit()
      const events = yield* collectEvents(client, 1)
      // Completing the held packet wakes the client's reader.
      yield* held.release
      const [event] = yield* events
      assert.strictEqual(event!._tag, "UnknownCompletion")
      assert.strictEqual((yield* client.stats).unknownCompletions, 1)
      assert.strictEqual(yield* client.state, "Active")
    }).pipe(withBus))

  it.scoped("strictCompletions: an unknown completion ends the open period as Corrupt", () =>
    Effect.gen(function*() {
      const { client, server } = yield* openPair({ client: { strictCompletions: true } })
      const pending = yield* Effect.fork(client.request(filled(1)))
      const held = yield* hold(server)
      yield* server.sendPacket(Packet.completion(999n))
      assert.strictEqual(yield* client.closed, "Corrupt")
      assertFailsWith(yield* Fiber.await(pending), "ChannelClosed", { reason: "Corrupt" })
      assertFailsWith(yield* Effect.exit(client.send(filled(2))), "ChannelClosed", { reason: "Corrupt" })
      assert.strictEqual((yield* client.stats).unknownCompletions, 1)
      yield* held.release
    }).pipe(withBus))
})

// ---------------------------------------------------------------------------------------------
// A peer that corrupts its ring
// ---------------------------------------------------------------------------------------------

describe("corrupt peer ring", () => {
  it.scoped.each([
    { name: "misaligned write_index (3)", writeIndex: () => 3 },
    { name: "write_index = data size", writeIndex: (dataSize: number) => dataSize },
    { name: "write_index beyond the ring", writeIndex: (dataSize: number) => dataSize + 4096 }
  ])("$name: the client ends Corrupt, pending requests fail, take fails with RingCorrupt", ({ writeIndex }) =>
    Effect.gen(function*() {
      const { client, server } = yield* openPair()
      const rings = yield* onlyChannel
      yield* server.send(filled(1))
      const held = yield* hold(client)
      const pending = yield* Effect.fork(client.request(filled(2)))
      const serverHeld = yield* hold(server)
      const receiving = yield* Effect.fork(Stream.runDrain(client.packets))
      const events = yield* collectEvents(client, 1)
      const dataSize = rings.serverToClient.byteLength - Ring.CONTROL_PAGE_SIZE
      const control = new Uint32Array(rings.serverToClient.buffer, rings.serverToClient.byteOffset, 32)
      Atomics.store(control, Ring.ControlOffset.writeIndex / 4, writeIndex(dataSize))
      // The reader wakes (as on a signal) when the client completes its packet.
      yield* held.release
      assert.strictEqual(yield* client.closed, "Corrupt")
      assertFailsWith(yield* Fiber.await(pending), "ChannelClosed", { reason: "Corrupt" })
      assertFailsWith(yield* Effect.exit(Effect.scoped(client.take)), "RingCorrupt", { field: "write_index" })
      assertFailsWith(yield* Fiber.await(receiving), "RingCorrupt")
      const [event] = yield* events
      assert.strictEqual(event!._tag, "RingCorrupt")
      assertFailsWith(yield* Effect.exit(client.send(filled(3))), "ChannelClosed", { reason: "Corrupt" })
      assert.strictEqual((yield* client.stats).requestsOutstanding, 0)
      yield* serverHeld.release
    }).pipe(withBus))
})

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

describe("configuration", () => {
  it.effect.each([
    { name: "bad interfaceType", config: { role: "client", interfaceType: "not-a-guid" }, field: "interfaceType" },
    { name: "bad interfaceInstance", config: { role: "client", interfaceType: TYPE, interfaceInstance: "1234" }, field: "interfaceInstance" },
    { name: "server without instance", config: { role: "server", interfaceType: TYPE }, field: "interfaceInstance" },
    { name: "zero quota", config: { role: "client", interfaceType: TYPE, transactionQuota: 0 }, field: "transactionQuota" },
    { name: "zero maxPacketSize", config: { role: "client", interfaceType: TYPE, maxPacketSize: 0 }, field: "maxPacketSize" },
    { name: "one-page ring", config: { role: "client", interfaceType: TYPE, outgoingRingPages: 1 }, field: "outgoingRingPages" },
    {
      name: "maxPacketSize too large for the outgoing ring",
      config: { role: "client", interfaceType: TYPE, outgoingRingPages: 2, maxPacketSize: 4096 },
      field: "outgoingRingPages"
    },
    {
      name: "maxPacketSize too large for the incoming ring",
      config: { role: "client", interfaceType: TYPE, incomingRingPages: 2, maxPacketSize: 4072 },
      field: "incomingRingPages"
    },
    { name: "unknown field", config: { role: "client", interfaceType: TYPE, bogus: 1 }, field: "bogus" }
  ])("$name → InvalidParameter naming $field; nothing is opened", ({ config, field }) =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(Effect.scoped(Channel.open(config as Channel.ChannelConfigInput)))
      assertFailsWith(exit, "InvalidParameter", { field })
      const stats = yield* busStats
      assert.strictEqual(stats.offers, 0)
      assert.strictEqual(stats.openChannels, 0)
    }).pipe(withBus))

  it("decodeConfig applies the documented defaults", () => {
    const decoded = Channel.decodeConfig({ role: "client", interfaceType: TYPE })
    if (Either.isLeft(decoded)) return assert.fail(decoded.left.message)
    const config = decoded.right
    assert.strictEqual(config.role, "client")
    assert.strictEqual(config.maxPacketSize, 4096)
    assert.strictEqual(config.transactionQuota, 64)
    assert.strictEqual(config.drainTimeoutMillis, 5000)
    assert.strictEqual(config.openTimeoutMillis, 10_000)
    assert.strictEqual(config.failureCompletion.length, 0)
    assert.isFalse(config.strictCompletions)
    // The largest packet that fits a 2-page ring: 16 + 4064 + 8 < 4096.
    assert.isTrue(Either.isRight(Channel.decodeConfig({ role: "client", interfaceType: TYPE, maxPacketSize: 4064 })))
  })

  it.scoped("a server whose maxPacketSize does not fit the client's rings fails with InvalidParameter(maxPacketSize)", () =>
    Effect.gen(function*() {
      const client = yield* Effect.fork(Effect.scoped(Effect.flatMap(
        Channel.open({ role: "client", interfaceType: TYPE, ...SMALL }),
        (channel) => channel.closed
      )))
      const exit = yield* Effect.exit(Effect.scoped(
        Channel.open({ role: "server", interfaceType: TYPE, interfaceInstance: INSTANCE, maxPacketSize: 4096 })
      ))
      assertFailsWith(exit, "InvalidParameter", { field: "maxPacketSize" })
      // The client's open period ends with the offer.
      assert.strictEqual(yield* Fiber.join(client), "Rescinded")
    }).pipe(withBus))

  it.effect.each([
    { role: "client", config: { role: "client", interfaceType: TYPE, openTimeoutMillis: 1000 } },
    { role: "server", config: { role: "server", interfaceType: TYPE, interfaceInstance: INSTANCE, openTimeoutMillis: 1000 } }
  ])("$role: OpenTimeout when no peer comes (TestClock); nothing is left behind", ({ config }) =>
    Effect.gen(function*() {
      const opening = yield* Effect.fork(Effect.scoped(Channel.open(config as Channel.ChannelConfigInput)))
      yield* TestClock.adjust(999)
      yield* settle()
      assert.isNull(opening.unsafePoll())
      yield* TestClock.adjust(1)
      assertFailsWith(yield* Fiber.await(opening), "OpenTimeout", { timeoutMillis: 1000 })
      const stats = yield* busStats
      assert.strictEqual(stats.offers, 0)
      assert.strictEqual(stats.openChannels, 0)
    }).pipe(withBus))
})

// ---------------------------------------------------------------------------------------------
// Pause and start (C9, C15)
// ---------------------------------------------------------------------------------------------

describe("pause and start", () => {
  it.scoped("sends while paused fail with InvalidState; nothing is delivered until start", () =>
    Effect.gen(function*() {
      const { client, server } = yield* openPair()
      yield* server.pause
      assert.strictEqual(yield* server.state, "Paused")
      assertFailsWith(yield* Effect.exit(server.send(filled(1))), "InvalidState", { expected: "Active", actual: "Paused" })
      assertFailsWith(yield* Effect.exit(server.request(filled(1))), "InvalidState", { expected: "Active", actual: "Paused" })
      assertFailsWith(yield* Effect.exit(server.sendBatch([filled(1)])), "InvalidState", { actual: "Paused" })
      assertFailsWith(yield* Effect.exit(server.pause), "InvalidState", { operation: "pause", actual: "Paused" })
      yield* Effect.forEach([1, 2, 3], (i) => client.send(filled(i)), { discard: true })
      yield* settle()
      assert.strictEqual((yield* server.stats).packetsReceived, 0, "a paused channel delivers nothing")
      yield* server.start
      assert.strictEqual(yield* server.state, "Active")
      const received = yield* Effect.forEach([1, 2, 3], () => takeAndComplete(server))
      assert.deepStrictEqual(received.map((p) => p[0]), [1, 2, 3])
      assertFailsWith(yield* Effect.exit(server.start), "InvalidState", { operation: "start", expected: "Paused", actual: "Active" })
      yield* server.send(filled(4))
      assertBytes(yield* takeAndComplete(client), filled(4))
    }).pipe(withBus))

  it.scoped("pause waits for outstanding packets to complete", () =>
    Effect.gen(function*() {
      const { client, server } = yield* openPair()
      const request = yield* Effect.fork(client.request(filled(1)))
      const held = yield* hold(server)
      const pausing = yield* Effect.fork(server.pause)
      yield* settle()
      assert.isNull(pausing.unsafePoll(), "pause waits")
      yield* held.packet.complete(filled(2))
      yield* Fiber.join(pausing)
      assert.strictEqual(yield* held.packet.disposition, "completed")
      assertBytes(yield* Fiber.join(request), filled(2))
    }).pipe(withBus))
})

// ---------------------------------------------------------------------------------------------
// Lifecycle hooks (B3, C13, C14)
// ---------------------------------------------------------------------------------------------

describe("lifecycle hooks", () => {
  it.scoped("hooks run in KMCL order: Opened → Started → PostStarted … Suspend → Closed", () =>
    Effect.gen(function*() {
      const log = yield* Ref.make<Array<string>>([])
      const record = (entry: string) => Ref.update(log, (all) => [...all, entry])
      // The server serves from the start, so onPostStarted can negotiate with a request.
      yield* Effect.forkScoped(Effect.flatMap(
        Channel.open({ role: "server", interfaceType: TYPE, interfaceInstance: INSTANCE }),
        (server) => server.serve((packet) => Effect.succeed(filled(packet.payload[0]! + 1)))
      ))
      const scope = yield* childScope
      const client = yield* Channel.open({ role: "client", interfaceType: TYPE }, {
        onOpened: (channel) => record(`opened:${channel.identity.interfaceInstance === INSTANCE}`),
        onStarted: (sender) => Effect.zipRight(record("started"), Effect.orDie(sender.send(filled(0x30)))),
        onPostStarted: (channel) =>
          Effect.flatMap(Effect.orDie(channel.request(filled(0x50))), (reply) => record(`postStarted:${reply[0]}`)),
        onSuspend: record("suspend"),
        onClosed: (reason) => record(`closed:${reason}`)
      }).pipe(Scope.extend(scope))
      assert.strictEqual(yield* client.state, "Active")
      yield* client.pause
      yield* client.start
      yield* Scope.close(scope, Exit.void)
      assert.deepStrictEqual(yield* Ref.get(log), [
        "opened:true",
        "started",
        "postStarted:81",
        "suspend",
        "started",
        "postStarted:81",
        "suspend",
        "closed:LocalClose"
      ])
      assert.strictEqual(yield* client.state, "Closed")
    }).pipe(withBus))

  it.scoped("an onOpened failure fails the open; once its scope closes nothing is left open", () =>
    Effect.gen(function*() {
      const server = yield* Effect.fork(Channel.open({ role: "server", interfaceType: TYPE, interfaceInstance: INSTANCE }))
      const exit = yield* Effect.exit(Effect.scoped(Channel.open({ role: "client", interfaceType: TYPE }, {
        onOpened: () => Effect.fail("refused" as const)
      })))
      assert.strictEqual(failureOf(exit), "refused")
      const stats = yield* busStats
      assert.strictEqual(stats.openChannels, 0)
      assert.strictEqual(stats.channelsOpened, stats.channelsClosed)
      assert.strictEqual(yield* (yield* Fiber.join(server)).closed, "PeerClose")
    }).pipe(withBus))

  // Regression: the open period has its own scope, closed at once when onOpened fails (B3 rollback).
  it.scoped("an onOpened failure rolls the open back at once, even in a longer-lived scope", () =>
    Effect.gen(function*() {
      const server = yield* Effect.fork(Channel.open({ role: "server", interfaceType: TYPE, interfaceInstance: INSTANCE }))
      const exit = yield* Effect.exit(Channel.open({ role: "client", interfaceType: TYPE }, {
        onOpened: () => Effect.fail("refused" as const)
      }))
      assert.strictEqual(failureOf(exit), "refused")
      yield* settle()
      assert.strictEqual((yield* busStats).openChannels, 0, "the failed open left a channel open")
      assert.strictEqual(yield* (yield* Fiber.join(server)).closed, "PeerClose")
    }).pipe(withBus))
})

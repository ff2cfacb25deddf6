// The in-memory transport (kmcl-model.md B1): offers, opens and rescinds; endpoints over shared
// byte-exact rings; counted signals that follow the ring rules (one signal per empty→non-empty batch,
// none while the reader is masked or behind, writer signalled when its space request is met); and
// statistics that return to zero once every scope is closed.
import { assert, describe, it } from "@effect/vitest"
import { Cause, Effect, Exit, Fiber, Option, Scope } from "effect"
import * as Channel from "../src/Channel.js"
import * as InMemoryTransport from "../src/InMemoryTransport.js"
import * as Ring from "../src/Ring.js"
import * as Transport from "../src/Transport.js"
import type { CloseReason } from "../src/VmbusError.js"
import { busStats, eventually, filled, INSTANCE, onlyChannel, openPair, settle, TYPE, withBus } from "./utils/channels.js"

const OTHER_INSTANCE = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"

const failureOf = <A, E>(exit: Exit.Exit<A, E>): E => {
  if (Exit.isSuccess(exit)) throw new Error("expected a failure, got success")
  const failure = Cause.failureOption(exit.cause)
  if (Option.isNone(failure)) throw new Error(`expected a typed failure, got ${Cause.pretty(exit.cause)}`)
  return failure.value
}

const assertFailsWith = <A, E>(exit: Exit.Exit<A, E>, tag: string, fields: Record<string, unknown> = {}) => {
  const error = failureOf(exit) as Record<string, unknown>
  assert.strictEqual(error._tag, tag, `expected ${tag}, got ${String(error._tag)}`)
  for (const [key, value] of Object.entries(fields)) assert.deepStrictEqual(error[key], value, `${tag}.${key}`)
}

const takeAndComplete = (channel: Channel.OpenedChannel) =>
  Effect.scoped(Effect.flatMap(channel.take, (packet) => Effect.as(packet.complete(), packet.payload)))

/** A server endpoint and a client endpoint straight from the Transport, in the current scope. */
const connect = (request: Partial<Transport.OpenRequest> = {}) =>
  Effect.gen(function*() {
    const transport = yield* Transport.Transport
    const offer = yield* transport.offer({ interfaceType: TYPE, interfaceInstance: INSTANCE })
    const accepting = yield* Effect.fork(offer.accept)
    const client = yield* transport.open({
      interfaceType: TYPE,
      interfaceInstance: INSTANCE,
      outgoingRingPages: 2,
      incomingRingPages: 3,
      ...request
    })
    const server = yield* Fiber.join(accepting)
    return { client, offer, server }
  })

describe("endpoints", () => {
  it.scoped("client and server share the rings the client donated, initialised and sized as asked", () =>
    Effect.gen(function*() {
      const { client, offer, server } = yield* connect()
      assert.strictEqual(client.role, "client")
      assert.strictEqual(server.role, "server")
      assert.strictEqual(client.childRelid, offer.childRelid)
      assert.strictEqual(server.childRelid, offer.childRelid)
      assert.strictEqual(client.identity.interfaceInstance, INSTANCE)
      assert.strictEqual(client.outgoing.byteLength, 2 * Ring.PAGE_SIZE)
      assert.strictEqual(client.incoming.byteLength, 3 * Ring.PAGE_SIZE)
      for (const ring of [client.outgoing, client.incoming]) {
        const snapshot = Ring.inspect(ring) as Ring.ControlSnapshot
        assert.strictEqual(snapshot.writeIndex, 0)
        assert.strictEqual(snapshot.readIndex, 0)
        assert.strictEqual(snapshot.featureBits & 1, 1, "pending-send-size feature bit")
      }
      // One memory: what the client writes, the server reads, in both directions.
      client.outgoing[Ring.CONTROL_PAGE_SIZE + 5] = 0xab
      assert.strictEqual(server.incoming[Ring.CONTROL_PAGE_SIZE + 5], 0xab)
      server.outgoing[Ring.CONTROL_PAGE_SIZE + 9] = 0xcd
      assert.strictEqual(client.incoming[Ring.CONTROL_PAGE_SIZE + 9], 0xcd)
      const [info] = yield* (yield* InMemoryTransport.Control).openChannels
      assert.strictEqual(info!.clientToServer[Ring.CONTROL_PAGE_SIZE + 5], 0xab)
      assert.strictEqual(info!.serverToClient[Ring.CONTROL_PAGE_SIZE + 9], 0xcd)
    }).pipe(withBus))

  it.scoped("signals are counted; one sent before the callback is installed is delivered at installation", () =>
    Effect.gen(function*() {
      const { client, server } = yield* connect()
      let serverWakes = 0
      let clientWakes = 0
      client.signal()
      assert.strictEqual(server.counters.signalsReceived, 1)
      server.onSignal(() => serverWakes++)
      assert.strictEqual(serverWakes, 1, "the early signal is not lost")
      client.signal()
      client.signal()
      assert.strictEqual(serverWakes, 3)
      client.onSignal(() => clientWakes++)
      assert.strictEqual(clientWakes, 0, "no phantom signal")
      server.signal()
      assert.strictEqual(clientWakes, 1)
      assert.strictEqual(client.counters.signalsSent, 3)
      assert.strictEqual(server.counters.signalsSent, 1)
      assert.strictEqual(client.counters.signalsReceived, 1)
      assert.strictEqual((yield* busStats).signalsSent, 4)
    }).pipe(withBus))

  it.scoped("closing the client tells the server (PeerClose); signals after the close go nowhere", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const { client, server } = yield* connect().pipe(Scope.extend(scope))
      const reasons: Array<CloseReason> = []
      let wakes = 0
      server.onPeerClose((reason) => reasons.push(reason))
      server.onSignal(() => wakes++)
      yield* Scope.close(scope, Exit.void)
      assert.deepStrictEqual(reasons, ["PeerClose"])
      client.signal()
      assert.strictEqual(wakes, 0)
      const stats = yield* busStats
      assert.strictEqual(stats.openChannels, 0)
      assert.strictEqual(stats.offers, 0)
      // A callback installed after the close still learns why.
      const late: Array<CloseReason> = []
      server.onPeerClose((reason) => late.push(reason))
      assert.deepStrictEqual(late, ["PeerClose"])
    }).pipe(withBus))
})

describe("offers and opens", () => {
  it.effect("a client open waits for a later offer of a matching instance", () =>
    Effect.gen(function*() {
      const transport = yield* Transport.Transport
      const clientScope = yield* Scope.make()
      const opening = yield* Effect.fork(
        transport.open({ interfaceType: TYPE, interfaceInstance: INSTANCE, outgoingRingPages: 2, incomingRingPages: 2 }).pipe(
          Scope.extend(clientScope)
        )
      )
      yield* settle()
      assert.isNull(opening.unsafePoll(), "no offer yet")
      // An offer of another instance does not satisfy it.
      const otherScope = yield* Scope.make()
      yield* transport.offer({ interfaceType: TYPE, interfaceInstance: OTHER_INSTANCE }).pipe(Scope.extend(otherScope))
      yield* settle()
      assert.isNull(opening.unsafePoll(), "other instance ignored")
      const scope = yield* Scope.make()
      const offer = yield* transport.offer({ interfaceType: TYPE, interfaceInstance: INSTANCE }).pipe(Scope.extend(scope))
      const server = yield* offer.accept
      const client = yield* Fiber.join(opening)
      assert.strictEqual(client.identity.interfaceInstance, INSTANCE)
      assert.strictEqual(server.role, "server")
      assert.strictEqual(server.childRelid, client.childRelid)
      assert.strictEqual((yield* busStats).openChannels, 1)
      yield* Scope.close(clientScope, Exit.void)
      yield* Scope.close(scope, Exit.void)
      yield* Scope.close(otherScope, Exit.void)
      const stats = yield* busStats
      assert.strictEqual(stats.offers, 0)
      assert.strictEqual(stats.openChannels, 0)
    }).pipe(withBus))

  // Regression: CLOSECHANNEL for an open period the server has not accepted yet must still end it,
  // or the ring GPADL stays mapped and the client's close waits forever for GPADL_TORNDOWN.
  it.effect("a client may close before the server accepted the open period", () =>
    Effect.gen(function*() {
      const transport = yield* Transport.Transport
      const serverScope = yield* Scope.make()
      const offer = yield* transport.offer({ interfaceType: TYPE, interfaceInstance: INSTANCE }).pipe(Scope.extend(serverScope))
      const clientScope = yield* Scope.make()
      yield* transport.open({ interfaceType: TYPE, outgoingRingPages: 2, incomingRingPages: 2 }).pipe(Scope.extend(clientScope))
      const closing = yield* Effect.forkDaemon(Scope.close(clientScope, Exit.void))
      yield* settle()
      assert.isNotNull(closing.unsafePoll(), "the client's close must not hang")
      assert.strictEqual((yield* busStats).openChannels, 0)
      // The server never sees that open period.
      const accepting = yield* Effect.fork(offer.accept)
      yield* settle()
      assert.isNull(accepting.unsafePoll())
      yield* Scope.close(serverScope, Exit.void)
    }).pipe(withBus))

  it.scoped("channels: a client opened first waits for the server, then traffic flows", () =>
    Effect.gen(function*() {
      const client = yield* Effect.fork(Channel.open({ role: "client", interfaceType: TYPE }))
      yield* settle()
      assert.isNull(client.unsafePoll())
      const server = yield* Channel.open({ role: "server", interfaceType: TYPE, interfaceInstance: INSTANCE })
      const opened = yield* Fiber.join(client)
      yield* opened.send(filled(7))
      assert.deepStrictEqual(Array.from(yield* takeAndComplete(server)), Array.from(filled(7)))
    }).pipe(withBus))

  it.scoped("a second offer of the same instance is InvalidParameter until the first is withdrawn", () =>
    Effect.gen(function*() {
      const transport = yield* Transport.Transport
      const scope = yield* Scope.make()
      yield* transport.offer({ interfaceType: TYPE, interfaceInstance: INSTANCE }).pipe(Scope.extend(scope))
      const again = yield* Effect.exit(Effect.scoped(transport.offer({ interfaceType: TYPE, interfaceInstance: INSTANCE })))
      assertFailsWith(again, "InvalidParameter", { field: "interfaceInstance" })
      // GUIDs compare case-insensitively.
      const upper = yield* Effect.exit(
        Effect.scoped(transport.offer({ interfaceType: TYPE, interfaceInstance: INSTANCE.toUpperCase() }))
      )
      assertFailsWith(upper, "InvalidParameter", { field: "interfaceInstance" })
      // At the channel level too.
      const channel = yield* Effect.exit(
        Effect.scoped(Channel.open({ role: "server", interfaceType: TYPE, interfaceInstance: INSTANCE }))
      )
      assertFailsWith(channel, "InvalidParameter", { field: "interfaceInstance" })
      assert.strictEqual((yield* busStats).offers, 1)
      yield* Scope.close(scope, Exit.void)
      assert.strictEqual((yield* busStats).offers, 0)
      yield* transport.offer({ interfaceType: TYPE, interfaceInstance: INSTANCE })
      assert.strictEqual((yield* busStats).offers, 1)
    }).pipe(withBus))

  it.scoped("malformed GUIDs and ring sizes are InvalidParameter", () =>
    Effect.gen(function*() {
      const transport = yield* Transport.Transport
      assertFailsWith(
        yield* Effect.exit(Effect.scoped(transport.offer({ interfaceType: "nope", interfaceInstance: INSTANCE }))),
        "InvalidParameter",
        { field: "interfaceType" }
      )
      assertFailsWith(
        yield* Effect.exit(Effect.scoped(transport.offer({ interfaceType: TYPE, interfaceInstance: "{bad}" }))),
        "InvalidParameter",
        { field: "interfaceInstance" }
      )
      assertFailsWith(
        yield* Effect.exit(Effect.scoped(transport.open({ interfaceType: TYPE, outgoingRingPages: 1, incomingRingPages: 2 }))),
        "InvalidParameter",
        { field: "outgoingRingPages" }
      )
      assertFailsWith(
        yield* Effect.exit(Effect.scoped(transport.open({ interfaceType: TYPE, outgoingRingPages: 2, incomingRingPages: 2.5 }))),
        "InvalidParameter",
        { field: "incomingRingPages" }
      )
      assert.strictEqual((yield* busStats).offers, 0)
    }).pipe(withBus))
})

describe("rescind", () => {
  it.scoped("Control.rescind ends an open channel (client sees Rescinded) and fails a waiting accept", () =>
    Effect.gen(function*() {
      const control = yield* InMemoryTransport.Control
      const transport = yield* Transport.Transport
      const { client, server } = yield* connect()
      const clientReasons: Array<CloseReason> = []
      const serverReasons: Array<CloseReason> = []
      client.onPeerClose((reason) => clientReasons.push(reason))
      server.onPeerClose((reason) => serverReasons.push(reason))
      assert.isTrue(yield* control.rescind(INSTANCE))
      assert.deepStrictEqual(clientReasons, ["Rescinded"])
      assert.isAtMost(serverReasons.length, 1, "told at most once")
      assert.isFalse(yield* control.rescind(INSTANCE), "already gone")
      assert.isFalse(yield* control.rescind(OTHER_INSTANCE), "never offered")
      assert.strictEqual((yield* busStats).offers, 0)
      // An offer nobody opened yet: its pending accept fails.
      const offer = yield* transport.offer({ interfaceType: TYPE, interfaceInstance: OTHER_INSTANCE })
      const accepting = yield* Effect.fork(offer.accept)
      yield* settle()
      assert.isTrue(yield* control.rescind(OTHER_INSTANCE))
      assertFailsWith(yield* Fiber.await(accepting), "ChannelClosed", { reason: "Rescinded" })
      assertFailsWith(yield* Effect.exit(offer.accept), "ChannelClosed", { reason: "Rescinded" })
    }).pipe(withBus))

  it.scoped("a rescinded offer is no longer opened by a waiting client", () =>
    Effect.gen(function*() {
      const control = yield* InMemoryTransport.Control
      const transport = yield* Transport.Transport
      yield* transport.offer({ interfaceType: TYPE, interfaceInstance: INSTANCE })
      assert.isTrue(yield* control.rescind(INSTANCE))
      const opening = yield* Effect.fork(Effect.scoped(
        transport.open({ interfaceType: TYPE, outgoingRingPages: 2, incomingRingPages: 2 })
      ))
      yield* settle()
      assert.isNull(opening.unsafePoll(), "waits for a live offer")
      yield* Fiber.interrupt(opening)
      assert.strictEqual((yield* busStats).openChannels, 0)
    }).pipe(withBus))
})

describe("signals follow the ring rules", () => {
  it.scoped("one signal for a batch into an empty ring; none while the reader has data pending", () =>
    Effect.gen(function*() {
      const { client, server } = yield* openPair({ server: { transactionQuota: 1 } })
      const info = yield* onlyChannel
      const before = info.client.signalsSent
      yield* client.sendBatch([1, 2, 3, 4, 5].map((i) => filled(i)))
      assert.strictEqual(info.client.signalsSent, before + 1, "a batch is one publish and one signal")
      yield* eventually(Effect.map(server.stats, (s) => s.packetsOutstanding === 1), "first packet delivered")
      yield* settle()
      // The reader is quota-blocked with four packets in the ring: further writes do not signal.
      yield* Effect.forEach([6, 7, 8], (i) => client.send(filled(i)), { discard: true })
      yield* client.sendBatch([filled(9), filled(10)])
      assert.strictEqual(info.client.signalsSent, before + 1, "no signal while the reader is behind")
      assert.strictEqual((yield* client.stats).signalsSent, before + 1)
      assert.strictEqual((yield* server.stats).signalsReceived, info.server.signalsReceived)
      const received = yield* Effect.forEach(Array.from({ length: 10 }), () => takeAndComplete(server))
      assert.deepStrictEqual(received.map((p) => p[0]), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
      // Drained, idle and unmasked again: the next write signals once more, but the writes right after
      // it do not (the ring was not empty when they started), although the reader has not run yet.
      yield* settle()
      assert.strictEqual((Ring.inspect(info.clientToServer) as Ring.ControlSnapshot).interruptMask, 0)
      yield* Effect.forEach([11, 12, 13], (i) => client.send(filled(i)), { discard: true })
      assert.strictEqual(info.client.signalsSent, before + 2)
      const last = yield* Effect.forEach([11, 12, 13], () => takeAndComplete(server))
      assert.deepStrictEqual(last.map((p) => p[0]), [11, 12, 13])
      const stats = yield* busStats
      assert.strictEqual(stats.signalsSent, info.client.signalsSent + info.server.signalsSent)
    }).pipe(withBus))

  it.scoped("a writer waiting for space is signalled by the reader once its request is met", () =>
    Effect.gen(function*() {
      const { client, server } = yield* openPair({
        client: { outgoingRingPages: 2, incomingRingPages: 2, maxPacketSize: 1000 },
        server: { maxPacketSize: 1000, transactionQuota: 1 }
      })
      const info = yield* onlyChannel
      const sending = yield* Effect.fork(
        Effect.forEach(Array.from({ length: 6 }, (_, i) => i), (i) => client.send(filled(i, 1000)), { discard: true })
      )
      yield* eventually(Effect.map(client.stats, (s) => s.ringFullWaits > 0), "writer waits")
      const serverSignals = info.server.signalsSent
      const snapshot = Ring.inspect(info.clientToServer) as Ring.ControlSnapshot
      assert.isAbove(snapshot.pendingSendSize, 0, "the writer asked for space")
      const received = yield* Effect.forEach(Array.from({ length: 6 }), () => takeAndComplete(server))
      yield* Fiber.join(sending)
      assert.deepStrictEqual(received.map((p) => p[0]), [0, 1, 2, 3, 4, 5])
      assert.isAbove(info.server.signalsSent, serverSignals, "the reader signalled the waiting writer")
      assert.strictEqual((Ring.inspect(info.clientToServer) as Ring.ControlSnapshot).pendingSendSize, 0, "request withdrawn")
    }).pipe(withBus))
})

describe("statistics", () => {
  it.effect("return to zero once every channel and offer is closed", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const instances = [INSTANCE, OTHER_INSTANCE, "0f0e0d0c-0b0a-0908-0706-050403020100"]
      yield* Effect.forEach(instances, (instance) =>
        Effect.gen(function*() {
          const { client, server } = yield* openPair({ instance })
          yield* Effect.forkIn(server.serve((packet) => Effect.succeed(packet.payload)), scope)
          const replies = yield* Effect.forEach([1, 2, 3], (i) => client.request(filled(i)), { concurrency: 3 })
          assert.deepStrictEqual(replies.map((r) => r[0]), [1, 2, 3])
        }).pipe(Scope.extend(scope)), { discard: true })
      const busy = yield* busStats
      assert.strictEqual(busy.openChannels, 3)
      assert.strictEqual(busy.offers, 3)
      assert.isAbove(busy.signalsSent, 0)
      yield* Scope.close(scope, Exit.void)
      const stats = yield* busStats
      assert.strictEqual(stats.offers, 0)
      assert.strictEqual(stats.openChannels, 0)
      assert.strictEqual(stats.outstandingTransactions, 0)
      assert.strictEqual(stats.outstandingPackets, 0)
      assert.strictEqual(stats.channelsOpened, 3)
      assert.strictEqual(stats.channelsClosed, 3)
      assert.strictEqual(stats.gpadls, 0)
      assert.strictEqual(stats.guestPagesAllocated, 0)
      assert.isAtLeast(stats.signalsSent, busy.signalsSent, "signals of closed channels stay counted")
      assert.strictEqual(stats.malformedMessages, 0)
    }).pipe(withBus))
})

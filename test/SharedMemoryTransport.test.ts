// The shared-memory transport: the guest side of a channel behind a MessagePort and doorbell words,
// first with both ends in the test thread (deterministic enough, fast), then with the guest in a real
// worker thread. Everything here runs on the live clock: MessagePort messages and Atomics.waitAsync
// wake-ups are real asynchronous events.
import { assert, describe, it } from "@effect/vitest"
import { Cause, Deferred, Effect, Exit, Fiber, Option, Scope } from "effect"
import { Worker } from "node:worker_threads"
import * as Channel from "../src/Channel.js"
import * as InMemoryTransport from "../src/InMemoryTransport.js"
import * as SharedMemoryTransport from "../src/SharedMemoryTransport.js"
import * as Transport from "../src/Transport.js"
import { busStats, filled, INSTANCE, TYPE } from "./utils/channels.js"

const SMALL = { outgoingRingPages: 2, incomingRingPages: 2, maxPacketSize: 1000 } as const

const assertBytes = (actual: Uint8Array, expected: Uint8Array) =>
  assert.deepStrictEqual(Array.from(actual), Array.from(expected))

const failureOf = <A, E>(exit: Exit.Exit<A, E>): E => {
  if (Exit.isSuccess(exit)) throw new Error("expected a failure")
  const failure = Cause.failureOption(exit.cause)
  if (Option.isNone(failure)) throw new Error(`expected a typed failure, got ${Cause.pretty(exit.cause)}`)
  return failure.value
}

/** Polls `check` on the live clock (5 ms steps) until it holds, or dies after `millis`. */
const eventually = <E, R>(check: Effect.Effect<boolean, E, R>, label: string, millis = 5000) => {
  const loop = (left: number): Effect.Effect<void, E, R> =>
    Effect.flatMap(check, (ok) => {
      if (ok) return Effect.void
      if (left <= 0) return Effect.dieMessage(`condition never held: ${label}`)
      return Effect.zipRight(Effect.sleep("5 millis"), loop(left - 5))
    })
  return loop(millis)
}

/** Both ends in this thread: the host serves the guest end of a fresh connection. */
const connect = Effect.gen(function*() {
  const connection = yield* SharedMemoryTransport.makeConnection({ maxChannels: 4 })
  const guestServer = yield* SharedMemoryTransport.serveGuest(connection.hostPort, connection.shared)
  const guest = yield* SharedMemoryTransport.make(connection.guestPort, connection.shared)
  const asGuest = <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.provideService(self, Transport.Transport, guest)
  return { connection, guestServer, guest, asGuest }
})

/** A server channel on the in-memory bus and a client channel through the guest transport, each in its own scope. */
const openPair = (options: { readonly server?: object; readonly client?: object } = {}) =>
  Effect.gen(function*() {
    const link = yield* connect
    const serverScope = yield* Scope.make()
    const clientScope = yield* Scope.make()
    const [server, client] = yield* Effect.all([
      Channel.open({ role: "server", interfaceType: TYPE, interfaceInstance: INSTANCE, ...options.server }).pipe(
        Scope.extend(serverScope)
      ),
      link.asGuest(Channel.open({ role: "client", interfaceType: TYPE, ...options.client })).pipe(Scope.extend(clientScope))
    ], { concurrency: 2 })
    yield* Effect.addFinalizer(() => Effect.zipRight(Scope.close(clientScope, Exit.void), Scope.close(serverScope, Exit.void)))
    return { ...link, server, client, serverScope, clientScope }
  })

const withBus = <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.provide(self, InMemoryTransport.layer)

describe("SharedMemoryTransport, both ends in one thread", () => {
  it.scopedLive("the guest transport is client-only and says so", () =>
    Effect.gen(function*() {
      const { asGuest, guest } = yield* connect
      assert.deepStrictEqual(guest.capabilities, { ringGeometry: true, serverRole: false, gpadl: false })
      const exit = yield* Effect.exit(
        asGuest(Effect.scoped(Channel.open({ role: "server", interfaceType: TYPE, interfaceInstance: INSTANCE })))
      )
      const error = failureOf(exit) as { _tag: string; capability?: string }
      assert.strictEqual(error._tag, "Unsupported")
      assert.strictEqual(error.capability, "serverRole")
    }).pipe(withBus))

  it.scopedLive("request/serve round trips; the rings are views on the shared guest memory", () =>
    Effect.gen(function*() {
      const { client, connection, server } = yield* openPair()
      yield* Effect.forkScoped(server.serve((packet) => Effect.succeed(filled(0x80 + packet.payload[0]!, 64))))
      const replies = yield* Effect.forEach(
        Array.from({ length: 50 }, (_, i) => i),
        (i) => client.request(filled(i, 16)),
        { concurrency: 8 }
      )
      replies.forEach((reply, i) => assertBytes(reply, filled(0x80 + i, 64)))
      const [info] = (yield* (yield* InMemoryTransport.Control).openChannels)
      assert.strictEqual(info!.clientToServer.buffer, connection.shared.memory)
      assert.strictEqual(info!.childRelid, client.childRelid)
      assert.isAbove(info!.client.signalsSent + info!.server.signalsSent, 0)
    }).pipe(withBus))

  it.scopedLive("an open error keeps its tag; an interrupted open leaves nothing open on the host", () =>
    Effect.gen(function*() {
      const { guest, guestServer } = yield* connect
      const invalid = failureOf(
        yield* Effect.exit(Effect.scoped(guest.open({ interfaceType: TYPE, outgoingRingPages: 1, incomingRingPages: 2 })))
      ) as { _tag: string; field?: string }
      assert.strictEqual(invalid._tag, "InvalidParameter")
      assert.strictEqual(invalid.field, "outgoingRingPages")
      // Nobody offers this type: the client's open times out; the host's pending open is closed.
      const timeout = failureOf(yield* Effect.exit(Effect.scoped(
        Channel.open({ role: "client", interfaceType: "00000000-0000-0000-0000-000000000001", openTimeoutMillis: 100 })
          .pipe(Effect.provideService(Transport.Transport, guest))
      ))) as { _tag: string }
      assert.strictEqual(timeout._tag, "OpenTimeout")
      yield* eventually(Effect.map(guestServer.openChannels, (n) => n === 0), "host closed the abandoned open")
      assert.strictEqual((yield* busStats).openChannels, 0)
    }).pipe(withBus))

  it.scopedLive("ring-full backpressure across the bridge: the guest waits, the host drains in order", () =>
    Effect.gen(function*() {
      const { client, server } = yield* openPair({ client: SMALL, server: { maxPacketSize: 1000 } })
      const sending = yield* Effect.fork(
        Effect.forEach(Array.from({ length: 12 }, (_, i) => i), (i) => client.send(filled(i, 1000)), { discard: true })
      )
      yield* eventually(Effect.map(client.stats, (s) => s.ringFullWaits > 0), "guest→host ring full")
      const received = yield* Effect.forEach(
        Array.from({ length: 12 }),
        () => Effect.scoped(Effect.flatMap(server.take, (packet) => Effect.as(packet.complete(), packet.payload[0])))
      )
      assert.deepStrictEqual(received, Array.from({ length: 12 }, (_, i) => i))
      yield* Fiber.join(sending)
    }).pipe(withBus))

  it.scopedLive("the host closes: the guest's channel ends with the in-memory reason", () =>
    Effect.gen(function*() {
      const { client, serverScope } = yield* openPair()
      yield* Scope.close(serverScope, Exit.void)
      assert.strictEqual(yield* client.closed, "Rescinded")
    }).pipe(withBus))

  it.scopedLive("the guest closes: the host sees PeerClose and nothing leaks", () =>
    Effect.gen(function*() {
      const { client, clientScope, guestServer, server } = yield* openPair()
      yield* Effect.forkScoped(server.serve(() => Effect.succeed(filled(1))))
      assertBytes(yield* client.request(filled(0)), filled(1))
      yield* Scope.close(clientScope, Exit.void)
      assert.strictEqual(yield* server.closed, "PeerClose")
      assert.strictEqual(yield* guestServer.openChannels, 0)
      const stats = yield* busStats
      assert.strictEqual(stats.openChannels, 0)
      assert.strictEqual(stats.outstandingTransactions, 0)
      assert.strictEqual(stats.outstandingPackets, 0)
    }).pipe(withBus))

  it.scopedLive("the guest's port closes: the host closes every remote channel", () =>
    Effect.gen(function*() {
      const { client, connection, server } = yield* openPair()
      connection.guestPort.close()
      assert.strictEqual(yield* server.closed, "PeerClose")
      yield* eventually(Effect.map(busStats, (s) => s.openChannels === 0), "bus has no open channel")
      // The guest learned it too: its channel ended as if the host had closed it.
      assert.strictEqual(yield* client.closed, "PeerClose")
    }).pipe(withBus))
})

// ---------------------------------------------------------------------------------------------
// A real worker thread
// ---------------------------------------------------------------------------------------------

const REQUESTS = 200

describe("SharedMemoryTransport, guest in a worker thread", () => {
  it.scopedLive("the worker's requests all come back intact; both sides close cleanly", () =>
    Effect.gen(function*() {
      const connection = yield* SharedMemoryTransport.makeConnection()
      const guestServer = yield* SharedMemoryTransport.serveGuest(connection.hostPort, connection.shared)
      // The server's open waits for the worker's client: fork it before the worker starts.
      const opening = yield* Effect.forkScoped(Channel.open({ role: "server", interfaceType: TYPE, interfaceInstance: INSTANCE }))
      const results = yield* Deferred.make<ReadonlyArray<number>, Error>()
      const exitCode = yield* Deferred.make<number>()
      // `execArgv: ["--import", "tsx"]` does not reach a worker's entry on Node 20: a .mjs bootstrap registers tsx.
      const worker = new Worker(new URL("./utils/tsWorker.mjs", import.meta.url), {
        workerData: {
          entry: new URL("./utils/sharedGuestWorker.ts", import.meta.url).href,
          port: connection.guestPort,
          shared: connection.shared,
          requests: REQUESTS
        },
        transferList: [connection.guestPort]
      })
      worker.on("message", (message: { readonly ok: boolean; readonly checks?: ReadonlyArray<number>; readonly error?: string }) => {
        if (message.ok) Deferred.unsafeDone(results, Exit.succeed(message.checks ?? []))
        else Deferred.unsafeDone(results, Exit.fail(new Error(message.error)))
      })
      worker.on("error", (error) => Deferred.unsafeDone(results, Exit.fail(error)))
      worker.on("exit", (code) => Deferred.unsafeDone(exitCode, Exit.succeed(code)))
      yield* Effect.addFinalizer(() => Effect.promise(() => worker.terminate()))
      const server = yield* Fiber.join(opening)
      yield* Effect.forkScoped(server.serve((packet) => {
        const reply = new Uint8Array(packet.payload.length)
        for (let i = 0; i < reply.length; i++) reply[i] = packet.payload[i]! ^ 0xff
        return Effect.succeed(reply)
      }))
      const checks = yield* Deferred.await(results).pipe(Effect.timeout("20 seconds"))
      assert.strictEqual(checks.length, REQUESTS)
      assert.isTrue(checks.every((ok) => ok === 1), "every reply is the bitwise complement of its request")
      assert.strictEqual(yield* Deferred.await(exitCode).pipe(Effect.timeout("10 seconds")), 0)
      // The worker closed its channel, then its port: the host side is clean.
      assert.strictEqual(yield* server.closed, "PeerClose")
      yield* guestServer.closed.pipe(Effect.timeout("5 seconds"))
      assert.strictEqual(yield* guestServer.openChannels, 0)
      assert.strictEqual((yield* busStats).openChannels, 0)
      assert.isAbove((yield* server.stats).packetsReceived, REQUESTS - 1)
    }).pipe(withBus), 40_000)
})

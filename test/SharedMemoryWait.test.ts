// SharedMemoryTransport's WaitOptions (spinning before parking, blocking in Atomics.wait) and the
// guest's keep-alive: option validation, request/serve correctness with each mode in one thread and
// across real worker threads (guest in a worker; host in a worker), spurious doorbell rings, and a
// worker held alive by an open channel but not by an idle transport. Live clock; no timed assertions.
import { assert, describe, it } from "@effect/vitest"
import { Cause, Deferred, Effect, Exit, Fiber, Layer, Option, Scope } from "effect"
import { isMainThread, type MessagePort, Worker } from "node:worker_threads"
import * as Channel from "../src/Channel.js"
import * as InMemoryTransport from "../src/InMemoryTransport.js"
import * as SharedMemoryTransport from "../src/SharedMemoryTransport.js"
import * as Transport from "../src/Transport.js"
import type { InvalidParameter } from "../src/VmbusError.js"
import { busStats, INSTANCE, TYPE } from "./utils/channels.js"

const withBus = <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.provide(self, InMemoryTransport.layer)

const failureOf = <A, E>(exit: Exit.Exit<A, E>): E => {
  if (Exit.isSuccess(exit)) throw new Error("expected a failure")
  const failure = Cause.failureOption(exit.cause)
  if (Option.isNone(failure)) throw new Error(`expected a typed failure, got ${Cause.pretty(exit.cause)}`)
  return failure.value
}

const complement = (payload: Uint8Array) => payload.map((byte) => byte ^ 0xff)
const request = (i: number) => Uint8Array.from({ length: 8 + 8 * (i % 16) }, (_, j) => (i + j) & 0xff)
const isComplement = (i: number, reply: Uint8Array) => {
  const sent = request(i)
  return reply.length === sent.length && reply.every((byte, j) => byte === (sent[j]! ^ 0xff))
}

describe("SharedMemoryTransport WaitOptions validation", () => {
  const bad: ReadonlyArray<readonly [SharedMemoryTransport.WaitOptions, string]> = [
    [{ spinMicros: -1 }, "spinMicros"],
    [{ spinMicros: Number.NaN }, "spinMicros"],
    [{ spinMicros: Number.POSITIVE_INFINITY }, "spinMicros"],
    [{ spinMicros: 1001 }, "spinMicros"],
    [{ spinMicros: "50" as unknown as number }, "spinMicros"],
    [{ blockMillis: -0.5 }, "blockMillis"],
    [{ blockMillis: 51 }, "blockMillis"],
    [{ blockMillis: Number.NaN }, "blockMillis"]
  ]

  it.scopedLive("bad values fail make, layerGuest and serveGuest with InvalidParameter naming the field", () =>
    Effect.gen(function*() {
      for (const [options, field] of bad) {
        const connection = yield* SharedMemoryTransport.makeConnection({ maxChannels: 1 })
        const attempts: ReadonlyArray<Effect.Effect<Exit.Exit<unknown, InvalidParameter>, never, Transport.Transport>> = [
          Effect.exit(Effect.scoped(SharedMemoryTransport.make(connection.guestPort, connection.shared, options))),
          Effect.exit(Effect.scoped(Layer.build(SharedMemoryTransport.layerGuest(connection.guestPort, connection.shared, options)))),
          Effect.exit(Effect.scoped(SharedMemoryTransport.serveGuest(connection.hostPort, connection.shared, options)))
        ]
        for (const attempt of attempts) {
          const error = failureOf(yield* attempt)
          assert.strictEqual(error._tag, "InvalidParameter")
          assert.strictEqual(error.field, field, JSON.stringify(options))
        }
        connection.hostPort.close()
        connection.guestPort.close()
      }
    }).pipe(withBus))

  it.scopedLive.skipIf(!isMainThread)("blockMillis on the main thread is refused (Atomics.wait would block it)", () =>
    Effect.gen(function*() {
      const connection = yield* SharedMemoryTransport.makeConnection({ maxChannels: 1 })
      for (const self of <ReadonlyArray<Effect.Effect<unknown, InvalidParameter, Transport.Transport | Scope.Scope>>> [
        SharedMemoryTransport.make(connection.guestPort, connection.shared, { blockMillis: 5 }),
        SharedMemoryTransport.serveGuest(connection.hostPort, connection.shared, { blockMillis: 5 })
      ]) {
        const error = failureOf(yield* Effect.exit(Effect.scoped(self)))
        assert.strictEqual(error._tag, "InvalidParameter")
        assert.strictEqual(error.field, "blockMillis")
        assert.match(error.reason, /main thread/)
      }
      // Valid values (0 is "off"; blocking off is fine on the main thread) construct.
      yield* Effect.scoped(SharedMemoryTransport.make(connection.guestPort, connection.shared, { spinMicros: 1000, blockMillis: 0 }))
    }).pipe(withBus))
})

describe("SharedMemoryTransport spinning, both ends in one thread", () => {
  it.scopedLive("requests round trip with both sides spinning, under spurious doorbell rings; nothing leaks", () =>
    Effect.gen(function*() {
      const connection = yield* SharedMemoryTransport.makeConnection({ maxChannels: 2 })
      const guestServer = yield* SharedMemoryTransport.serveGuest(connection.hostPort, connection.shared, { spinMicros: 20 })
      const guest = yield* SharedMemoryTransport.make(connection.guestPort, connection.shared, { spinMicros: 20 })
      const serverScope = yield* Scope.make()
      const clientScope = yield* Scope.make()
      const [server, client] = yield* Effect.all([
        Channel.open({ role: "server", interfaceType: TYPE, interfaceInstance: INSTANCE }).pipe(Scope.extend(serverScope)),
        Channel.open({ role: "client", interfaceType: TYPE }).pipe(
          Effect.provideService(Transport.Transport, guest),
          Scope.extend(clientScope)
        )
      ], { concurrency: 2 })
      yield* Effect.forkIn(server.serve((packet) => Effect.succeed(complement(packet.payload))), serverScope)
      // A third party bumps every doorbell word now and then: a wake-up that finds nothing new is harmless.
      const words = new Int32Array(connection.shared.doorbells)
      const noise = setInterval(() => {
        for (let i = 0; i < words.length; i++) {
          Atomics.add(words, i, 1)
          Atomics.notify(words, i)
        }
      }, 1)
      yield* Effect.addFinalizer(() => Effect.sync(() => clearInterval(noise)))
      const sequential = yield* Effect.forEach(Array.from({ length: 100 }, (_, i) => i), (i) =>
        Effect.map(client.request(request(i)), (reply) => isComplement(i, reply)))
      const concurrent = yield* Effect.forEach(Array.from({ length: 200 }, (_, i) => i), (i) =>
        Effect.map(client.request(request(i)), (reply) => isComplement(i, reply)), { concurrency: 16 })
      assert.isTrue([...sequential, ...concurrent].every(Boolean), "every reply is the complement of its request")
      clearInterval(noise)
      yield* Scope.close(clientScope, Exit.void)
      assert.strictEqual(yield* server.closed, "PeerClose")
      yield* Scope.close(serverScope, Exit.void)
      assert.strictEqual(yield* guestServer.openChannels, 0)
      const stats = yield* busStats
      assert.strictEqual(stats.openChannels, 0)
      assert.strictEqual(stats.outstandingTransactions, 0)
      assert.strictEqual(stats.outstandingPackets, 0)
    }).pipe(withBus))
})

// ---------------------------------------------------------------------------------------------
// Real worker threads
// ---------------------------------------------------------------------------------------------

type WorkerReport = { readonly ok: boolean; readonly checks?: ReadonlyArray<number>; readonly error?: string }

/** Starts a TypeScript worker (test/utils/tsWorker.mjs registers tsx); messages and exit code as Deferreds. */
const startWorker = <M>(entry: string, workerData: object, transferList: ReadonlyArray<MessagePort>) =>
  Effect.gen(function*() {
    const messages: Array<Deferred.Deferred<M, Error>> = [yield* Deferred.make<M, Error>(), yield* Deferred.make<M, Error>()]
    let received = 0
    const exitCode = yield* Deferred.make<number>()
    const worker = new Worker(new URL("./utils/tsWorker.mjs", import.meta.url), {
      workerData: { ...workerData, entry: new URL(entry, import.meta.url).href },
      transferList: [...transferList]
    })
    worker.on("message", (message: M) => {
      const deferred = messages[received++]
      if (deferred !== undefined) Deferred.unsafeDone(deferred, Exit.succeed(message))
    })
    worker.on("error", (error) => messages.forEach((d) => Deferred.unsafeDone(d, Exit.fail(error))))
    worker.on("exit", (code) => {
      messages.forEach((d) => Deferred.unsafeDone(d, Exit.fail(new Error(`worker exited (${code}) before posting`))))
      Deferred.unsafeDone(exitCode, Exit.succeed(code))
    })
    yield* Effect.addFinalizer(() => Effect.promise(() => worker.terminate()))
    return {
      worker,
      message: (n: number) => Deferred.await(messages[n]!).pipe(Effect.timeout("40 seconds")),
      exitCode: Deferred.await(exitCode).pipe(Effect.timeout("40 seconds"))
    }
  })

/** The host here, the guest in a worker (test/utils/sharedGuestWorker.ts), both with the given options. */
const guestInWorker = (
  options: {
    readonly host?: SharedMemoryTransport.WaitOptions
    readonly guest?: SharedMemoryTransport.WaitOptions
    readonly requests: number
    readonly idleAfterClose?: boolean
    readonly handler?: (packet: { readonly payload: Uint8Array }) => Effect.Effect<Uint8Array>
  }
) =>
  Effect.gen(function*() {
    const connection = yield* SharedMemoryTransport.makeConnection()
    const guestServer = yield* SharedMemoryTransport.serveGuest(connection.hostPort, connection.shared, options.host)
    const opening = yield* Effect.forkScoped(
      Channel.open({ role: "server", interfaceType: TYPE, interfaceInstance: INSTANCE, openTimeoutMillis: 40_000 })
    )
    const worker = yield* startWorker<WorkerReport>("./utils/sharedGuestWorker.ts", {
      port: connection.guestPort,
      shared: connection.shared,
      requests: options.requests,
      wait: options.guest,
      idleAfterClose: options.idleAfterClose
    }, [connection.guestPort])
    const server = yield* Fiber.join(opening)
    yield* Effect.forkScoped(server.serve(options.handler ?? ((packet) => Effect.succeed(complement(packet.payload)))))
    const report = yield* worker.message(0)
    assert.isTrue(report.ok, report.error)
    assert.strictEqual(report.checks?.length, options.requests)
    assert.isTrue(report.checks!.every((ok) => ok === 1), "every reply is the complement of its request")
    return { worker, server, guestServer }
  })

const closedCleanly = (
  { guestServer, server, worker }: {
    readonly worker: { readonly exitCode: Effect.Effect<number, unknown> }
    readonly server: Channel.OpenedChannel
    readonly guestServer: SharedMemoryTransport.GuestServer
  }
) =>
  Effect.gen(function*() {
    assert.strictEqual(yield* worker.exitCode, 0)
    assert.strictEqual(yield* server.closed, "PeerClose")
    yield* guestServer.closed.pipe(Effect.timeout("5 seconds"))
    assert.strictEqual(yield* guestServer.openChannels, 0)
    const stats = yield* busStats
    assert.strictEqual(stats.openChannels, 0)
    assert.strictEqual(stats.outstandingTransactions, 0)
    assert.strictEqual(stats.outstandingPackets, 0)
  })

// One worker at a time: each boots tsx and compiles the library, slow on a loaded 2-core machine.
describe.sequential("SharedMemoryTransport WaitOptions across worker threads", () => {
  it.scopedLive("guest in a worker, both sides spinning: every reply intact, both sides close cleanly", () =>
    Effect.gen(function*() {
      const link = yield* guestInWorker({ host: { spinMicros: 50 }, guest: { spinMicros: 50 }, requests: 300 })
      yield* closedCleanly(link)
    }).pipe(withBus), 60_000)

  it.scopedLive("guest in a worker blocking in Atomics.wait (and spinning): every reply intact, clean close", () =>
    Effect.gen(function*() {
      const link = yield* guestInWorker({ guest: { blockMillis: 20, spinMicros: 20 }, requests: 300 })
      yield* closedCleanly(link)
    }).pipe(withBus), 60_000)

  it.scopedLive("host in a worker blocking in Atomics.wait, guest here: every reply intact, the worker's bus ends at zero", () =>
    Effect.gen(function*() {
      const host = yield* startWorker<
        | { readonly port: MessagePort; readonly shared: SharedMemoryTransport.SharedBuffers }
        | { readonly ok: boolean; readonly error?: string; readonly counts?: Record<string, number> }
      >("./utils/sharedHostWorker.ts", { wait: { blockMillis: 10 } }, [])
      const first = yield* host.message(0)
      assert.isTrue("port" in first, JSON.stringify(first))
      const { port, shared } = first as { readonly port: MessagePort; readonly shared: SharedMemoryTransport.SharedBuffers }
      const checks = yield* Effect.gen(function*() {
        const client = yield* Channel.open({ role: "client", interfaceType: TYPE })
        return yield* Effect.forEach(Array.from({ length: 300 }, (_, i) => i), (i) =>
          Effect.map(client.request(request(i)), (reply) => isComplement(i, reply)), { concurrency: 16 })
      }).pipe(Effect.scoped, Effect.provide(SharedMemoryTransport.layerGuest(port, shared)))
      assert.isTrue(checks.every(Boolean), "every reply is the complement of its request")
      host.worker.postMessage("stop")
      const report = (yield* host.message(1)) as { readonly ok: boolean; readonly error?: string; readonly counts?: Record<string, number> }
      assert.isTrue(report.ok, report.error)
      assert.deepStrictEqual(report.counts, {
        packets: 300,
        remoteChannels: 0,
        openChannels: 0,
        outstandingTransactions: 0,
        outstandingPackets: 0
      })
      assert.strictEqual(yield* host.exitCode, 0)
    }), 60_000)

  it.scopedLive("an open channel keeps an otherwise idle worker alive until its slow reply comes", () =>
    Effect.gen(function*() {
      // The worker has nothing else to do (no timer, no listener of its own) while its requests wait.
      const link = yield* guestInWorker({
        requests: 3,
        handler: (packet) => Effect.as(Effect.sleep("300 millis"), complement(packet.payload))
      })
      yield* closedCleanly(link)
    }).pipe(withBus), 60_000)

  it.scopedLive("an idle transport with no channel open does not hold the worker: it exits while its program still waits", () =>
    Effect.gen(function*() {
      const link = yield* guestInWorker({ requests: 5, idleAfterClose: true })
      assert.strictEqual(yield* link.worker.exitCode, 0)
      assert.strictEqual(yield* link.server.closed, "PeerClose")
      assert.strictEqual((yield* busStats).openChannels, 0)
    }).pipe(withBus), 60_000)
})

// A host thread for test/SharedMemoryWait.test.ts: an in-memory bus, a connection served with
// `serveGuest(…, wait)` and a server channel that answers each request with its bitwise complement.
// Posts `{ port, shared }` (the guest end) to the parent; on "stop" closes everything and posts the
// bus's counts, which must all be back to zero.
import { Deferred, Effect, Fiber } from "effect"
import { parentPort, workerData } from "node:worker_threads"
import * as Channel from "../../src/Channel.js"
import * as InMemoryTransport from "../../src/InMemoryTransport.js"
import * as SharedMemoryTransport from "../../src/SharedMemoryTransport.js"
import { INSTANCE, TYPE } from "./channels.js"

const data = workerData as { readonly wait?: SharedMemoryTransport.WaitOptions }

const program = Effect.gen(function*() {
  const stop = yield* Deferred.make<void>()
  parentPort!.once("message", () => Deferred.unsafeDone(stop, Effect.void))
  const counts = yield* Effect.scoped(Effect.gen(function*() {
    const connection = yield* SharedMemoryTransport.makeConnection({ maxChannels: 4 })
    const guestServer = yield* SharedMemoryTransport.serveGuest(connection.hostPort, connection.shared, data.wait)
    const opening = yield* Effect.forkScoped(Channel.open({ role: "server", interfaceType: TYPE, interfaceInstance: INSTANCE, openTimeoutMillis: 40_000 }))
    parentPort!.postMessage({ port: connection.guestPort, shared: connection.shared }, [connection.guestPort])
    const server = yield* Fiber.join(opening)
    yield* Effect.forkScoped(server.serve((packet) => Effect.sync(() => packet.payload.map((byte) => byte ^ 0xff))))
    yield* Deferred.await(stop)
    return { packets: (yield* server.stats).packetsReceived, guestServer }
  }))
  const stats = yield* (yield* InMemoryTransport.Control).stats
  return {
    packets: counts.packets,
    remoteChannels: yield* counts.guestServer.openChannels,
    openChannels: stats.openChannels,
    outstandingTransactions: stats.outstandingTransactions,
    outstandingPackets: stats.outstandingPackets
  }
}).pipe(Effect.provide(InMemoryTransport.layer))

Effect.runPromise(program).then(
  (counts) => parentPort!.postMessage({ ok: true, counts }),
  (error: unknown) => parentPort!.postMessage({ ok: false, error: String(error) })
)

/**
 * A channel whose guest side runs in a worker thread (`worker-thread-guest.ts`). The main thread
 * keeps the in-memory bus and the server; the worker opens a client through
 * `SharedMemoryTransport`. Packets never cross the MessagePort: both threads use the same rings in
 * shared memory and ring doorbells with `Atomics`; only open and close messages use the port.
 *
 * Run the compiled JavaScript (`node worker-thread.js`): the worker is started from
 * `worker-thread-guest.js` next to this file.
 */
import { Deferred, Effect, Exit, Fiber } from "effect"
import { Worker } from "node:worker_threads"
import { Channel, InMemoryTransport, SharedMemoryTransport } from "effect-vmbus"
import { TYPE, INSTANCE, type GuestReport } from "./worker-thread-guest.js"

const program = Effect.gen(function*() {
  const connection = yield* SharedMemoryTransport.makeConnection()
  yield* SharedMemoryTransport.serveGuest(connection.hostPort, connection.shared)
  // The server's open waits for the worker's client: start it before the worker.
  const opening = yield* Effect.forkScoped(Channel.open({ role: "server", interfaceType: TYPE, interfaceInstance: INSTANCE }))

  const report = yield* Deferred.make<GuestReport, Error>()
  const worker = new Worker(new URL("./worker-thread-guest.js", import.meta.url), {
    workerData: { port: connection.guestPort, shared: connection.shared },
    transferList: [connection.guestPort] // the port moves to the worker; `shared` is shared, not copied
  })
  worker.on("message", (message: GuestReport) => Deferred.unsafeDone(report, Exit.succeed(message)))
  worker.on("error", (error) => Deferred.unsafeDone(report, Exit.fail(error)))
  yield* Effect.addFinalizer(() => Effect.promise(() => worker.terminate()))

  const server = yield* Fiber.join(opening)
  yield* Effect.forkScoped(server.serve((packet) => Effect.succeed(packet.payload.map((byte) => byte + 1))))
  const fromGuest = yield* Deferred.await(report).pipe(Effect.timeout("20 seconds"))
  // The worker closed its channel when its program ended.
  const closeReason = yield* server.closed
  return { ...fromGuest, closeReason }
}).pipe(Effect.scoped, Effect.provide(InMemoryTransport.layer))

const result = await Effect.runPromise(program)
if (!result.ok) throw new Error(`the worker failed: ${result.error}`)
console.log(`worker thread: ${result.requests} requests answered, first reply ${result.firstReply.join(",")}`)
console.log(`server saw the client close: ${result.closeReason}`)

// Cross-thread channels: the client in a worker thread through SharedMemoryTransport against the same
// client in the host's thread through InMemoryTransport, measured in one run. The server echoes.
import { Deferred, Effect, Exit } from "effect"
import { Worker } from "node:worker_threads"
import * as Channel from "../src/Channel.js"
import * as InMemoryTransport from "../src/InMemoryTransport.js"
import * as SharedMemoryTransport from "../src/SharedMemoryTransport.js"
import { INSTANCE, measure, type Row, TYPE } from "./sharedCommon.js"

const serve = (instance: string) =>
  Effect.forkScoped(
    Effect.gen(function*() {
      const server = yield* Channel.open({ role: "server", interfaceType: TYPE, interfaceInstance: instance, transactionQuota: 256 })
      yield* server.serve((packet) => Effect.succeed(packet.payload))
    }).pipe(Effect.scoped)
  )

const inThread = Effect.gen(function*() {
  yield* serve(INSTANCE)
  const client = yield* Channel.open({
    role: "client",
    interfaceType: TYPE,
    interfaceInstance: INSTANCE,
    outgoingRingPages: 64,
    incomingRingPages: 64
  })
  return yield* measure(client)
}).pipe(Effect.scoped)

const acrossThreads = Effect.gen(function*() {
  const connection = yield* SharedMemoryTransport.makeConnection()
  yield* SharedMemoryTransport.serveGuest(connection.hostPort, connection.shared)
  yield* serve(INSTANCE)
  const rows = yield* Deferred.make<ReadonlyArray<Row>, Error>()
  const worker = new Worker(new URL("./tsWorker.mjs", import.meta.url), {
    workerData: { entry: new URL("./sharedGuest.ts", import.meta.url).href, port: connection.guestPort, shared: connection.shared },
    transferList: [connection.guestPort]
  })
  worker.on("message", (message: { readonly ok: boolean; readonly rows?: ReadonlyArray<Row>; readonly error?: string }) =>
    Deferred.unsafeDone(rows, message.ok ? Exit.succeed(message.rows ?? []) : Exit.fail(new Error(message.error)))
  )
  worker.on("error", (error) => Deferred.unsafeDone(rows, Exit.fail(error)))
  yield* Effect.addFinalizer(() => Effect.promise(() => worker.terminate()))
  return yield* Deferred.await(rows)
}).pipe(Effect.scoped)

export async function run(): Promise<void> {
  const [local, remote] = await Effect.runPromise(
    Effect.all([inThread, acrossThreads]).pipe(Effect.provide(InMemoryTransport.layer))
  )
  const fmt = (n: number | undefined, digits = 0) => (n === undefined ? "" : n.toLocaleString("en-US", { maximumFractionDigits: digits }))
  console.log("client in a worker thread (SharedMemoryTransport) vs the same client in the host thread (InMemoryTransport)")
  console.table(local.map((row, i) => ({
    row: row.row,
    "in-thread /s": fmt(row.perSecond),
    "in-thread p50 µs": fmt(row.p50, 1),
    "worker /s": fmt(remote[i]!.perSecond),
    "worker p50 µs": fmt(remote[i]!.p50, 1),
    "worker p99 µs": fmt(remote[i]!.p99, 1),
    "worker / in-thread": (remote[i]!.perSecond / row.perSecond).toFixed(2)
  })))
}

if (import.meta.url === `file://${process.argv[1]}`) await run()

// A guest thread for test/SharedMemoryTransport*.test.ts: opens a client channel through the
// shared-memory guest transport, sends `requests` requests, checks every reply is the bitwise
// complement of its request, and posts the checks back. Closing the layer closes the port.
// `wait` is passed to `layerGuest`; with `idleAfterClose` the worker closes its channel, posts the
// checks and then waits (for nothing) inside the transport's scope (the thread should exit: nothing holds it).
import { Effect } from "effect"
import { parentPort, workerData } from "node:worker_threads"
import type { MessagePort } from "node:worker_threads"
import * as Channel from "../../src/Channel.js"
import * as SharedMemoryTransport from "../../src/SharedMemoryTransport.js"
import { TYPE } from "./channels.js"

interface Data {
  readonly port: MessagePort
  readonly shared: SharedMemoryTransport.SharedBuffers
  readonly requests: number
  readonly wait?: SharedMemoryTransport.WaitOptions
  readonly idleAfterClose?: boolean
}

const data = workerData as Data

const exchange = Effect.gen(function*() {
  const client = yield* Channel.open({ role: "client", interfaceType: TYPE, outgoingRingPages: 4, incomingRingPages: 4 })
  return yield* Effect.forEach(
    Array.from({ length: data.requests }, (_, i) => i),
    (i) =>
      Effect.map(client.request(Uint8Array.from({ length: 8 + 8 * (i % 16) }, (_, j) => (i + j) & 0xff)), (reply) => {
        if (reply.length !== 8 + 8 * (i % 16)) return 0
        for (let j = 0; j < reply.length; j++) if (reply[j] !== ((i + j) & 0xff ^ 0xff)) return 0
        return 1
      }),
    { concurrency: 16 }
  )
}).pipe(Effect.scoped)

const program = Effect.gen(function*() {
  const checks = yield* exchange
  if (data.idleAfterClose !== true) return checks
  parentPort!.postMessage({ ok: true, checks })
  // Not Effect.never: it holds the thread with a timer. This resumer is never called and holds nothing.
  return yield* Effect.async<ReadonlyArray<number>>(() => {})
}).pipe(Effect.provide(SharedMemoryTransport.layerGuest(data.port, data.shared, data.wait)))

Effect.runPromise(program).then(
  (checks) => parentPort!.postMessage({ ok: true, checks }),
  (error: unknown) => parentPort!.postMessage({ ok: false, error: String(error) })
)

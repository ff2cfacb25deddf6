// A guest thread for test/SharedMemoryTransport.test.ts: opens a client channel through the
// shared-memory guest transport, sends `requests` requests, checks every reply is the bitwise
// complement of its request, and posts the checks back. Closing the layer closes the port.
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
}

const data = workerData as Data

const program = Effect.gen(function*() {
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
}).pipe(
  Effect.scoped,
  Effect.provide(SharedMemoryTransport.layerGuest(data.port, data.shared))
)

Effect.runPromise(program).then(
  (checks) => parentPort!.postMessage({ ok: true, checks }),
  (error: unknown) => parentPort!.postMessage({ ok: false, error: String(error) })
)

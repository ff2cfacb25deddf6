// The guest thread of bench/sharedMemory.ts: the same measurements as the in-thread rows, through
// SharedMemoryTransport.
import { Effect } from "effect"
import type { MessagePort } from "node:worker_threads"
import { parentPort, workerData } from "node:worker_threads"
import * as Channel from "../src/Channel.js"
import * as SharedMemoryTransport from "../src/SharedMemoryTransport.js"
import { measure, TYPE } from "./sharedCommon.js"

const data = workerData as { readonly port: MessagePort; readonly shared: SharedMemoryTransport.SharedBuffers }

const program = Effect.gen(function*() {
  const client = yield* Channel.open({ role: "client", interfaceType: TYPE, outgoingRingPages: 64, incomingRingPages: 64 })
  return yield* measure(client)
}).pipe(Effect.scoped, Effect.provide(SharedMemoryTransport.layerGuest(data.port, data.shared)))

Effect.runPromise(program).then(
  (rows) => parentPort!.postMessage({ ok: true, rows }),
  (error: unknown) => parentPort!.postMessage({ ok: false, error: String(error) })
)

/**
 * The worker thread of `worker-thread.ts`: a client channel through `SharedMemoryTransport`, opened
 * and used exactly as over any other transport.
 */
import { Effect } from "effect"
import { isMainThread, parentPort, workerData } from "node:worker_threads"
import type { MessagePort } from "node:worker_threads"
import { Channel, SharedMemoryTransport } from "effect-vmbus"

export const TYPE = "6d1e3a57-8b0c-4f2e-9a41-3c5b7d9e1f20"
export const INSTANCE = "b4f0c2d8-1a3e-4c5b-8d7f-9e0a2b4c6d8e"

export type GuestReport =
  | { readonly ok: true; readonly requests: number; readonly firstReply: ReadonlyArray<number> }
  | { readonly ok: false; readonly error: string }

const guest = (port: MessagePort, shared: SharedMemoryTransport.SharedBuffers) =>
  Effect.gen(function*() {
    const client = yield* Channel.open({ role: "client", interfaceType: TYPE })
    const replies = yield* Effect.forEach(
      Array.from({ length: 100 }, (_, i) => Uint8Array.of(i, i + 1, i + 2)),
      (payload) => client.request(payload, { timeout: "5 seconds" }),
      { concurrency: 8 }
    )
    return { ok: true, requests: replies.length, firstReply: Array.from(replies[0]!.subarray(0, 3)) } as const
  }).pipe(Effect.scoped, Effect.provide(SharedMemoryTransport.layerGuest(port, shared)))

// Imported by the main thread for the constants above; runs only as a worker.
if (!isMainThread) {
  const data = workerData as { readonly port: MessagePort; readonly shared: SharedMemoryTransport.SharedBuffers }
  Effect.runPromise(guest(data.port, data.shared)).then(
    (report: GuestReport) => parentPort!.postMessage(report),
    (error: unknown) => parentPort!.postMessage({ ok: false, error: String(error) } satisfies GuestReport)
  )
}

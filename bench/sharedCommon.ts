// What both threads of bench/sharedMemory.ts share: the channel rows (measured by whichever thread
// holds the client) and the messages between the host thread and the worker.
import * as Effect from "effect/Effect"
import type * as Channel from "../src/Channel.js"
import { cpuSeconds, latencyRecorder, type Sample } from "./harness.js"

export const TYPE = "f8615163-df3e-46c5-913f-f2d2f965ed0e"
export const WORKER_INSTANCE = "3c9d1a2e-5b7f-4e21-9a0c-6d8e4f1b2a30"
export const IN_THREAD_INSTANCE = "3c9d1a2e-5b7f-4e21-9a0c-6d8e4f1b2a31"
/** The worker's second client: over a connection where both sides spin `SPIN_MICROS` before parking. */
export const SPIN_INSTANCE = "3c9d1a2e-5b7f-4e21-9a0c-6d8e4f1b2a32"
export const SPIN_MICROS = 50
export const PAYLOAD = 64
export const BATCH = 32
export const CONCURRENCY = 32

export const CHANNEL_ROWS = ["request/serve, sequential", `request/serve, ${CONCURRENCY} in flight`, "send (one-way)", `sendBatch(${BATCH}) (one-way)`] as const
export type ChannelRow = (typeof CHANNEL_ROWS)[number]
/** The rows also measured with spinning on (`SharedMemoryTransport.WaitOptions.spinMicros`). */
export const SPIN_ROWS: ReadonlyArray<ChannelRow> = ["request/serve, sequential", `sendBatch(${BATCH}) (one-way)`]

/** Host → worker: measure one row, or stop. */
export type Command =
  | { readonly type: "measure"; readonly row: ChannelRow; readonly millis: number; readonly spin: boolean }
  | { readonly type: "close" }
/** Worker → host. */
export type Reply = { readonly type: "sample"; readonly sample: Sample } | { readonly type: "error"; readonly message: string }
/** Host → worker on the echo port (the MessagePort baselines). */
export type EchoMessage =
  | { readonly k: "echo"; readonly p: Uint8Array }
  | { readonly k: "one"; readonly p: Uint8Array }
  | { readonly k: "batch"; readonly p: ReadonlyArray<Uint8Array> }
  | { readonly k: "sync" }

const STEP = 256

/** The channel rows, measured on `client` (the server echoes). */
export const measureRow = (client: Channel.OpenedChannel, row: ChannelRow, millis: number): Effect.Effect<Sample, Channel.RequestError> =>
  Effect.gen(function*() {
    const payload = new Uint8Array(PAYLOAD).fill(7)
    const batch = Array.from({ length: BATCH }, () => payload)
    const cpu0 = cpuSeconds()
    const start = performance.now()
    const deadline = start + millis
    let ops = 0
    const done = (latencies?: Float64Array): Sample => ({ ops, seconds: (performance.now() - start) / 1000, cpuSeconds: cpuSeconds() - cpu0, latencies })
    switch (row) {
      case "request/serve, sequential": {
        const latencies = latencyRecorder()
        while (performance.now() < deadline) {
          const t0 = performance.now()
          yield* client.request(payload)
          latencies.record((performance.now() - t0) * 1000)
          ops++
        }
        return done(latencies.take())
      }
      case `request/serve, ${CONCURRENCY} in flight`: {
        const worker = Effect.gen(function*() {
          while (performance.now() < deadline) {
            yield* client.request(payload)
            ops++
          }
        })
        yield* Effect.all(Array.from({ length: CONCURRENCY }, () => worker), { concurrency: "unbounded", discard: true })
        return done()
      }
      case "send (one-way)":
      case `sendBatch(${BATCH}) (one-way)`: {
        while (performance.now() < deadline) {
          if (row === "send (one-way)") for (let i = 0; i < STEP; i++) yield* client.send(payload)
          else for (let i = 0; i < STEP; i += BATCH) yield* client.sendBatch(batch)
          ops += STEP
        }
        yield* client.request(payload) // in order: done when every packet was handled
        return done()
      }
    }
  })

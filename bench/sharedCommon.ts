// Measurements shared by both sides of bench/sharedMemory.ts.
import { Effect } from "effect"
import type * as Channel from "../src/Channel.js"

export const TYPE = "f8615163-df3e-46c5-913f-f2d2f965ed0e"
export const INSTANCE = "3c9d1a2e-5b7f-4e21-9a0c-6d8e4f1b2a30"

export interface Row {
  readonly row: string
  readonly perSecond: number
  readonly p50: number | undefined
  readonly p99: number | undefined
}

const SEQUENTIAL = 3000
const CONCURRENT = 20_000
const ONE_WAY = 50_000

/** Round trips (sequential, with latency percentiles; then 32 in flight) and one-way sends. */
export const measure = (client: Channel.OpenedChannel): Effect.Effect<ReadonlyArray<Row>, Channel.RequestError> =>
  Effect.gen(function*() {
    const payload = new Uint8Array(64)
    for (let i = 0; i < 500; i++) yield* client.request(payload)
    const latencies = new Float64Array(SEQUENTIAL)
    let start = performance.now()
    for (let i = 0; i < SEQUENTIAL; i++) {
      const t = performance.now()
      yield* client.request(payload)
      latencies[i] = (performance.now() - t) * 1000
    }
    const sequential = SEQUENTIAL / ((performance.now() - start) / 1000)
    latencies.sort()
    start = performance.now()
    yield* Effect.forEach(Array.from({ length: CONCURRENT }), () => client.request(payload), {
      concurrency: 32,
      discard: true
    })
    const concurrent = CONCURRENT / ((performance.now() - start) / 1000)
    start = performance.now()
    for (let i = 0; i < ONE_WAY; i++) yield* client.send(payload)
    yield* client.request(payload) // in order: done when every send was handled
    const oneWay = ONE_WAY / ((performance.now() - start) / 1000)
    return [
      { row: "request/serve, sequential, 64 B", perSecond: sequential, p50: latencies[SEQUENTIAL / 2]!, p99: latencies[Math.floor(SEQUENTIAL * 0.99)]! },
      { row: "request/serve, concurrency 32, 64 B", perSecond: concurrent, p50: undefined, p99: undefined },
      { row: "send 64 B (one-way)", perSecond: oneWay, p50: undefined, p99: undefined }
    ]
  })

/**
 * Channel benchmark: what the Effect layer costs per packet over `InMemoryTransport`, against the raw
 * ring (baseline) measured in the same run, rows interleaved (bench/harness.ts).
 *
 * Rows (resources opened once, before the timed part):
 * - the raw ring: 32 packets written with `Ring.OutgoingRing`, committed, read with
 *   `Ring.IncomingRing`, committed, on a ring of the channel's size (64 pages) — the baseline;
 * - `request` round trips, sequential and with 32 in flight, server on `serve` echoing 64 B;
 *   per-request latency from `performance.now()` inside one Effect program;
 * - one-way `send` and `sendBatch(32)` of 64 B and 1500 B, the receiver on: the `packets` stream
 *   (per packet, completing each), `serve` with an `Effect.gen` handler, and `serve` with a handler
 *   that returns an `Exit` directly (`Effect.void`: the fast path issue 9 asks for), and the
 *   "chunk consumer" (`Stream.runForEachChunk` over `packets`: one pull per ring batch).
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import type * as Layer from "effect/Layer"
import * as Stream from "effect/Stream"
import * as Channel from "../src/Channel.js"
import type * as IncomingPacket from "../src/IncomingPacket.js"
import * as InMemoryTransport from "../src/InMemoryTransport.js"
import * as Ring from "../src/Ring.js"
import { cpuSeconds, latencyRecorder, type Row, type Sample, type Subject, timeBoxSync } from "./harness.js"

const TYPE = "f8615163-df3e-46c5-913f-f2d2f965ed0e"
const RING_PAGES = 64
const MAX_PACKET_SIZE = 4096
const QUOTA = 4096
const BATCH = 32
const CONCURRENCY = 32
const SIZES = [64, 1500] as const
const STEP = 256 // packets between clock reads

let instanceCounter = 0
const nextInstance = (): string => {
  instanceCounter++
  return `9e5e1a6f-2c34-4b8e-9d2a-${instanceCounter.toString(16).padStart(12, "0")}`
}

const openPair = Effect.gen(function*() {
  const instance = nextInstance()
  const common = { interfaceType: TYPE, interfaceInstance: instance, maxPacketSize: MAX_PACKET_SIZE, transactionQuota: QUOTA }
  const [server, client] = yield* Effect.all([
    Channel.open({ role: "server", ...common }),
    Channel.open({ role: "client", ...common, outgoingRingPages: RING_PAGES, incomingRingPages: RING_PAGES })
  ], { concurrency: 2 })
  return { server, client }
})

// ---------------------------------------------------------------------------------------------
// Raw ring (no Effect): the baseline
// ---------------------------------------------------------------------------------------------

const rawRing = (size: number): ((millis: number) => Sample) => {
  const region = Ring.allocate(RING_PAGES * Ring.PAGE_SIZE)
  if (!(region instanceof Uint8Array)) throw new Error(`allocate: ${region.reason}`)
  const out = Ring.OutgoingRing.attach(region)
  const incoming = Ring.IncomingRing.attach(region, { maxPacketLength: 16 + MAX_PACKET_SIZE + 8 })
  if (!(out instanceof Ring.OutgoingRing) || !(incoming instanceof Ring.IncomingRing)) throw new Error("attach failed")
  const payload = new Uint8Array(size).fill(0xa5)
  const packet = { _tag: "InBand", transactionId: 0n, completionRequested: false, payload } as const
  let sink = 0
  const step = () => {
    for (let b = 0; b < STEP / BATCH; b++) {
      for (let i = 0; i < BATCH; i++) {
        const r = out.writeValidated(packet)
        if (r !== undefined) throw new Error(`write: ${r._tag}`)
      }
      out.commit()
      for (let i = 0; i < BATCH; i++) {
        const p = incoming.read()
        if (p === undefined || "reason" in p || !("payload" in p)) throw new Error("read failed")
        sink += p.payload.length
      }
      incoming.commit()
    }
    return STEP
  }
  return (millis) => {
    const sample = timeBoxSync(millis, step)
    if (sink === 0) throw new Error("nothing read")
    return sample
  }
}

// ---------------------------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------------------------

const roundTrips = (client: Channel.OpenedChannel, concurrency: number) => (millis: number) =>
  Effect.gen(function*() {
    const payload = new Uint8Array(64).fill(1)
    const latencies = latencyRecorder()
    let ops = 0
    const cpu0 = cpuSeconds()
    const start = performance.now()
    const deadline = start + millis
    const worker = Effect.gen(function*() {
      while (performance.now() < deadline) {
        const t0 = performance.now()
        yield* client.request(payload)
        latencies.record((performance.now() - t0) * 1000)
        ops++
      }
    })
    if (concurrency === 1) yield* worker
    else yield* Effect.all(Array.from({ length: concurrency }, () => worker), { concurrency: "unbounded", discard: true })
    return { ops, seconds: (performance.now() - start) / 1000, cpuSeconds: cpuSeconds() - cpu0, latencies: latencies.take() } satisfies Sample
  })

// ---------------------------------------------------------------------------------------------
// One-way packets
// ---------------------------------------------------------------------------------------------

type Mode = "send" | "sendBatch"
type Consumer = "packets" | "packets, chunk consumer" | "serve, Effect.gen handler" | "serve, Exit handler"

/** Counts received packets; `until(n)` waits until n have been received (and completed). */
const makeCounter = () =>
  Effect.map(Deferred.make<void>(), (initial) => {
    let received = 0
    let target = Infinity
    let reached = initial
    const hit = () => {
      received++
      if (received >= target) Deferred.unsafeDone(reached, Effect.void)
    }
    const until = (n: number) =>
      Effect.suspend(() => {
        if (received >= n) return Effect.void
        target = n
        return Deferred.await(reached)
      })
    const reset = Effect.flatMap(Deferred.make<void>(), (d) =>
      Effect.sync(() => {
        received = 0
        target = Infinity
        reached = d
      }))
    return { hit, until, reset }
  })

const receiverOf = (server: Channel.OpenedChannel, consumer: Consumer, hit: () => void) => {
  switch (consumer) {
    case "packets":
      return Stream.runForEach(server.packets, (p: IncomingPacket.IncomingPacket) => Effect.zipRight(Effect.sync(hit), p.complete()))
    case "packets, chunk consumer":
      // One pull per batch; the consumer leaves the packets to the auto-completion of the next pull
      // (no completion requested on these one-way packets: the empty completion is free).
      return Stream.runForEachChunk(server.packets, (chunk) =>
        Effect.sync(() => {
          for (let i = 0; i < chunk.length; i++) hit()
        }))
    case "serve, Effect.gen handler":
      return server.serve(() =>
        Effect.gen(function*() {
          hit()
        })
      )
    case "serve, Exit handler":
      // The handler's work is synchronous; it returns an already-completed Effect.
      return server.serve(() => {
        hit()
        return Effect.void
      })
  }
}

const oneWay = (size: number, mode: Mode, consumer: Consumer) =>
  Effect.gen(function*() {
    const { client, server } = yield* openPair
    const counter = yield* makeCounter()
    yield* Effect.forkScoped(Effect.orDie(receiverOf(server, consumer, counter.hit)))
    const payload = new Uint8Array(size).fill(0x5a)
    const batch = Array.from({ length: BATCH }, () => payload)
    return (millis: number) =>
      Effect.gen(function*() {
        yield* counter.reset
        let sent = 0
        const cpu0 = cpuSeconds()
        const start = performance.now()
        const deadline = start + millis
        while (performance.now() < deadline) {
          if (mode === "send") {
            for (let i = 0; i < STEP; i++) yield* client.send(payload)
          } else {
            for (let i = 0; i < STEP; i += BATCH) yield* client.sendBatch(batch)
          }
          sent += STEP
        }
        yield* counter.until(sent)
        return { ops: sent, seconds: (performance.now() - start) / 1000, cpuSeconds: cpuSeconds() - cpu0 } satisfies Sample
      })
  })

// ---------------------------------------------------------------------------------------------
// The subject
// ---------------------------------------------------------------------------------------------

const rows = Effect.gen(function*() {
  const out: Array<Row> = []
  for (const size of SIZES) {
    const raw = rawRing(size)
    out.push({ name: `raw ring ${size} B`, unit: "packet", bytesPerOp: size, baseline: true, measure: (ms) => Effect.sync(() => raw(ms)) })
  }
  const { client, server } = yield* openPair
  yield* Effect.forkScoped(server.serve((p) => Effect.succeed(p.payload)))
  out.push({ name: "request/serve, sequential, 64 B", unit: "round trip", bytesPerOp: 64, measure: roundTrips(client, 1) })
  out.push({ name: `request/serve, ${CONCURRENCY} in flight, 64 B`, unit: "round trip", bytesPerOp: 64, measure: roundTrips(client, CONCURRENCY) })
  for (const size of SIZES) {
    for (const mode of ["send", "sendBatch"] as const) {
      const how = mode === "send" ? "send" : `sendBatch(${BATCH})`
      const compareTo = `raw ring ${size} B`
      for (const consumer of ["packets", "packets, chunk consumer", "serve, Effect.gen handler", "serve, Exit handler"] as const) {
        const measure = yield* oneWay(size, mode, consumer)
        out.push({ name: `${how} ${size} B → ${consumer}`, unit: "packet", bytesPerOp: size, compareTo, measure })
      }
    }
  }
  return out
})

export const subject: Subject<Layer.Layer.Success<typeof InMemoryTransport.layer>> = {
  name: "channel",
  title: "the Effect channel layer over InMemoryTransport",
  description: [
    `Rings ${RING_PAGES}+${RING_PAGES} pages, maxPacketSize ${MAX_PACKET_SIZE}, quota ${QUOTA}; one-way rows count a packet when the receiver has it`,
    "(and completed it); round-trip MB/s counts the request payload. Baseline: the raw ring (write 32, commit, read 32, commit), same run."
  ],
  rows,
  layer: InMemoryTransport.layer
}

/**
 * Channel benchmark: what the Effect layer costs per packet over `InMemoryTransport`, next to the raw
 * ring figure measured in the same run.
 *
 * Rows (each time-boxed to ~1 s after a short warm-up, resources built outside the timed part):
 * - `request` round trips, sequential and with 32 requests in flight, server on `serve` (echoes 64 B);
 *   per-request latency from `performance.now()` inside one Effect program (no `runPromise` per request);
 * - one-way `send` and `sendBatch` (32 per batch) for 64 B and 1500 B payloads, the receiver on the
 *   `packets` stream or on `serve` (both are measured; the table shows both);
 * - the raw ring: 32 packets written with `Ring.OutgoingRing`, committed, read with `Ring.IncomingRing`,
 *   committed, on a ring of the channel's size (64 pages).
 *
 * Run: `npx tsx bench/channel.ts` (or via `bench/run.ts`, which calls `run()`). `CPU µs/op` is process
 * CPU time per packet or round trip: more stable than wall-clock rates on a shared machine.
 *
 * Results: see README.md ("Benchmarks"), measured with `npm run bench`.
 */
import * as os from "node:os"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Stream from "effect/Stream"
import * as Channel from "../src/Channel.js"
import type * as IncomingPacket from "../src/IncomingPacket.js"
import * as InMemoryTransport from "../src/InMemoryTransport.js"
import * as Ring from "../src/Ring.js"

const TYPE = "f8615163-df3e-46c5-913f-f2d2f965ed0e"
const RING_PAGES = 64
const MAX_PACKET_SIZE = 4096
const QUOTA = 4096
const BATCH = 32
const CONCURRENCY = 32
const ROW_MILLIS = 1000
const WARMUP_MILLIS = 200
const SIZES = [64, 1500] as const

interface Row {
  readonly row: string
  readonly "pkts or RTs /s": string
  readonly "MB/s": string
  readonly "p50 µs": string
  readonly "p99 µs": string
  readonly "ratio to raw ring": string
  readonly "CPU µs/op": string
}

interface Measured {
  readonly name: string
  readonly count: number
  readonly seconds: number
  /** Process CPU time (user + system) spent in the timed part, in seconds: robust to other load. */
  readonly cpuSeconds: number
  readonly payloadBytes: number
  readonly latencies?: Float64Array | undefined
  readonly rawKey?: number | undefined
  /** For one-way rows: the (size, mode) pair the two consumers are compared on. */
  readonly group?: string | undefined
  readonly consumer?: Consumer | undefined
}

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

const cpuNow = (): number => {
  const { system, user } = process.cpuUsage()
  return (user + system) / 1e6
}

const percentile = (sorted: Float64Array, p: number): number =>
  sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!

// ---------------------------------------------------------------------------------------------
// Raw ring (no Effect)
// ---------------------------------------------------------------------------------------------

const rawRing = (size: number, millis: number): Measured => {
  const region = Ring.allocate(RING_PAGES * Ring.PAGE_SIZE)
  if (!(region instanceof Uint8Array)) throw new Error(`allocate: ${region.reason}`)
  const out = Ring.OutgoingRing.attach(region)
  const incoming = Ring.IncomingRing.attach(region, { maxPacketLength: 16 + MAX_PACKET_SIZE + 8 })
  if (!(out instanceof Ring.OutgoingRing) || !(incoming instanceof Ring.IncomingRing)) throw new Error("attach failed")
  const payload = new Uint8Array(size).fill(0xa5)
  const packet = { _tag: "InBand", transactionId: 0n, completionRequested: false, payload } as const
  let count = 0
  let sink = 0
  const cpu0 = cpuNow()
  const start = performance.now()
  const deadline = start + millis
  let now = start
  while (now < deadline) {
    for (let b = 0; b < 64; b++) {
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
      count += BATCH
    }
    now = performance.now()
  }
  if (sink === 0) throw new Error("nothing read")
  return { name: `raw ring write+read, batch ${BATCH}, ${size} B`, count, seconds: (now - start) / 1000, cpuSeconds: cpuNow() - cpu0, payloadBytes: size, rawKey: size }
}

// ---------------------------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------------------------

const roundTrips = (client: Channel.OpenedChannel, concurrency: number, millis: number, label: string) =>
  Effect.gen(function*() {
    const payload = new Uint8Array(64).fill(1)
    let latencies = new Float64Array(1 << 20)
    let count = 0
    const record = (value: number) => {
      if (count === latencies.length) {
        const bigger = new Float64Array(latencies.length * 2)
        bigger.set(latencies)
        latencies = bigger
      }
      latencies[count++] = value
    }
    const cpu0 = cpuNow()
    const start = performance.now()
    const deadline = start + millis
    const worker = Effect.gen(function*() {
      while (performance.now() < deadline) {
        const t0 = performance.now()
        yield* client.request(payload)
        record(performance.now() - t0)
      }
    })
    if (concurrency === 1) yield* worker
    else yield* Effect.all(Array.from({ length: concurrency }, () => worker), { concurrency: "unbounded", discard: true })
    const seconds = (performance.now() - start) / 1000
    const cpuSeconds = cpuNow() - cpu0
    const sorted = latencies.slice(0, count).sort()
    return { name: label, count, seconds, cpuSeconds, payloadBytes: payload.length, latencies: sorted } satisfies Measured
  })

// ---------------------------------------------------------------------------------------------
// One-way packets
// ---------------------------------------------------------------------------------------------

type Consumer = "packets" | "serve"
type Mode = "send" | "sendBatch"

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
    return { hit, until, reset, get received() { return received } }
  })

const oneWay = (size: number, mode: Mode, consumer: Consumer, millis: number) =>
  Effect.scoped(Effect.gen(function*() {
    const { client, server } = yield* openPair
    const counter = yield* makeCounter()
    const receiver = consumer === "serve"
      ? server.serve(() => Effect.sync(counter.hit))
      : Stream.runForEach(server.packets, (p: IncomingPacket.IncomingPacket) =>
        Effect.zipRight(Effect.sync(counter.hit), p.complete())
      )
    const fiber = yield* Effect.fork(Effect.orDie(receiver))
    const payload = new Uint8Array(size).fill(0x5a)
    const batch = Array.from({ length: BATCH }, () => payload)
    const chunk = 256 // packets between clock reads

    const sendFor = (ms: number) =>
      Effect.gen(function*() {
        let sent = 0
        const cpu0 = cpuNow()
        const start = performance.now()
        const deadline = start + ms
        while (performance.now() < deadline) {
          if (mode === "send") {
            for (let i = 0; i < chunk; i++) yield* client.send(payload)
          } else {
            for (let i = 0; i < chunk; i += BATCH) yield* client.sendBatch(batch)
          }
          sent += chunk
        }
        yield* counter.until(sent)
        return { sent, seconds: (performance.now() - start) / 1000, cpuSeconds: cpuNow() - cpu0 }
      })

    yield* sendFor(WARMUP_MILLIS)
    yield* counter.reset
    const { cpuSeconds, seconds, sent } = yield* sendFor(millis)
    yield* Fiber.interrupt(fiber)
    const how = mode === "send" ? "send" : `sendBatch(${BATCH})`
    return { name: `${how} ${size} B → ${consumer}`, count: sent, seconds, cpuSeconds, payloadBytes: size, rawKey: size, group: `${how} ${size} B`, consumer } satisfies Measured
  }))

// ---------------------------------------------------------------------------------------------
// Program
// ---------------------------------------------------------------------------------------------

const program = Effect.gen(function*() {
  const results: Array<Measured> = []

  // Round trips: one pair, the server echoes.
  yield* Effect.scoped(Effect.gen(function*() {
    const { client, server } = yield* openPair
    const fiber = yield* Effect.fork(server.serve((p) => Effect.succeed(p.payload)))
    yield* roundTrips(client, 1, WARMUP_MILLIS, "warm-up")
    results.push(yield* roundTrips(client, 1, ROW_MILLIS, "request/serve, sequential, 64 B"))
    results.push(yield* roundTrips(client, CONCURRENCY, ROW_MILLIS, `request/serve, concurrency ${CONCURRENCY}, 64 B`))
    yield* Fiber.interrupt(fiber)
  }))

  // Raw ring.
  const raw = new Map<number, Measured>()
  for (const size of SIZES) {
    rawRing(size, WARMUP_MILLIS)
    const m = rawRing(size, ROW_MILLIS)
    raw.set(size, m)
    results.push(m)
  }

  // One-way through the channel API.
  for (const size of SIZES) {
    for (const mode of ["send", "sendBatch"] as const) {
      for (const consumer of ["packets", "serve"] as const) {
        results.push(yield* oneWay(size, mode, consumer, ROW_MILLIS))
      }
    }
  }

  const rows: Array<Row> = results.map((m) => {
    const rate = m.count / m.seconds
    const rawRate = m.rawKey === undefined ? undefined : raw.get(m.rawKey)!.count / raw.get(m.rawKey)!.seconds
    return {
      row: m.name,
      "pkts or RTs /s": Math.round(rate).toLocaleString("en-US"),
      "MB/s": (rate * m.payloadBytes / 1e6).toFixed(1),
      "p50 µs": m.latencies ? (percentile(m.latencies, 0.5) * 1000).toFixed(1) : "",
      "p99 µs": m.latencies ? (percentile(m.latencies, 0.99) * 1000).toFixed(1) : "",
      "ratio to raw ring": rawRate === undefined ? "" : (rate / rawRate).toFixed(3),
      "CPU µs/op": (m.cpuSeconds / m.count * 1e6).toFixed(2)
    }
  })
  // Which consumer is faster, per (size, mode), judged by CPU per packet (wall rates are noisy on a
  // shared machine); the table shows both.
  const notes: Array<string> = []
  const groups = new Map<string, Array<Measured>>()
  for (const m of results) if (m.group !== undefined) groups.set(m.group, [...(groups.get(m.group) ?? []), m])
  for (const [group, ms] of groups) {
    const [best, other] = [...ms].sort((a, b) => a.cpuSeconds / a.count - b.cpuSeconds / b.count)
    if (best === undefined || other === undefined) continue
    const gain = (other.cpuSeconds / other.count) / (best.cpuSeconds / best.count)
    notes.push(`${group}: ${best.consumer} is faster (${gain.toFixed(2)}x less CPU per packet than ${other.consumer})`)
  }
  return { rows, notes }
})

export async function run(): Promise<void> {
  const load = os.loadavg().map((x) => x.toFixed(2)).join(" ")
  const { notes, rows } = await Effect.runPromise(program.pipe(Effect.provide(InMemoryTransport.layer)))
  console.log(
    `channel over InMemoryTransport, rings ${RING_PAGES}+${RING_PAGES} pages, ~${ROW_MILLIS} ms per row; ` +
      `${os.cpus().length} CPUs, load average ${load} at start. Round-trip MB/s counts request payload only.`
  )
  console.table(rows)
  for (const note of notes) console.log(note)
}

if (import.meta.url === `file://${process.argv[1]}`) {
  await run()
}

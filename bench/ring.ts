// Ring throughput: packets per second and payload MB/s through one VMBus ring on one thread, writing a
// batch of packets (one commit) and then reading the batch (one commit), for several payload sizes.
// Baseline, measured in the same run: a plain JavaScript array queue of copied Uint8Arrays (push a copy
// of each payload, then shift the batch). Both hand the consumer a private copy of every payload; the
// ring additionally frames, copies in, validates and copies out (wire-format.md §3.1, §3.2).
import { Bench } from "tinybench"
import * as Packet from "../src/Packet.js"
import * as Ring from "../src/Ring.js"

const RING_SIZE = 256 * 1024
const BATCH = 32
const ROUNDS = 8 // batches per timed call, to keep the timer overhead small
const PACKETS_PER_CALL = BATCH * ROUNDS
const PAYLOADS = [64, 512, 1500, 4096] as const

let sink = 0 // consumed results go here so no work can be optimised away

const payloadsOf = (size: number): Array<Uint8Array> =>
  Array.from({ length: BATCH }, (_, i) => new Uint8Array(size).map((_, j) => (i * 31 + j) & 0xff))

const ringTask = (size: number): (() => void) => {
  const region = Ring.allocate(RING_SIZE)
  if (!(region instanceof Uint8Array)) throw new Error(region.message)
  const writer = Ring.OutgoingRing.attach(region)
  const reader = Ring.IncomingRing.attach(region)
  if (!(writer instanceof Ring.OutgoingRing)) throw new Error(writer.message)
  if (!(reader instanceof Ring.IncomingRing)) throw new Error(reader.message)
  if (Packet.inBandRingSize(size) * BATCH >= RING_SIZE - Ring.CONTROL_PAGE_SIZE) throw new Error("batch does not fit")
  reader.mask() // a draining reader: no signal decisions beyond the masked check
  const packets = payloadsOf(size).map((payload, i) => Packet.inBand(payload, { transactionId: BigInt(i + 1) }))
  return () => {
    for (let round = 0; round < ROUNDS; round++) {
      for (let i = 0; i < BATCH; i++) {
        const problem = writer.write(packets[i]!)
        if (problem !== undefined) throw new Error(problem.message)
      }
      writer.commit()
      for (let i = 0; i < BATCH; i++) {
        const packet = reader.read()
        if (packet === undefined || !("payload" in packet)) throw new Error(`read failed: ${String(packet)}`)
        sink += packet.payload.length + packet.payload[0]!
      }
      reader.commit()
    }
  }
}

const baselineTask = (size: number): (() => void) => {
  const payloads = payloadsOf(size)
  const queue: Array<Uint8Array> = []
  return () => {
    for (let round = 0; round < ROUNDS; round++) {
      for (let i = 0; i < BATCH; i++) queue.push(payloads[i]!.slice())
      for (let i = 0; i < BATCH; i++) {
        const payload = queue.shift()!
        sink += payload.length + payload[0]!
      }
    }
  }
}

interface Row {
  readonly payload: number
  readonly ringPps: number
  readonly ringRme: number
  readonly basePps: number
  readonly baseRme: number
}

const packetsPerSecond = (task: { readonly result: unknown }): { readonly pps: number; readonly rme: number } => {
  const result = task.result as { state: string; latency?: { mean: number; rme: number }; error?: Error }
  if (result.state !== "completed" || result.latency === undefined) {
    throw new Error(`bench task ${result.state}${result.error ? `: ${result.error.message}` : ""}`)
  }
  return { pps: (PACKETS_PER_CALL * 1000) / result.latency.mean, rme: result.latency.rme }
}

const fmt = (n: number, digits = 0): string =>
  n.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits })

const printTable = (rows: ReadonlyArray<Row>): void => {
  const header = ["payload", "ring pkts/s", "ring MB/s", "baseline pkts/s", "baseline MB/s", "ring/baseline"]
  const lines = rows.map((r) => [
    `${r.payload} B`,
    fmt(r.ringPps),
    fmt((r.ringPps * r.payload) / 1e6, 1),
    fmt(r.basePps),
    fmt((r.basePps * r.payload) / 1e6, 1),
    `${fmt(r.ringPps / r.basePps, 2)}x`
  ])
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)))
  const row = (cells: ReadonlyArray<string>) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ")
  console.log(row(header))
  console.log(widths.map((w) => "-".repeat(w)).join("  "))
  for (const l of lines) console.log(row(l))
  const worst = Math.max(...rows.flatMap((r) => [r.ringRme, r.baseRme]))
  console.log(`(MB = 10^6 payload bytes; largest relative margin of error of the means: ±${fmt(worst, 1)}%)`)
}

export async function run(): Promise<void> {
  console.log(
    `ring: ${RING_SIZE / 1024} KiB ring, in-band packets, batches of ${BATCH} per commit, write batch then read batch, ` +
      `one thread (node ${process.version})`
  )
  const rows: Array<Row> = []
  for (const size of PAYLOADS) {
    const bench = new Bench({ time: 500, warmupTime: 100 })
    bench.add("ring", ringTask(size))
    bench.add("baseline", baselineTask(size))
    await bench.run()
    const ring = packetsPerSecond(bench.getTask("ring")!)
    const base = packetsPerSecond(bench.getTask("baseline")!)
    rows.push({ payload: size, ringPps: ring.pps, ringRme: ring.rme, basePps: base.pps, baseRme: base.rme })
  }
  printTable(rows)
  if (sink === -1) console.log(sink)
}

// Ring throughput on one thread: a batch of in-band packets written (one commit), then read (one
// commit), for several payload sizes. Baseline per size, same run: a plain JavaScript array queue of
// copied Uint8Arrays (push a copy of each payload, then shift the batch). Both hand the consumer a
// private copy of every payload; the ring additionally frames, copies in, validates and copies out
// (wire-format.md §3.1, §3.2).
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Packet from "../src/Packet.js"
import * as Ring from "../src/Ring.js"
import { type Row, type Subject, timeBoxSync } from "./harness.js"

const RING_SIZE = 256 * 1024
const BATCH = 32
const BATCHES_PER_STEP = 8 // between clock reads
const PAYLOADS = [64, 512, 1500, 4096] as const

let sink = 0 // consumed results go here so no work can be optimised away

const payloadsOf = (size: number): Array<Uint8Array> =>
  Array.from({ length: BATCH }, (_, i) => new Uint8Array(size).map((_, j) => (i * 31 + j) & 0xff))

const ringStep = (size: number): (() => number) => {
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
    for (let round = 0; round < BATCHES_PER_STEP; round++) {
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
    return BATCH * BATCHES_PER_STEP
  }
}

const queueStep = (size: number): (() => number) => {
  const payloads = payloadsOf(size)
  const queue: Array<Uint8Array> = []
  return () => {
    for (let round = 0; round < BATCHES_PER_STEP; round++) {
      for (let i = 0; i < BATCH; i++) queue.push(payloads[i]!.slice())
      for (let i = 0; i < BATCH; i++) {
        const payload = queue.shift()!
        sink += payload.length + payload[0]!
      }
    }
    return BATCH * BATCHES_PER_STEP
  }
}

const rows = Effect.sync((): ReadonlyArray<Row> =>
  PAYLOADS.flatMap((size) => {
    const queue = queueStep(size)
    const ring = ringStep(size)
    const baseline = `array queue ${size} B`
    return [
      { name: baseline, unit: "packet", bytesPerOp: size, baseline: true, measure: (ms: number) => Effect.sync(() => timeBoxSync(ms, queue)) },
      { name: `ring ${size} B`, unit: "packet", bytesPerOp: size, compareTo: baseline, measure: (ms: number) => Effect.sync(() => timeBoxSync(ms, ring)) }
    ]
  })
)

export const subject: Subject = {
  name: "ring",
  title: "one VMBus ring on one thread",
  description: [
    `A ${RING_SIZE / 1024} KiB ring, in-band packets written in batches of ${BATCH} (one commit) then read in batches (one commit).`,
    "Baseline per size: a JavaScript array queue of copied Uint8Arrays (push a copy, shift it). MB = 10^6 payload bytes."
  ],
  rows: Effect.tap(rows, () => Effect.sync(() => sink === -1 && console.log(sink))),
  layer: Layer.empty
}

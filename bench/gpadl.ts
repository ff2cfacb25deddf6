/**
 * Bulk-transfer benchmark: GPA-direct page ranges against in-band copies, over `InMemoryTransport`.
 *
 * One client/server pair, rings 64 + 64 pages, `maxPacketSize` 4096, quota 4096. For each transfer
 * size (64 KiB, 1 MiB) the client's data sits in a guest buffer, and each row moves it repeatedly
 * (time-boxed rounds, rows interleaved: bench/harness.ts):
 * - `gpa-direct`: one `request(header, { external: [buffer] })`; the server reads the whole range with
 *   `externalData` → `read()` (one copy out of guest memory) and completes with an 8-byte ack;
 * - `in-band`: the same bytes in 4000-byte chunks, `sendBatch` for all but the last and a `request`
 *   for the last; the server copies each payload into a reassembly buffer and completes the request.
 * The server consumes with the `packets` stream (in order). One transfer per row is checked byte for
 * byte after each timed part. MB/s is 10^6 bytes of transfer payload per second; ops/s counts
 * completed transfers (one `request` each).
 *
 * Run: `npm run bench -- gpadl`.
 */
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import type * as Layer from "effect/Layer"
import * as Stream from "effect/Stream"
import * as Channel from "../src/Channel.js"
import * as GuestMemory from "../src/GuestMemory.js"
import type * as IncomingPacket from "../src/IncomingPacket.js"
import * as InMemoryTransport from "../src/InMemoryTransport.js"
import { cpuSeconds, type Row, type Sample, type Subject } from "./harness.js"

const TYPE = "6b3a1f0e-2d4c-4e5f-8a9b-0c1d2e3f4a5b"
const INSTANCE = "7c4b2a1f-3e5d-4f6a-9b0c-1d2e3f4a5b6c"
const RING_PAGES = 64
const MAX_PACKET_SIZE = 4096
const QUOTA = 4096
const CHUNK = 4000
const SIZES = [64 * 1024, 1024 * 1024] as const
const ACK = new Uint8Array([0x41, 0x43, 0x4b, 0, 0, 0, 0, 0])

type Mode = "gpa-direct" | "in-band"

/** The server side: reads GPA-direct ranges, reassembles in-band chunks; acks each request. */
const makeServer = (server: Channel.OpenedChannel) => {
  const assembly = new Uint8Array(Math.max(...SIZES))
  let filled = 0
  let lastGpa: Uint8Array = new Uint8Array(0)
  let lastInBand: Uint8Array = new Uint8Array(0)
  const handle = (packet: IncomingPacket.IncomingPacket) =>
    Effect.gen(function*() {
      if (packet.kind === "GpaDirect") {
        const [external] = yield* packet.externalData
        const bytes = external!.read()
        if (Either.isLeft(bytes)) return yield* Effect.dieMessage(`read failed: ${bytes.left.message}`)
        lastGpa = bytes.right
        yield* packet.complete(ACK)
        return
      }
      const payload = packet.payload
      assembly.set(payload, filled)
      filled += payload.length
      if (packet.completionRequested) {
        lastInBand = assembly.subarray(0, filled)
        filled = 0
        yield* packet.complete(ACK)
      } else {
        yield* packet.complete()
      }
    })
  return {
    loop: Stream.runForEach(server.packets, handle),
    lastGpa: () => lastGpa,
    lastInBand: () => lastInBand
  }
}

const chunksOf = (bytes: Uint8Array): Array<Uint8Array> => {
  const out: Array<Uint8Array> = []
  for (let at = 0; at < bytes.length; at += CHUNK) out.push(bytes.subarray(at, Math.min(bytes.length, at + CHUNK)))
  return out
}

const sameBytes = (a: Uint8Array, b: Uint8Array): boolean => {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

const formatSize = (bytes: number): string => (bytes >= 1024 * 1024 ? `${bytes / (1024 * 1024)} MiB` : `${bytes / 1024} KiB`)

const rows = Effect.gen(function*() {
  const common = { interfaceType: TYPE, interfaceInstance: INSTANCE, maxPacketSize: MAX_PACKET_SIZE, transactionQuota: QUOTA }
  const [server, client] = yield* Effect.all([
    Channel.open({ role: "server", ...common }),
    Channel.open({ role: "client", ...common, outgoingRingPages: RING_PAGES, incomingRingPages: RING_PAGES })
  ], { concurrency: 2 })
  const serverSide = makeServer(server)
  yield* Effect.forkScoped(serverSide.loop)
  const header = new Uint8Array(8)
  const out: Array<Row> = []

  for (const size of SIZES) {
    const buffer = yield* GuestMemory.allocate(size / GuestMemory.PAGE_SIZE)
    for (let i = 0; i < size; i++) buffer.bytes[i] = (i * 31 + (i >>> 12)) & 0xff
    const chunks = chunksOf(buffer.bytes)
    const head = chunks.slice(0, -1)
    const last = chunks[chunks.length - 1]!
    const transfer: Record<Mode, Effect.Effect<unknown, unknown>> = {
      "gpa-direct": client.request(header, { external: [buffer] }),
      "in-band": Effect.zipRight(client.sendBatch(head), client.request(last))
    }
    const measure = (mode: Mode) => (millis: number) =>
      Effect.gen(function*() {
        const once = transfer[mode]
        let ops = 0
        const cpu0 = cpuSeconds()
        const t0 = performance.now()
        let now = t0
        while (now - t0 < millis) {
          yield* once
          ops++
          now = performance.now()
        }
        const sample = { ops, seconds: (now - t0) / 1000, cpuSeconds: cpuSeconds() - cpu0 } satisfies Sample
        // One checked transfer: the server saw exactly the guest buffer's bytes.
        yield* once
        const seen = mode === "gpa-direct" ? serverSide.lastGpa() : serverSide.lastInBand()
        if (!sameBytes(seen, buffer.bytes)) return yield* Effect.dieMessage(`${mode} ${size}: the server saw different bytes`)
        return sample
      })
    const baseline = `in-band ${formatSize(size)}`
    out.push({ name: baseline, unit: "transfer", bytesPerOp: size, baseline: true, measure: measure("in-band") })
    out.push({ name: `GPA direct ${formatSize(size)}`, unit: "transfer", bytesPerOp: size, compareTo: baseline, measure: measure("gpa-direct") })
  }
  return out
})

export const subject: Subject<Layer.Layer.Success<typeof InMemoryTransport.layer>> = {
  name: "gpadl",
  title: "bulk transfer: GPA-direct page ranges vs in-band chunks",
  description: [
    `One client/server pair, rings ${RING_PAGES}+${RING_PAGES} pages, maxPacketSize ${MAX_PACKET_SIZE}; one op = one transfer of the size`,
    `named (GPA direct: one request naming the pinned guest buffer, the server reads it through externalData; in-band: ${CHUNK}-byte`,
    "chunks, sendBatch for all but the last, request for the last). Each round ends with a byte-for-byte check of one transfer."
  ],
  rows,
  layer: InMemoryTransport.layer
}

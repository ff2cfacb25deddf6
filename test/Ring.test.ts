// The VMBus ring (wire-format.md §1, §3, §7; hardening.md §1.1–§1.2): test vectors TV1–TV7 byte for
// byte, a model-checked property over random batches / indices / control words, requestSpace and
// unmask, corruption robustness and the hardening fields, geometry and strict mode.
// Errors are values: every call below goes through `safe`, which fails the test if anything throws.
import { describe, expect, it } from "@effect/vitest"
import { FastCheck } from "effect"
import * as Packet from "../src/Packet.js"
import * as Ring from "../src/Ring.js"
import {
  BufferTooSmall,
  InvalidParameter,
  isVmbusError,
  PacketTooLarge,
  RingCorrupt,
  RingFull
} from "../src/VmbusError.js"

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

const PAGE = 4096
const W = 0x0
const R = 0x4
const MASK = 0x8
const PENDING = 0xc
const FEATURES = 0x40

const hex = (text: string): Uint8Array =>
  Uint8Array.from(text.trim().split(/\s+/).map((b) => parseInt(b, 16)))

const NONE = Symbol("none")
/** Runs `f`, failing the test if it throws. */
const safe = <A>(f: () => A): A => {
  let out: A | typeof NONE = NONE
  let thrown: unknown = NONE
  try {
    out = f()
  } catch (e) {
    thrown = e
  }
  expect(thrown, "ring calls must return errors, never throw").toBe(NONE)
  return out as A
}

const allocate = (dataPages: number): Uint8Array => {
  const region = safe(() => Ring.allocate(PAGE * (dataPages + 1)))
  if (!(region instanceof Uint8Array)) throw new Error(`allocate failed: ${region.message}`)
  return region
}

const control = (region: Uint8Array): DataView => new DataView(region.buffer, region.byteOffset, PAGE)
const getWord = (region: Uint8Array, offset: number): number => control(region).getUint32(offset, true)
const setWord = (region: Uint8Array, offset: number, value: number): void =>
  control(region).setUint32(offset, value >>> 0, true)
const dataSize = (region: Uint8Array): number => region.length - PAGE

const writerOf = (region: Uint8Array, options?: Ring.RingOptions): Ring.OutgoingRing => {
  const writer = safe(() => Ring.OutgoingRing.attach(region, options))
  if (!(writer instanceof Ring.OutgoingRing)) throw new Error(`attach failed: ${writer.message}`)
  return writer
}

const readerOf = (region: Uint8Array, options?: Ring.IncomingOptions): Ring.IncomingRing => {
  const reader = safe(() => Ring.IncomingRing.attach(region, options))
  if (!(reader instanceof Ring.IncomingRing)) throw new Error(`attach failed: ${reader.message}`)
  return reader
}

/** `n` data-area bytes starting at data offset `at`, wrapping at D. */
const dataBytes = (region: Uint8Array, at: number, n: number): Uint8Array => {
  const size = dataSize(region)
  const out = new Uint8Array(n)
  for (let i = 0; i < n; i++) out[i] = region[PAGE + ((at + i) % size)]!
  return out
}

const setDataBytes = (region: Uint8Array, at: number, bytes: Uint8Array): void => {
  const size = dataSize(region)
  for (let i = 0; i < bytes.length; i++) region[PAGE + ((at + i) % size)] = bytes[i]!
}

const dataU64 = (region: Uint8Array, at: number): bigint => {
  const b = dataBytes(region, at, 8)
  return new DataView(b.buffer).getBigUint64(0, true)
}

const sameBytes = (a: Uint8Array, b: Uint8Array): boolean =>
  a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.length).equals(Buffer.from(b.buffer, b.byteOffset, b.length))

const encodeOk = (packet: Packet.Packet): Uint8Array => {
  const bytes = Packet.encode(packet)
  if (!(bytes instanceof Uint8Array)) throw new Error(`encode failed: ${bytes.message}`)
  return bytes
}

const trailerBytes = (start: number): Uint8Array => {
  const t = new Uint8Array(8)
  new DataView(t.buffer).setUint32(4, start, true)
  return t
}

const concat = (...parts: ReadonlyArray<Uint8Array>): Uint8Array => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
  let at = 0
  for (const p of parts) {
    out.set(p, at)
    at += p.length
  }
  return out
}

const asPacket = (result: Ring.ReadResult): Packet.Packet => {
  expect(result).toBeDefined()
  expect(isVmbusError(result), `expected a packet, got ${isVmbusError(result) ? result.message : ""}`).toBe(false)
  return result as Packet.Packet
}

const isPacket = (u: unknown): u is Packet.Packet =>
  typeof u === "object" && u !== null && !isVmbusError(u) &&
  ["InBand", "Completion", "TransferPages", "GpaDirect", "Unknown"].includes((u as { _tag: string })._tag)

/** mulberry32: deterministic bytes from a seed. */
const prng = (seed: number): (() => number) => {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}
const randomBytes = (n: number, seed: number): Uint8Array => {
  const next = prng(seed)
  const out = new Uint8Array(n)
  for (let i = 0; i < n; i++) out[i] = Math.floor(next() * 256)
  return out
}

// Reference model of spec §1.3, §3.1, §3.2.
const rawFree = (w: number, r: number, size: number): number => (w >= r ? size - (w - r) : r - w)
const readable = (w: number, r: number, size: number): number => (w >= r ? w - r : size - r + w)
const advance = (at: number, n: number, size: number): number => (at + n >= size ? at + n - size : at + n)

/** §3.1 step 10, batched (OpenVMM commit_write): one decision per batch with `old` = batch start. */
const modelWriterSignal = (old: number, next: number, mask: number, readIndex: number): boolean =>
  next !== old && mask === 0 && readIndex === old

/** §3.2 step 5 (recent Linux) with P masked to a multiple of 8 and P > D − 8 treated as no request. */
const modelReaderSignal = (
  size: number,
  start: number,
  next: number,
  w: number,
  features: number,
  pendingRaw: number
): boolean => {
  if (next === start) return false
  if ((features & 1) === 0) return false
  const p = (pendingRaw & ~7) >>> 0
  if (p === 0 || p > size - 8) return false
  const current = rawFree(w, next, size)
  const freed = readable(next, start, size)
  if (current - freed > p) return false
  if (current <= p) return false
  return true
}

// ---------------------------------------------------------------------------------------------
// §7 test vectors
// ---------------------------------------------------------------------------------------------

describe("wire-format §7 test vectors", () => {
  it("TV1: in-band, completion requested, empty ring at 0", () => {
    const region = allocate(1)
    expect(dataSize(region)).toBe(0x1000)
    const writer = writerOf(region)
    const packet = Packet.inBand(hex("01 02 03 04 05"), { transactionId: 0x1122334455667788n, completionRequested: true })
    expect(safe(() => writer.write(packet))).toBeUndefined()
    expect(getWord(region, W)).toBe(0) // nothing published before commit
    expect(safe(() => writer.commit())).toBe(true) // mask 0 and old (0) == read_index (0)
    expect(dataBytes(region, 0x000, 8)).toEqual(hex("06 00 02 00 03 00 01 00"))
    expect(dataBytes(region, 0x008, 8)).toEqual(hex("88 77 66 55 44 33 22 11"))
    expect(dataBytes(region, 0x010, 8)).toEqual(hex("01 02 03 04 05 00 00 00"))
    expect(dataBytes(region, 0x018, 8)).toEqual(hex("00 00 00 00 00 00 00 00"))
    expect(dataU64(region, 0x18)).toBe(0x0000000000000000n)
    expect(getWord(region, W)).toBe(0x20)

    const reader = readerOf(region)
    const got = asPacket(safe(() => reader.read()))
    expect(got).toEqual({
      _tag: "InBand",
      transactionId: 0x1122334455667788n,
      completionRequested: true,
      payload: hex("01 02 03 04 05 00 00 00")
    })
    expect(safe(() => reader.read())).toBeUndefined()
    expect(safe(() => reader.commit())).toBe(false) // no pending_send_sz
    expect(getWord(region, R)).toBe(0x20)
  })

  it("TV2: completion echoing TV1, ring empty at 0x20", () => {
    for (const mask of [0, 1]) {
      const region = allocate(1)
      setWord(region, W, 0x20)
      setWord(region, R, 0x20)
      setWord(region, MASK, mask)
      const writer = writerOf(region)
      expect(safe(() => writer.write(Packet.completion(0x1122334455667788n, hex("01 00 00 00"))))).toBeUndefined()
      expect(safe(() => writer.commit())).toBe(mask === 0)
      expect(dataBytes(region, 0x020, 8)).toEqual(hex("0b 00 02 00 03 00 00 00"))
      expect(dataBytes(region, 0x028, 8)).toEqual(hex("88 77 66 55 44 33 22 11"))
      expect(dataBytes(region, 0x030, 8)).toEqual(hex("01 00 00 00 00 00 00 00"))
      expect(dataBytes(region, 0x038, 8)).toEqual(hex("00 00 00 00 20 00 00 00"))
      expect(dataU64(region, 0x38)).toBe(0x0000002000000000n)
      expect(getWord(region, W)).toBe(0x40)
      expect(dataBytes(region, 0, 0x20)).toEqual(new Uint8Array(0x20)) // nothing before the packet touched
      const got = asPacket(safe(() => readerOf(region).read()))
      expect(got).toEqual({ _tag: "Completion", transactionId: 0x1122334455667788n, payload: hex("01 00 00 00 00 00 00 00") })
    }
  })

  it("TV3: wrap-around with a split descriptor, empty ring at 0xFF8", () => {
    const region = allocate(1)
    setWord(region, W, 0xff8)
    setWord(region, R, 0xff8)
    const writer = writerOf(region)
    expect(safe(() => writer.freeBytes())).toBe(4096)
    const packet = Packet.inBand(hex("a0 a1 a2 a3 a4 a5 a6 a7"), { transactionId: 0x0123456789abcdefn })
    expect(safe(() => writer.write(packet))).toBeUndefined()
    expect(safe(() => writer.commit())).toBe(true)
    expect(dataBytes(region, 0xff8, 8)).toEqual(hex("06 00 02 00 03 00 00 00"))
    expect(dataBytes(region, 0x000, 8)).toEqual(hex("ef cd ab 89 67 45 23 01"))
    expect(dataBytes(region, 0x008, 8)).toEqual(hex("a0 a1 a2 a3 a4 a5 a6 a7"))
    expect(dataBytes(region, 0x010, 8)).toEqual(hex("00 00 00 00 f8 0f 00 00"))
    expect(dataU64(region, 0x10)).toBe(0x00000ff800000000n)
    expect(getWord(region, W)).toBe(0x18)

    const reader = readerOf(region)
    const got = asPacket(safe(() => reader.read()))
    expect(got).toEqual({
      _tag: "InBand",
      transactionId: 0x0123456789abcdefn,
      completionRequested: false,
      payload: hex("a0 a1 a2 a3 a4 a5 a6 a7")
    })
    expect(safe(() => reader.commit())).toBe(false)
    expect(getWord(region, R)).toBe(0x18)
  })

  it("TV4: the never-full boundary (raw free 32)", () => {
    for (const strict of [false, true]) {
      const region = allocate(1)
      setWord(region, R, 0)
      setWord(region, W, 0xfe0)
      const writer = writerOf(region, { strict })
      expect(safe(() => writer.freeBytes())).toBe(32)
      const before = region.slice()
      const rejected = safe(() => writer.write(Packet.inBand(new Uint8Array(8))))
      expect(rejected).toBeInstanceOf(RingFull)
      expect(rejected).toMatchObject({ required: 32, available: 32 })
      expect(sameBytes(region, before)).toBe(true)

      expect(safe(() => writer.write(Packet.inBand(new Uint8Array(0), { transactionId: 0n })))).toBeUndefined()
      expect(safe(() => writer.commit())).toBe(false) // old 0xFE0 != read_index 0
      expect(dataBytes(region, 0xfe0, 24)).toEqual(hex(`
        06 00 02 00 02 00 00 00
        00 00 00 00 00 00 00 00
        00 00 00 00 e0 0f 00 00`))
      expect(getWord(region, W)).toBe(0xff8)
      expect(safe(() => writer.freeBytes())).toBe(8) // exactly one quadword stays unused
      expect(safe(() => writer.write(Packet.inBand(new Uint8Array(0))))).toBeInstanceOf(RingFull)
    }
  })

  it("TV5: GPA direct, one range spanning two pages", () => {
    const region = allocate(1)
    const writer = writerOf(region)
    const packet: Packet.Packet = {
      _tag: "GpaDirect",
      transactionId: 7n,
      completionRequested: true,
      ranges: [{ byteCount: 0x1ff0, byteOffset: 0x10, pfns: [0x12345, 0x12346] }],
      payload: hex("de ad be ef")
    }
    expect(safe(() => writer.write(packet))).toBeUndefined()
    expect(safe(() => writer.commit())).toBe(true)
    expect(dataBytes(region, 0, 0x40)).toEqual(hex(`
      09 00 06 00 07 00 01 00  07 00 00 00 00 00 00 00
      00 00 00 00 01 00 00 00
      f0 1f 00 00 10 00 00 00
      45 23 01 00 00 00 00 00  46 23 01 00 00 00 00 00
      de ad be ef 00 00 00 00
      00 00 00 00 00 00 00 00`))
    expect(getWord(region, W)).toBe(0x40)
    const got = asPacket(safe(() => readerOf(region).read()))
    expect(got).toEqual({ ...packet, payload: hex("de ad be ef 00 00 00 00") })
  })

  it("TV6: transfer pages, two ranges, no payload", () => {
    const region = allocate(1)
    const writer = writerOf(region)
    const packet: Packet.Packet = {
      _tag: "TransferPages",
      transactionId: 0x42n,
      completionRequested: true,
      transferPageSetId: 1,
      senderOwnsSet: false,
      ranges: [
        { byteCount: 0x5ea, byteOffset: 0x0 },
        { byteCount: 0x100, byteOffset: 0x1000 }
      ],
      payload: new Uint8Array(0)
    }
    expect(safe(() => writer.write(packet))).toBeUndefined()
    expect(safe(() => writer.commit())).toBe(true)
    expect(dataBytes(region, 0, 0x30)).toEqual(hex(`
      07 00 05 00 05 00 01 00  42 00 00 00 00 00 00 00
      01 00 00 00 02 00 00 00
      ea 05 00 00 00 00 00 00  00 01 00 00 00 10 00 00
      00 00 00 00 00 00 00 00`))
    expect(getWord(region, W)).toBe(0x30)
    expect(asPacket(safe(() => readerOf(region).read()))).toEqual(packet)
  })

  it("TV7: reader-side signal decision from pending_send_sz", () => {
    const cases: ReadonlyArray<readonly [number, boolean]> = [
      [0x100, true],
      [0x120, false],
      [0xf0, false]
    ]
    for (const [pending, signal] of cases) {
      const region = allocate(1)
      expect(getWord(region, FEATURES)).toBe(1)
      const writer = writerOf(region)
      // a 32-byte (TV1-sized) packet at 0, then one packet filling up to 0xF00
      expect(safe(() => writer.write(Packet.inBand(hex("01 02 03 04 05"), { transactionId: 1n })))).toBeUndefined()
      expect(safe(() => writer.write(Packet.inBand(new Uint8Array(0xf00 - 0x20 - 24))))).toBeUndefined()
      expect(safe(() => writer.commit())).toBe(true)
      expect(getWord(region, W)).toBe(0xf00)
      expect(safe(() => writer.freeBytes())).toBe(0x100)
      setWord(region, PENDING, pending) // the writer blocked with P
      const reader = readerOf(region)
      asPacket(safe(() => reader.read()))
      expect(reader.pendingBytes).toBe(0x20)
      expect(safe(() => reader.commit())).toBe(signal)
      expect(getWord(region, R)).toBe(0x20)
      expect(safe(() => Ring.inspect(region))).toMatchObject({ readIndex: 0x20, writeIndex: 0xf00, bytesFree: 0x120 })
      expect(modelReaderSignal(0x1000, 0, 0x20, 0xf00, 1, pending)).toBe(signal)
    }
  })
})

// ---------------------------------------------------------------------------------------------
// Model-checked property
// ---------------------------------------------------------------------------------------------

interface PacketSpec {
  readonly kind: 0 | 1 | 2
  readonly length: number
  readonly seed: number
  readonly id: bigint
  readonly rc: boolean
  readonly ranges: ReadonlyArray<{ readonly byteOffset: number; readonly byteCount: number; readonly pfn: number }>
}

const makePacket = (spec: PacketSpec): Packet.Packet => {
  const payload = randomBytes(spec.length, spec.seed)
  switch (spec.kind) {
    case 0:
      return Packet.inBand(payload, { transactionId: spec.id, completionRequested: spec.rc })
    case 1:
      return Packet.completion(spec.id, payload)
    case 2:
      return {
        _tag: "GpaDirect",
        transactionId: spec.id,
        completionRequested: spec.rc,
        payload,
        ranges: spec.ranges.map((r) => ({
          byteCount: r.byteCount,
          byteOffset: r.byteOffset,
          pfns: Array.from({ length: Math.ceil((r.byteOffset + r.byteCount) / PAGE) }, (_, i) => r.pfn + i)
        }))
      }
  }
}

const u32Arb = FastCheck.tuple(FastCheck.nat(0xffff), FastCheck.nat(0xffff)).map(([hi, lo]) => hi * 0x10000 + lo)

const packetSpecArb: FastCheck.Arbitrary<PacketSpec> = FastCheck.record({
  kind: FastCheck.constantFrom(0 as const, 1 as const, 2 as const),
  length: FastCheck.oneof(
    FastCheck.integer({ min: 0, max: 64 }),
    FastCheck.integer({ min: 0, max: 3000 }),
    FastCheck.integer({ min: 1500, max: 3000 })
  ),
  seed: FastCheck.nat(),
  id: FastCheck.bigInt({ min: 0n, max: 0xffff_ffff_ffff_ffffn }),
  rc: FastCheck.boolean(),
  ranges: FastCheck.array(
    FastCheck.record({
      byteOffset: FastCheck.integer({ min: 0, max: 0xfff }),
      byteCount: FastCheck.integer({ min: 1, max: 0x5000 }),
      pfn: FastCheck.nat(0xfffffff)
    }),
    { minLength: 1, maxLength: 3 }
  )
})

// pending_send_sz: negative values are symbolic (resolved against D).
const PENDING_SYMBOLS = [-1, -2, -3, -4, -5] as const
const resolvePending = (v: number, size: number): number => {
  switch (v) {
    case -1:
      return size - 1 // data size − 1
    case -2:
      return size + PAGE - 1 // ring size − 1 (the "can never be satisfied" value some peers use)
    case -3:
      return size - 8
    case -4:
      return size - 7
    case -5:
      return size - 9
    default:
      return v
  }
}

type Op =
  | { readonly op: "write"; readonly packet: PacketSpec }
  | { readonly op: "wcommit" }
  | { readonly op: "wrevert" }
  | { readonly op: "read" }
  | { readonly op: "peek" }
  | { readonly op: "rcommit" }
  | { readonly op: "rrevert" }
  | { readonly op: "mask"; readonly value: number }
  | { readonly op: "pending"; readonly value: number }
  | { readonly op: "features"; readonly value: number }

const opArb: FastCheck.Arbitrary<Op> = FastCheck.oneof(
  { weight: 8, arbitrary: packetSpecArb.map((packet): Op => ({ op: "write", packet })) },
  { weight: 3, arbitrary: FastCheck.constant<Op>({ op: "wcommit" }) },
  { weight: 1, arbitrary: FastCheck.constant<Op>({ op: "wrevert" }) },
  { weight: 8, arbitrary: FastCheck.constant<Op>({ op: "read" }) },
  { weight: 1, arbitrary: FastCheck.constant<Op>({ op: "peek" }) },
  { weight: 3, arbitrary: FastCheck.constant<Op>({ op: "rcommit" }) },
  { weight: 1, arbitrary: FastCheck.constant<Op>({ op: "rrevert" }) },
  {
    weight: 1,
    arbitrary: FastCheck.oneof(FastCheck.constantFrom(0, 0, 1), u32Arb).map((value): Op => ({ op: "mask", value }))
  },
  {
    weight: 2,
    arbitrary: FastCheck.oneof(
      FastCheck.constant(0),
      FastCheck.constantFrom(...PENDING_SYMBOLS),
      FastCheck.integer({ min: 1, max: 3 * PAGE + 64 }),
      FastCheck.integer({ min: 0, max: 3 * PAGE / 8 }).map((n) => n * 8),
      u32Arb
    ).map((value): Op => ({ op: "pending", value }))
  },
  {
    weight: 1,
    arbitrary: FastCheck.oneof(FastCheck.constantFrom(1, 1, 0), u32Arb).map((value): Op => ({ op: "features", value }))
  }
)

interface Entry {
  readonly packet: Packet.Packet
  readonly bytes: Uint8Array
  readonly size: number
}

const expectSamePacket = (result: Ring.ReadResult, entry: Entry): void => {
  const got = asPacket(result)
  expect(got._tag).toBe(entry.packet._tag)
  expect(sameBytes(encodeOk(got), entry.bytes), "packet arrives intact").toBe(true)
}

describe("ring property: random batches against a reference model", () => {
  it("packets arrive intact and in order; RingFull changes nothing; signal decisions match §3.1/§3.2", () => {
    const seen = { writerSignal: 0, writerQuiet: 0, readerSignal: 0, readerQuiet: 0, full: 0, wrapped: 0 }
    FastCheck.assert(
      FastCheck.property(
        FastCheck.integer({ min: 1, max: 3 }),
        FastCheck.nat(3 * 512 - 1),
        FastCheck.array(opArb, { minLength: 20, maxLength: 250 }),
        (pages, slot, ops) => {
          const region = allocate(pages)
          const size = pages * PAGE
          const k = (slot % (size / 8)) * 8
          setWord(region, W, k)
          setWord(region, R, k)
          const writer = writerOf(region)
          const reader = readerOf(region)
          let mW = k // committed write index
          let wCur = k // writer's batch cursor
          let mR = k // committed read index
          let rCur = k // reader's private cursor
          let published: Array<Entry> = [] // committed by the writer, not yet released by the reader
          let batch: Array<Entry> = [] // written, not committed
          let readPos = 0 // packets of `published` read since the reader's last commit
          const sum = (es: ReadonlyArray<Entry>) => es.reduce((n, e) => n + e.size, 0)

          const readerCommit = () => {
            const expected = modelReaderSignal(
              size,
              mR,
              rCur,
              getWord(region, W),
              getWord(region, FEATURES),
              getWord(region, PENDING)
            )
            expect(safe(() => reader.commit())).toBe(expected)
            if (expected) seen.readerSignal++
            else seen.readerQuiet++
            published = published.slice(readPos)
            readPos = 0
            mR = rCur
            expect(getWord(region, R)).toBe(mR)
          }
          const writerCommit = () => {
            expect(getWord(region, R)).toBe(mR)
            const expected = modelWriterSignal(mW, wCur, getWord(region, MASK), getWord(region, R))
            expect(safe(() => writer.commit())).toBe(expected)
            if (expected) seen.writerSignal++
            else seen.writerQuiet++
            mW = wCur
            published = published.concat(batch)
            batch = []
            expect(getWord(region, W)).toBe(mW)
          }
          const read = () => {
            const result = safe(() => reader.read())
            if (readPos < published.length) {
              const entry = published[readPos]!
              expectSamePacket(result, entry)
              rCur = advance(rCur, entry.size, size)
              readPos++
            } else {
              expect(result).toBeUndefined()
            }
            expect(reader.pendingBytes).toBe(readable(rCur, mR, size))
          }

          for (const op of ops) {
            switch (op.op) {
              case "write": {
                const packet = makePacket(op.packet)
                const bytes = encodeOk(packet)
                const total = bytes.length + 8
                const before = region.slice()
                const result = safe(() => writer.write(packet))
                const free = rawFree(wCur, mR, size)
                if (total > size - 8) {
                  expect(result).toBeInstanceOf(PacketTooLarge)
                  expect(sameBytes(region, before), "PacketTooLarge changes nothing").toBe(true)
                } else if (free <= total) {
                  seen.full++
                  expect(result).toBeInstanceOf(RingFull)
                  expect(result).toMatchObject({ required: total, available: free })
                  expect(sameBytes(region, before), "RingFull changes nothing").toBe(true)
                } else {
                  expect(result).toBeUndefined()
                  expect(
                    sameBytes(dataBytes(region, wCur, total), concat(bytes, trailerBytes(wCur))),
                    "packet and trailer bytes in the ring"
                  ).toBe(true)
                  expect(sameBytes(region.subarray(0, PAGE), before.subarray(0, PAGE)), "write publishes nothing").toBe(
                    true
                  )
                  if (wCur + total > size) seen.wrapped++
                  wCur = advance(wCur, total, size)
                  batch.push({ packet, bytes, size: total })
                }
                // never full: the write cursor never catches the read index
                const inRing = sum(published) + sum(batch)
                expect(readable(wCur, mR, size)).toBe(inRing)
                expect(inRing).toBeLessThan(size)
                if (inRing > 0) expect(wCur).not.toBe(mR)
                const freeNow = safe(() => writer.freeBytes())
                expect(freeNow).toBe(size - inRing)
                expect(freeNow).toBeGreaterThan(0)
                expect(writer.pendingBytes).toBe(sum(batch))
                break
              }
              case "wcommit":
                writerCommit()
                break
              case "wrevert":
                safe(() => writer.revert())
                wCur = mW
                batch = []
                expect(writer.pendingBytes).toBe(0)
                break
              case "read":
                read()
                break
              case "peek": {
                const result = safe(() => reader.peek())
                if (readPos < published.length) expectSamePacket(result, published[readPos]!)
                else expect(result).toBeUndefined()
                expect(reader.pendingBytes).toBe(readable(rCur, mR, size))
                break
              }
              case "rcommit":
                readerCommit()
                break
              case "rrevert":
                safe(() => reader.revert())
                rCur = mR
                readPos = 0
                break
              case "mask":
                setWord(region, MASK, op.value)
                break
              case "pending":
                setWord(region, PENDING, resolvePending(op.value, size))
                break
              case "features":
                setWord(region, FEATURES, op.value)
                break
            }
          }
          // drain: everything committed arrives, in order, then the ring is empty
          writerCommit()
          safe(() => reader.revert())
          rCur = mR
          readPos = 0
          const expected = published.length
          for (let i = 0; i < expected; i++) read()
          expect(safe(() => reader.read())).toBeUndefined()
          readerCommit()
          expect(getWord(region, R)).toBe(getWord(region, W))
          expect(safe(() => writer.freeBytes())).toBe(size)
        }
      ),
      { numRuns: 250 }
    )
    // the runs exercised both answers of both decisions, full rings and wrapped packets
    expect(seen.writerSignal).toBeGreaterThan(0)
    expect(seen.writerQuiet).toBeGreaterThan(0)
    expect(seen.readerSignal).toBeGreaterThan(0)
    expect(seen.readerQuiet).toBeGreaterThan(0)
    expect(seen.full).toBeGreaterThan(0)
    expect(seen.wrapped).toBeGreaterThan(0)
  })
})

// ---------------------------------------------------------------------------------------------
// requestSpace / pending_send_sz, mask / unmask
// ---------------------------------------------------------------------------------------------

describe("writer space requests (§3.3)", () => {
  it("requestSpace sets pending_send_sz to max(size, quarter) rounded up to 8, at most D − 8", () => {
    for (const pages of [1, 2, 3]) {
      const size = pages * PAGE
      const quarter = Math.floor((size - 8) / 4)
      for (const want of [24, 32, 1001, quarter - 1, quarter, quarter + 1, size - 9, size - 8, size, size + 100]) {
        const region = allocate(pages)
        const writer = writerOf(region)
        // fill the ring so that nothing fits: raw free 8 (one quadword)
        expect(safe(() => writer.write(Packet.inBand(new Uint8Array(size - 8 - 24))))).toBeUndefined()
        writer.commit()
        expect(safe(() => writer.freeBytes())).toBe(8)
        expect(safe(() => writer.requestSpace(want))).toBe(false)
        const p = getWord(region, PENDING)
        expect(p).toBe(Math.min(size - 8, Math.ceil(Math.max(want, quarter) / 8) * 8))
        expect(p % 8).toBe(0)
        expect(p).toBeLessThanOrEqual(size - 8)
        safe(() => writer.clearSpaceRequest())
        expect(getWord(region, PENDING)).toBe(0)
      }
    }
  })

  it("requestSpace returns true and withdraws the request when the packet fits now", () => {
    const region = allocate(2)
    const writer = writerOf(region)
    setWord(region, PENDING, 0x1234)
    expect(safe(() => writer.requestSpace(Packet.inBandRingSize(100)))).toBe(true)
    expect(getWord(region, PENDING)).toBe(0)
    // raw free must be strictly greater than the size
    expect(safe(() => writer.write(Packet.inBand(new Uint8Array(2 * PAGE - 8 - 24 - 64))))).toBeUndefined()
    writer.commit()
    expect(safe(() => writer.freeBytes())).toBe(72)
    expect(safe(() => writer.requestSpace(72))).toBe(false)
    expect(getWord(region, PENDING)).toBeGreaterThan(0)
    expect(safe(() => writer.requestSpace(64))).toBe(true)
    expect(getWord(region, PENDING)).toBe(0)
  })

  it("the reader's commit signals exactly once when free space crosses the request", () => {
    for (const want of [32, 1500, 3000, 5000]) {
      const region = allocate(2)
      const size = 2 * PAGE
      const writer = writerOf(region)
      const reader = readerOf(region)
      // fill with 24-byte packets (ring size 32) until full
      let n = 0
      while (n < size && safe(() => writer.write(Packet.inBand(new Uint8Array(8), { transactionId: BigInt(n) }))) === undefined) {
        n++ // bounded: a broken never-full rule must fail, not hang
      }
      expect(n).toBe(size / 32 - 1)
      writer.commit()
      expect(safe(() => writer.freeBytes())).toBeLessThanOrEqual(32)
      expect(safe(() => writer.requestSpace(want))).toBe(false)
      const p = getWord(region, PENDING)
      let signals = 0
      for (let i = 0; i < n; i++) {
        const before = safe(() => writer.freeBytes()) as number
        asPacket(safe(() => reader.read()))
        const signal = safe(() => reader.commit())
        const after = safe(() => writer.freeBytes()) as number
        expect(signal).toBe(before <= p && p < after)
        if (signal) {
          signals++
          // the woken writer re-checks and finds room
          expect(after).toBeGreaterThan(want)
        }
      }
      expect(signals).toBe(1)
      expect(safe(() => writer.requestSpace(want))).toBe(true)
      expect(getWord(region, PENDING)).toBe(0)
      expect(safe(() => writer.freeBytes())).toBe(size)
    }
  })

  it("no signal when feature bit 0 is clear, or when P is unsatisfiable after masking", () => {
    const setup = (pending: number, features: number) => {
      const region = allocate(1)
      const writer = writerOf(region)
      writer.write(Packet.inBand(hex("01 02 03 04 05"))) // 32
      writer.write(Packet.inBand(new Uint8Array(0xf00 - 0x20 - 24)))
      writer.commit()
      setWord(region, PENDING, pending)
      setWord(region, FEATURES, features)
      const reader = readerOf(region)
      asPacket(safe(() => reader.read()))
      return safe(() => reader.commit())
    }
    expect(setup(0x100, 1)).toBe(true)
    expect(setup(0x100, 0)).toBe(false)
    expect(setup(0x100, 0xfffffffe)).toBe(false)
    expect(setup(0x100, 0xffffffff)).toBe(true)
    expect(setup(0x107, 1)).toBe(true) // masked to 0x100
    expect(setup(0x11f, 1)).toBe(true) // masked to 0x118 < 0x120
    expect(setup(0x127, 1)).toBe(false) // masked to 0x120: still not enough
    expect(setup(0x7, 1)).toBe(false) // masked to 0: no request
    expect(setup(0x1000 + 0xfff, 1)).toBe(false) // ring size − 1
    expect(setup(0xffffffff, 1)).toBe(false)
  })

  // Spec §3.2 / hardening §1.1: P (masked) > D − 8 is "no request", whatever else the peer does.
  // src/internal/ring.ts computed `Atomics.load(...) & ~7`, a signed int32: P >= 2^31 became negative,
  // passed the `pending > D − 8` test and, with a peer that moved its write index back, produced a
  // spurious signal. Fixed by `>>> 0` after the mask (see report).
  it("pending_send_sz >= 2^31 never signals, even when the peer moves its write index back", () => {
    for (const pending of [0xffffffff, 0xfffffff8, 0x80000000, 0x80000100]) {
      const region = allocate(1)
      const writer = writerOf(region)
      writer.write(Packet.inBand(new Uint8Array(8)))
      writer.write(Packet.inBand(new Uint8Array(8)))
      writer.commit()
      const reader = readerOf(region)
      asPacket(safe(() => reader.read())) // cursor 0x20
      setWord(region, PENDING, pending)
      setWord(region, W, 0x10) // hostile peer: write index now behind our cursor
      expect(safe(() => reader.commit())).toBe(modelReaderSignal(0x1000, 0, 0x20, 0x10, 1, pending))
      expect(safe(() => reader.commit())).toBe(false)
    }
  })
})

describe("reader interrupt mask (§3.3)", () => {
  it("unmask reports data present; mask() sets the word to 1 and suppresses the writer's signal", () => {
    const region = allocate(1)
    const writer = writerOf(region)
    const reader = readerOf(region)
    setWord(region, MASK, 1)
    expect(safe(() => reader.unmask())).toBe(false) // empty
    expect(getWord(region, MASK)).toBe(0)
    writer.write(Packet.inBand(hex("01")))
    expect(safe(() => writer.commit())).toBe(true)
    expect(safe(() => reader.unmask())).toBe(true)
    safe(() => reader.mask())
    expect(getWord(region, MASK)).toBe(1)
    asPacket(safe(() => reader.read()))
    expect(safe(() => reader.commit())).toBe(false)
    // the ring is empty again, but masked: no signal
    writer.write(Packet.inBand(hex("02")))
    expect(safe(() => writer.commit())).toBe(false)
    expect(safe(() => reader.unmask())).toBe(true) // the re-check finds the packet
    expect(getWord(region, MASK)).toBe(0)
    asPacket(safe(() => reader.read()))
    reader.commit()
    expect(safe(() => reader.unmask())).toBe(false)
    // a non-empty ring at batch start: no signal even when unmasked
    writer.write(Packet.inBand(hex("03")))
    expect(safe(() => writer.commit())).toBe(true)
    writer.write(Packet.inBand(hex("04")))
    expect(safe(() => writer.commit())).toBe(false)
    // unmask with a corrupt write index is a typed error
    setWord(region, W, 0x1001)
    expect(safe(() => reader.unmask())).toBeInstanceOf(RingCorrupt)
  })
})

// ---------------------------------------------------------------------------------------------
// Hardening (hardening.md §1.1–§1.2)
// ---------------------------------------------------------------------------------------------

const expectCorrupt = (result: unknown, field: string): RingCorrupt => {
  expect(result).toBeInstanceOf(RingCorrupt)
  expect(isVmbusError(result)).toBe(true)
  const error = result as RingCorrupt
  expect(error.field).toBe(field)
  return error
}

/** A ring (1 data page) holding one in-band packet at 0 with a 16-byte payload (len8 = 4), w = 0x28. */
const oneInBand = (): Uint8Array => {
  const region = allocate(1)
  const writer = writerOf(region)
  writer.write(Packet.inBand(randomBytes(16, 1), { transactionId: 5n }))
  writer.commit()
  expect(getWord(region, W)).toBe(0x28)
  return region
}

describe("hardening: every field out of range is RingCorrupt naming the field", () => {
  it("write_index >= D or not a multiple of 8 (reader side)", () => {
    for (const w of [0x1000, 0x1008, 0xfffffff8, 0xffffffff, 4, 0x21, 0xffc]) {
      const region = oneInBand()
      const reader = readerOf(region)
      setWord(region, W, w)
      const error = expectCorrupt(safe(() => reader.read()), "write_index")
      expect(error.value).toBe(w)
      expectCorrupt(safe(() => reader.peek()), "write_index")
      expectCorrupt(safe(() => reader.bytesAvailable()), "write_index")
      expect(safe(() => reader.commit())).toBe(false)
      // the writer refuses to attach at a corrupt write index of its own
      expectCorrupt(safe(() => Ring.OutgoingRing.attach(region)), "write_index")
    }
  })

  it("read_index >= D or misaligned (writer side)", () => {
    for (const r of [0x1000, 0x2000, 0xffffffff, 3, 0x24]) {
      const region = allocate(1)
      const writer = writerOf(region)
      setWord(region, R, r)
      const before = region.slice()
      const error = expectCorrupt(safe(() => writer.write(Packet.inBand(hex("01 02")))), "read_index")
      expect(error.value).toBe(r)
      expect(sameBytes(region, before)).toBe(true)
      expectCorrupt(safe(() => writer.freeBytes()), "read_index")
      expectCorrupt(safe(() => writer.requestSpace(32)), "read_index")
      expect(safe(() => writer.commit())).toBe(false)
      expectCorrupt(safe(() => Ring.IncomingRing.attach(region)), "read_index")
    }
  })

  it("len8 < 2 and len8 beyond the available bytes; the packet is not consumed", () => {
    for (const len8 of [0, 1, 5, 6, 0x200, 0xffff]) {
      const region = oneInBand()
      setDataBytes(region, 4, new Uint8Array([len8 & 0xff, len8 >>> 8]))
      const reader = readerOf(region)
      const error = expectCorrupt(safe(() => reader.read()), "len8")
      expect(error.value).toBe(len8)
      expect(error.offset).toBe(0)
      expectCorrupt(safe(() => reader.read()), "len8") // still there, still corrupt
      expect(reader.pendingBytes).toBe(0)
      expect(safe(() => reader.commit())).toBe(false)
      expect(getWord(region, R)).toBe(0)
    }
    // len8 = 4 with w exactly at the packet end is fine; shrinking w by 8 makes it "beyond available"
    const region = oneInBand()
    setWord(region, W, 0x20)
    expectCorrupt(safe(() => readerOf(region).read()), "len8")
  })

  it("offset8 < 2 and offset8 > len8", () => {
    for (const offset8 of [0, 1, 5, 0x100, 0xffff]) {
      const region = oneInBand()
      setDataBytes(region, 2, new Uint8Array([offset8 & 0xff, offset8 >>> 8]))
      const error = expectCorrupt(safe(() => readerOf(region).read()), "offset8")
      expect(error.value).toBe(offset8)
    }
    // offset8 == len8 is a legal empty payload
    const region = oneInBand()
    setDataBytes(region, 2, new Uint8Array([4, 0]))
    expect(asPacket(safe(() => readerOf(region).read())).payload.length).toBe(0)
  })

  it("unknown type and flags inside the ring are read and consumed, never a stuck reader (C13, C14)", () => {
    const region = oneInBand()
    setDataBytes(region, 0, new Uint8Array([0x08, 0]))
    const reader = readerOf(region)
    expect(asPacket(safe(() => reader.peek()))).toMatchObject({ _tag: "Unknown", type: 8, transactionId: 5n })
    expect(asPacket(safe(() => reader.read()))).toMatchObject({ _tag: "Unknown", type: 8, transactionId: 5n })
    expect(safe(() => reader.read())).toBeUndefined()
    const again = oneInBand()
    setDataBytes(again, 0, new Uint8Array([0x06, 0, 2, 0, 4, 0, 0x03, 0x80]))
    expect(asPacket(safe(() => readerOf(again).read()))).toMatchObject({
      _tag: "InBand",
      completionRequested: true,
      flags: 0x8003,
      transactionId: 5n
    })
  })

  it("flags of every kind go through the ring both ways (fast and wrapped paths)", () => {
    for (const start of [0, 0xff8]) {
      const region = allocate(1)
      setWord(region, W, start)
      setWord(region, R, start)
      const writer = writerOf(region)
      const reader = readerOf(region)
      const packets: ReadonlyArray<Packet.Packet> = [
        Packet.completion(7n, randomBytes(8, 2), { flags: 0x8001 }),
        Packet.inBand(randomBytes(5, 3), { transactionId: 9n, completionRequested: true, flags: 0x0041 }),
        { _tag: "Unknown", type: 0x1234, transactionId: 1n, completionRequested: false, flags: 0x2, header: randomBytes(8, 4), payload: randomBytes(3, 5) }
      ]
      for (const packet of packets) {
        expect(safe(() => writer.write(packet))).toBeUndefined()
        writer.commit()
        const got = asPacket(safe(() => reader.read()))
        expect(got._tag).toBe(packet._tag)
        expect(Packet.wireFlags(got)).toBe(Packet.wireFlags(packet))
        reader.commit()
      }
    }
  })

  it("skip moves past a packet the reader refuses (larger than maxPacketLength) by its framing alone", () => {
    const region = allocate(1)
    const writer = writerOf(region)
    writer.write(Packet.inBand(new Uint8Array(200)))
    writer.write(Packet.inBand(hex("01 02"), { transactionId: 3n }))
    writer.commit()
    const reader = readerOf(region, { maxPacketLength: 64 })
    expect(safe(() => reader.read())).toMatchObject({ _tag: "BufferTooSmall" })
    expect(safe(() => reader.skip())).toBe(true)
    expect(asPacket(safe(() => reader.read()))).toMatchObject({ _tag: "InBand", transactionId: 3n })
    expect(safe(() => reader.skip())).toBe(false)
    // a framing error cannot be skipped: there is no next packet to find
    const broken = oneInBand()
    setDataBytes(broken, 4, new Uint8Array([0xff, 0]))
    const stuck = readerOf(broken)
    expectCorrupt(safe(() => stuck.skip()), "len8")
    expect(stuck.pendingBytes).toBe(0)
  })

  it("fewer than 24 bytes available while non-empty", () => {
    const cases: ReadonlyArray<readonly [number, number]> = [
      [0, 8],
      [0, 16],
      [0x100, 0x110],
      [0xff8, 0x8], // wrapped: 16 bytes
      [0xff0, 0x0] // wrapped exactly: 16 bytes
    ]
    for (const [r, w] of cases) {
      const region = allocate(1)
      setWord(region, R, r)
      setWord(region, W, w)
      const reader = readerOf(region)
      expectCorrupt(safe(() => reader.read()), "write_index")
      expectCorrupt(safe(() => reader.peek()), "write_index")
    }
    // exactly 24 with a valid 16-byte packet is fine
    const region = allocate(1)
    const writer = writerOf(region)
    writer.write(Packet.inBand(new Uint8Array(0)))
    writer.commit()
    expect(getWord(region, W)).toBe(24)
    expect(asPacket(safe(() => readerOf(region).read())).payload.length).toBe(0)
  })

  it("a packet longer than maxPacketLength is BufferTooSmall and not consumed", () => {
    const region = allocate(1)
    const writer = writerOf(region)
    writer.write(Packet.inBand(randomBytes(100, 2), { transactionId: 1n })) // len = 120
    writer.write(Packet.inBand(hex("aa"), { transactionId: 2n }))
    writer.commit()
    const small = readerOf(region, { maxPacketLength: 64 })
    const error = safe(() => small.read())
    expect(error).toBeInstanceOf(BufferTooSmall)
    expect(error).toMatchObject({ required: 120, available: 64 })
    expect(safe(() => small.peek())).toBeInstanceOf(BufferTooSmall)
    expect(safe(() => small.read())).toBeInstanceOf(BufferTooSmall)
    expect(small.pendingBytes).toBe(0)
    expect(safe(() => small.commit())).toBe(false)
    expect(getWord(region, R)).toBe(0)
    for (const max of [112, 119]) {
      expect(safe(() => readerOf(region, { maxPacketLength: max }).read())).toMatchObject({
        _tag: "BufferTooSmall",
        required: 120,
        available: max
      })
    }
    const exact = readerOf(region, { maxPacketLength: 120 })
    const got = asPacket(safe(() => exact.read()))
    expect(got.transactionId).toBe(1n)
    expect(got.payload.subarray(0, 100)).toEqual(randomBytes(100, 2))
    expect(asPacket(safe(() => exact.read())).transactionId).toBe(2n)
  })

  it("copy-out: the peer rewriting the ring after the read does not change the decoded packet", () => {
    const region = allocate(1)
    setWord(region, W, 0xff0) // the packet wraps
    setWord(region, R, 0xff0)
    const writer = writerOf(region)
    const packet: Packet.Packet = {
      _tag: "GpaDirect",
      transactionId: 0x77n,
      completionRequested: true,
      ranges: [{ byteCount: 0x100, byteOffset: 0x20, pfns: [0xabc] }],
      payload: randomBytes(40, 3)
    }
    writer.write(packet)
    writer.commit()
    const reader = readerOf(region)
    const got = asPacket(safe(() => reader.read()))
    const snapshot = structuredClone(got)
    // the peer scribbles over every byte of the packet, descriptor included
    for (let i = 0; i < Packet.ringSize(packet); i++) setDataBytes(region, 0xff0 + i, new Uint8Array([0xee]))
    expect(got).toEqual(snapshot)
    expect(got).toEqual({ ...packet, payload: concat(packet.payload) })
    expect(reader.pendingBytes).toBe(Packet.ringSize(packet))
  })
})

// ---------------------------------------------------------------------------------------------
// Corruption robustness
// ---------------------------------------------------------------------------------------------

const GUARD = 0xa5

/** A ring inside a larger buffer, with guard pages before and after it. */
const guarded = (pages: number): { readonly region: Uint8Array; readonly buffer: Uint8Array } => {
  const ringSize = (pages + 1) * PAGE
  const buffer = new Uint8Array(new SharedArrayBuffer(ringSize + 2 * PAGE)).fill(GUARD)
  const region = buffer.subarray(PAGE, PAGE + ringSize)
  expect(safe(() => Ring.initialize(region))).toBeUndefined()
  return { region, buffer }
}
const guardsIntact = (buffer: Uint8Array): boolean => {
  for (let i = 0; i < PAGE; i++) if (buffer[i] !== GUARD || buffer[buffer.length - 1 - i] !== GUARD) return false
  return true
}

const indexArb = FastCheck.oneof(
  { weight: 6, arbitrary: FastCheck.constant(-1) }, // keep what the prefill left
  { weight: 1, arbitrary: FastCheck.nat(3 * 512).map((n) => n * 8) }, // aligned, possibly >= D
  { weight: 1, arbitrary: FastCheck.nat(3 * PAGE + 16) }, // often misaligned
  { weight: 1, arbitrary: u32Arb }
)

const corruptionArb = FastCheck.record({
  pages: FastCheck.integer({ min: 1, max: 3 }),
  start: FastCheck.nat(3 * 512 - 1),
  prefill: FastCheck.array(packetSpecArb, { minLength: 1, maxLength: 10 }),
  randomData: FastCheck.oneof(
    { weight: 5, arbitrary: FastCheck.constant(null) },
    { weight: 1, arbitrary: FastCheck.nat() }
  ),
  mutations: FastCheck.array(
    FastCheck.record({ packet: FastCheck.nat(12), offset: FastCheck.nat(40), value: FastCheck.nat(255), anywhere: FastCheck.nat() }),
    { maxLength: 6 }
  ),
  w: indexArb,
  r: indexArb,
  mask: FastCheck.oneof(FastCheck.constantFrom(0, 1), u32Arb),
  pending: FastCheck.oneof(FastCheck.constant(0), FastCheck.nat(3 * PAGE), u32Arb),
  features: FastCheck.oneof(FastCheck.constantFrom(0, 1), u32Arb),
  readerOps: FastCheck.array(FastCheck.constantFrom("read", "read", "read", "peek", "commit", "revert", "unmask", "mask"), {
    minLength: 4,
    maxLength: 64
  }),
  maxPacketLength: FastCheck.option(FastCheck.integer({ min: 0, max: 4096 }), { freq: 2 }),
  writerOps: FastCheck.array(
    FastCheck.oneof(
      packetSpecArb.map((p) => ({ op: "write" as const, p })),
      FastCheck.constantFrom(
        { op: "commit" as const },
        { op: "revert" as const },
        { op: "clear" as const },
        { op: "free" as const }
      ),
      FastCheck.nat(5 * PAGE).map((n) => ({ op: "request" as const, n }))
    ),
    { maxLength: 24 }
  )
})

describe("corruption: random control words and data never throw, never escape the region", () => {
  it("property: every call returns a packet, undefined, a boolean/number or a typed VmbusError", () => {
    FastCheck.assert(
      FastCheck.property(corruptionArb, (c) => {
        const { buffer, region } = guarded(c.pages)
        const size = c.pages * PAGE
        const k = (c.start % (size / 8)) * 8
        setWord(region, W, k)
        setWord(region, R, k)
        // prefill with valid packets, then corrupt
        const starts: Array<number> = []
        const prefill = writerOf(region)
        for (const spec of c.prefill) {
          const at = (getWord(region, W) + prefill.pendingBytes) % size
          if (safe(() => prefill.write(makePacket(spec))) === undefined) starts.push(at)
        }
        prefill.commit()
        if (c.randomData !== null) region.set(randomBytes(size, c.randomData), PAGE)
        for (const m of c.mutations) {
          const at = starts.length > 0 && m.packet < starts.length ? starts[m.packet]! + m.offset : m.anywhere
          region[PAGE + (at % size)] = m.value
        }
        if (c.w !== -1) setWord(region, W, c.w)
        if (c.r !== -1) setWord(region, R, c.r)
        setWord(region, MASK, c.mask)
        setWord(region, PENDING, c.pending)
        setWord(region, FEATURES, c.features)

        const w0 = getWord(region, W)
        const r0 = getWord(region, R)
        const indicesValid = w0 < size && w0 % 8 === 0 && r0 < size && r0 % 8 === 0
        const avail0 = indicesValid ? readable(w0, r0, size) : 0

        // --- reader phase (bounded) ---
        const attached = safe(() =>
          Ring.IncomingRing.attach(region, c.maxPacketLength === null ? undefined : { maxPacketLength: c.maxPacketLength })
        )
        if (attached instanceof Ring.IncomingRing) {
          const reader = attached
          for (const op of c.readerOps) {
            const cursor = (reader.readIndex + reader.pendingBytes) % size
            let result: unknown
            switch (op) {
              case "read":
                result = safe(() => reader.read())
                break
              case "peek":
                result = safe(() => reader.peek())
                break
              case "commit":
                result = safe(() => reader.commit())
                expect(typeof result).toBe("boolean")
                continue
              case "revert":
                safe(() => reader.revert())
                continue
              case "mask":
                safe(() => reader.mask())
                continue
              case "unmask":
                result = safe(() => reader.unmask())
                expect(typeof result === "boolean" || result instanceof RingCorrupt).toBe(true)
                continue
            }
            if (result === undefined) continue
            if (isVmbusError(result)) {
              expect(["RingCorrupt", "BufferTooSmall"]).toContain(result._tag)
              continue
            }
            expect(isPacket(result)).toBe(true)
            // the packet lies within [r0, w0) and its payload is the ring's bytes at the descriptor's offset
            expect(indicesValid).toBe(true)
            const descriptor = new DataView(dataBytes(region, cursor, 8).buffer)
            const offset = descriptor.getUint16(2, true) * 8
            const length = descriptor.getUint16(4, true) * 8
            const packet = result as Packet.Packet
            expect(sameBytes(packet.payload, dataBytes(region, cursor + offset, length - offset))).toBe(true)
            if (op === "read") {
              expect(reader.pendingBytes).toBeGreaterThan(0)
              const consumed = readable((reader.readIndex + reader.pendingBytes) % size, r0, size)
              expect(consumed).toBeLessThanOrEqual(avail0)
            }
          }
        } else {
          expectCorrupt(attached, "read_index")
        }
        expect(getWord(region, W)).toBe(w0) // the reader never writes the writer's index
        expect(guardsIntact(buffer)).toBe(true)

        // --- writer phase (bounded) ---
        const w1 = getWord(region, W)
        const r1 = getWord(region, R)
        const unreadValid = w1 < size && w1 % 8 === 0 && r1 < size && r1 % 8 === 0
        const unread = unreadValid ? dataBytes(region, r1, readable(w1, r1, size)) : new Uint8Array(0)
        const writer = safe(() => Ring.OutgoingRing.attach(region))
        if (writer instanceof Ring.OutgoingRing) {
          for (const op of c.writerOps) {
            let result: unknown
            switch (op.op) {
              case "write":
                result = safe(() => writer.write(makePacket(op.p)))
                expect(result === undefined || isVmbusError(result)).toBe(true)
                if (result !== undefined) {
                  expect(["RingFull", "RingCorrupt", "PacketTooLarge"]).toContain((result as { _tag: string })._tag)
                }
                break
              case "commit":
                expect(typeof safe(() => writer.commit())).toBe("boolean")
                break
              case "revert":
                safe(() => writer.revert())
                break
              case "clear":
                safe(() => writer.clearSpaceRequest())
                break
              case "free":
                result = safe(() => writer.freeBytes())
                expect(typeof result === "number" || result instanceof RingCorrupt).toBe(true)
                break
              case "request":
                result = safe(() => writer.requestSpace(op.n))
                expect(typeof result === "boolean" || result instanceof RingCorrupt).toBe(true)
                {
                  const p = getWord(region, PENDING)
                  if (result !== undefined && typeof result === "boolean") {
                    expect(p % 8).toBe(0)
                    expect(p).toBeLessThanOrEqual(size - 8)
                  }
                }
                break
            }
          }
          // never overwrites unread data
          if (unreadValid) {
            expect(sameBytes(dataBytes(region, r1, unread.length), unread), "unread bytes untouched").toBe(true)
          }
          const w2 = getWord(region, W)
          expect(w2 < size && w2 % 8 === 0).toBe(true)
        } else {
          expectCorrupt(writer, "write_index")
        }
        expect(getWord(region, R)).toBe(r1) // the writer never writes the reader's index
        expect(guardsIntact(buffer)).toBe(true)
      }),
      { numRuns: 300 }
    )
  })
})

// ---------------------------------------------------------------------------------------------
// Geometry, initialisation, strict mode
// ---------------------------------------------------------------------------------------------

describe("geometry and strict mode", () => {
  it("bad geometry is InvalidParameter everywhere", () => {
    for (const n of [0, 8, 4096, 4097, 8191, 8193, 10000, 3 * PAGE + 100]) {
      const bytes = new Uint8Array(new SharedArrayBuffer(n))
      for (const result of [
        safe(() => Ring.OutgoingRing.attach(bytes)),
        safe(() => Ring.IncomingRing.attach(bytes)),
        safe(() => Ring.initialize(bytes)),
        safe(() => Ring.inspect(bytes)),
        safe(() => Ring.allocate(n))
      ]) {
        expect(result).toBeInstanceOf(InvalidParameter)
        expect(isVmbusError(result)).toBe(true)
      }
    }
    for (const n of [-8192, 8192.5, Number.NaN, Number.POSITIVE_INFINITY]) {
      expect(safe(() => Ring.allocate(n))).toBeInstanceOf(InvalidParameter)
    }
    // misaligned start
    const unaligned = new Uint8Array(new SharedArrayBuffer(3 * PAGE), 4, 2 * PAGE)
    expect(safe(() => Ring.OutgoingRing.attach(unaligned))).toBeInstanceOf(InvalidParameter)
    expect(safe(() => Ring.IncomingRing.attach(unaligned))).toBeInstanceOf(InvalidParameter)
    // ArrayBuffer / SharedArrayBuffer inputs are accepted
    expect(safe(() => Ring.OutgoingRing.attach(new ArrayBuffer(2 * PAGE)))).toBeInstanceOf(Ring.OutgoingRing)
    expect(safe(() => Ring.IncomingRing.attach(new SharedArrayBuffer(2 * PAGE)))).toBeInstanceOf(Ring.IncomingRing)
  })

  it("allocate initialises the control page: zero, feature bit 0 set, indices 0; D is not a power of two", () => {
    const shared = allocate(3)
    expect(shared.buffer).toBeInstanceOf(SharedArrayBuffer)
    const plain = safe(() => Ring.allocate(2 * PAGE, { shared: false }))
    expect(plain).toBeInstanceOf(Uint8Array)
    expect((plain as Uint8Array).buffer).toBeInstanceOf(ArrayBuffer)
    for (const region of [shared, plain as Uint8Array]) {
      const expected = new Uint8Array(PAGE)
      expected[FEATURES] = 1
      expect(sameBytes(region.subarray(0, PAGE), expected)).toBe(true)
    }
    expect(safe(() => Ring.inspect(shared))).toEqual({
      dataSize: 3 * PAGE,
      writeIndex: 0,
      readIndex: 0,
      interruptMask: 0,
      pendingSendSize: 0,
      featureBits: 1,
      bytesToRead: 0,
      bytesFree: 3 * PAGE
    })
    // initialize resets a dirty control page
    shared.fill(0xff, 0, PAGE)
    expect(safe(() => Ring.initialize(shared))).toBeUndefined()
    expect(getWord(shared, W)).toBe(0)
    expect(getWord(shared, MASK)).toBe(0)
    expect(getWord(shared, FEATURES)).toBe(1)
    expect(getWord(shared, 0x10)).toBe(0)
    // inspect reports invalid indices without computing sizes
    setWord(shared, W, 0x3001)
    expect(safe(() => Ring.inspect(shared))).toMatchObject({ writeIndex: 0x3001, bytesToRead: undefined, bytesFree: undefined })
  })

  it("strict mode rejects a packet with ring size >= D − 8; default accepts D − 8 into an empty ring", () => {
    const size = PAGE
    const payloadFor = (total: number) => total - 8 - 16
    // default mode: D − 8 accepted into an empty ring, leaving exactly one quadword
    {
      const region = allocate(1)
      const writer = writerOf(region)
      expect(safe(() => writer.write(Packet.inBand(new Uint8Array(payloadFor(size - 8)))))).toBeUndefined()
      expect(writer.commit()).toBe(true)
      expect(getWord(region, W)).toBe(size - 8)
      expect(safe(() => writer.freeBytes())).toBe(8)
      const reader = readerOf(region)
      expect(asPacket(safe(() => reader.read())).payload.length).toBe(payloadFor(size - 8))
      // a packet of D bytes never fits
      expect(safe(() => writer.write(Packet.inBand(new Uint8Array(payloadFor(size)))))).toBeInstanceOf(PacketTooLarge)
      // D − 8 into a non-empty ring is RingFull, not PacketTooLarge
      reader.commit()
      writer.write(Packet.inBand(new Uint8Array(0)))
      expect(safe(() => writer.write(Packet.inBand(new Uint8Array(payloadFor(size - 8)))))).toBeInstanceOf(RingFull)
      expect(writer.maxRingPacketSize).toBe(size - 8)
    }
    // strict mode (OpenVMM): total >= D − 8 rejected, D − 16 accepted
    {
      const region = allocate(1)
      const writer = writerOf(region, { strict: true })
      expect(writer.maxRingPacketSize).toBe(size - 16)
      const before = region.slice()
      const rejected = safe(() => writer.write(Packet.inBand(new Uint8Array(payloadFor(size - 8)))))
      expect(rejected).toBeInstanceOf(PacketTooLarge)
      expect(rejected).toMatchObject({ size: size - 8, max: size - 16 })
      expect(sameBytes(region, before)).toBe(true)
      expect(safe(() => writer.write(Packet.inBand(new Uint8Array(payloadFor(size - 16)))))).toBeUndefined()
      expect(writer.commit()).toBe(true)
      expect(getWord(region, W)).toBe(size - 16)
    }
    // invalid packets are InvalidParameter, not thrown
    const writer = writerOf(allocate(1))
    expect(safe(() => writer.write(Packet.inBand(new Uint8Array(0), { transactionId: -1n })))).toBeInstanceOf(
      InvalidParameter
    )
    expect(
      safe(() => writer.write({ _tag: "GpaDirect", transactionId: 0n, completionRequested: false, ranges: [], payload: new Uint8Array(0) }))
    ).toBeInstanceOf(InvalidParameter)
  })
})

// Packet encode/decode (wire-format.md §2, hardening.md §1.2): the four supported kinds round-trip,
// flags survive on every kind and unknown types decode as Unknown (issue 8, C13/C14: DPDK keeps both),
// range arrays must fit the header, size helpers agree
// with the encoder, odd payload lengths round up. Errors are values: nothing here may throw.
import { describe, expect, it } from "@effect/vitest"
import { FastCheck } from "effect"
import * as Packet from "../src/Packet.js"
import { InvalidParameter, isVmbusError, MalformedPacket, RingCorrupt } from "../src/VmbusError.js"

const hex = (text: string): Uint8Array =>
  Uint8Array.from(text.trim().split(/\s+/).map((b) => parseInt(b, 16)))

const encodeOk = (packet: Packet.Packet): Uint8Array => {
  const bytes = Packet.encode(packet)
  if (!(bytes instanceof Uint8Array)) throw new Error(`encode failed: ${bytes.message}`)
  return bytes
}

const decodeOk = (bytes: Uint8Array): Packet.Packet => {
  const packet = Packet.decode(bytes)
  if (packet instanceof RingCorrupt) throw new Error(`decode failed: ${packet.message}`)
  return packet
}

/** Asserts `decode` returns RingCorrupt (never throws) and returns it. */
const expectCorrupt = (bytes: Uint8Array, field?: string): RingCorrupt => {
  let result: unknown
  expect(() => {
    result = Packet.decode(bytes)
  }).not.toThrow()
  expect(result).toBeInstanceOf(RingCorrupt)
  const error = result as RingCorrupt
  expect(isVmbusError(error)).toBe(true)
  if (field !== undefined) expect(error.field).toBe(field)
  return error
}

const padded = (payload: Uint8Array, header: number): Uint8Array => {
  const length = Math.ceil((header + payload.length) / 8) * 8 - header
  const out = new Uint8Array(length)
  out.set(payload)
  return out
}

const pagesFor = (byteOffset: number, byteCount: number): number => Math.ceil((byteOffset + byteCount) / 4096)

// ---------------------------------------------------------------------------------------------
// Arbitraries
// ---------------------------------------------------------------------------------------------

const payloadArb = FastCheck.uint8Array({ minLength: 0, maxLength: 300 })
const u64Arb = FastCheck.bigInt({ min: 0n, max: 0xffff_ffff_ffff_ffffn })

const gpaRangeArb: FastCheck.Arbitrary<Packet.GpaRange> = FastCheck.record({
  byteOffset: FastCheck.integer({ min: 0, max: 0xfff }),
  byteCount: FastCheck.integer({ min: 1, max: 0x6000 }),
  seed: FastCheck.integer({ min: 0, max: 0xf_ffff_ffff })
}).map(({ byteCount, byteOffset, seed }) => ({
  byteCount,
  byteOffset,
  pfns: Array.from({ length: pagesFor(byteOffset, byteCount) }, (_, i) => seed + i)
}))

const knownPacketArb: FastCheck.Arbitrary<Packet.Packet> = FastCheck.oneof(
  FastCheck.record({ payload: payloadArb, id: u64Arb, rc: FastCheck.boolean() }).map(({ id, payload, rc }) =>
    Packet.inBand(payload, { transactionId: id, completionRequested: rc })
  ),
  FastCheck.record({ payload: payloadArb, id: u64Arb }).map(({ id, payload }) => Packet.completion(id, payload)),
  FastCheck.record({
    payload: payloadArb,
    id: u64Arb,
    rc: FastCheck.boolean(),
    setId: FastCheck.integer({ min: 0, max: 0xffff }),
    owns: FastCheck.boolean(),
    ranges: FastCheck.array(
      FastCheck.record({ byteCount: FastCheck.nat(0xffff_ffff), byteOffset: FastCheck.nat(0xffff_ffff) }),
      { maxLength: 6 }
    )
  }).map(({ id, owns, payload, ranges, rc, setId }): Packet.Packet => ({
    _tag: "TransferPages",
    transactionId: id,
    completionRequested: rc,
    transferPageSetId: setId,
    senderOwnsSet: owns,
    ranges,
    payload
  })),
  FastCheck.record({
    payload: payloadArb,
    id: u64Arb,
    rc: FastCheck.boolean(),
    ranges: FastCheck.array(gpaRangeArb, { minLength: 1, maxLength: 4 })
  }).map(({ id, payload, ranges, rc }): Packet.Packet => ({
    _tag: "GpaDirect",
    transactionId: id,
    completionRequested: rc,
    ranges,
    payload
  }))
)

const unknownTypeArb = FastCheck.integer({ min: 0, max: 0xffff }).filter((t) => ![0x6, 0x7, 0x9, 0xb].includes(t))

const unknownPacketArb: FastCheck.Arbitrary<Packet.Packet> = FastCheck.record({
  type: unknownTypeArb,
  id: u64Arb,
  rc: FastCheck.boolean(),
  headerWords: FastCheck.integer({ min: 0, max: 4 }),
  fill: FastCheck.integer({ min: 0, max: 255 }),
  payload: payloadArb
}).map(({ fill, headerWords, id, payload, rc, type }) => ({
  _tag: "Unknown",
  type,
  transactionId: id,
  completionRequested: rc,
  header: new Uint8Array(headerWords * 8).fill(fill),
  payload
}))

/** Any packet, some with flag bits beyond bit 0 (completions: any bits). */
const packetArb: FastCheck.Arbitrary<Packet.Packet> = FastCheck.tuple(
  FastCheck.oneof(knownPacketArb, unknownPacketArb),
  FastCheck.option(FastCheck.integer({ min: 0, max: 0xffff }), { nil: undefined })
).map(([packet, flags]) => {
  if (flags === undefined) return packet
  if (packet._tag === "Completion") return { ...packet, flags }
  return { ...packet, flags: packet.completionRequested ? flags : flags & ~1 }
})

/** What `decode` must give back for `packet`: the same fields, payload padded with zeros. */
const expectedDecoded = (input: Packet.Packet): Packet.Packet => {
  const raw = Packet.wireFlags(input)
  const extra = input._tag === "Completion" ? raw !== 0 : (raw & ~1) !== 0
  const { flags: _flags, ...rest } = input
  const packet = (extra ? { ...rest, flags: raw } : rest) as Packet.Packet
  const payload = padded(packet.payload, Packet.headerSize(packet))
  switch (packet._tag) {
    case "Unknown":
      return { ...packet, header: packet.header.slice(), payload }
    case "InBand":
      return { ...packet, payload }
    case "Completion":
      return { ...packet, payload }
    case "TransferPages":
      return { ...packet, ranges: packet.ranges.map((r) => ({ byteCount: r.byteCount, byteOffset: r.byteOffset })), payload }
    case "GpaDirect":
      return { ...packet, ranges: packet.ranges.map((r) => ({ ...r, pfns: [...r.pfns] })), payload }
  }
}

// ---------------------------------------------------------------------------------------------

describe("Packet encoding (wire-format §2)", () => {
  it("in-band packet matches TV1 bytes and round-trips", () => {
    const packet = Packet.inBand(hex("01 02 03 04 05"), { transactionId: 0x1122334455667788n, completionRequested: true })
    const bytes = encodeOk(packet)
    expect(bytes).toEqual(hex(`
      06 00 02 00 03 00 01 00
      88 77 66 55 44 33 22 11
      01 02 03 04 05 00 00 00`))
    expect(decodeOk(bytes)).toEqual({
      _tag: "InBand",
      transactionId: 0x1122334455667788n,
      completionRequested: true,
      payload: hex("01 02 03 04 05 00 00 00")
    })
  })

  it("completion matches TV2 bytes and round-trips", () => {
    const bytes = encodeOk(Packet.completion(0x1122334455667788n, hex("01 00 00 00")))
    expect(bytes).toEqual(hex(`
      0b 00 02 00 03 00 00 00
      88 77 66 55 44 33 22 11
      01 00 00 00 00 00 00 00`))
    expect(decodeOk(bytes)).toEqual({
      _tag: "Completion",
      transactionId: 0x1122334455667788n,
      payload: hex("01 00 00 00 00 00 00 00")
    })
  })

  it("GPA direct matches TV5 bytes and round-trips", () => {
    const packet: Packet.Packet = {
      _tag: "GpaDirect",
      transactionId: 7n,
      completionRequested: true,
      ranges: [{ byteCount: 0x1ff0, byteOffset: 0x10, pfns: [0x12345, 0x12346] }],
      payload: hex("de ad be ef")
    }
    const bytes = encodeOk(packet)
    expect(bytes).toEqual(hex(`
      09 00 06 00 07 00 01 00  07 00 00 00 00 00 00 00
      00 00 00 00 01 00 00 00
      f0 1f 00 00 10 00 00 00
      45 23 01 00 00 00 00 00  46 23 01 00 00 00 00 00
      de ad be ef 00 00 00 00`))
    expect(decodeOk(bytes)).toEqual(expectedDecoded(packet))
    expect(Packet.validateGpaRanges((decodeOk(bytes) as Packet.GpaDirectPacket).ranges)).toBeUndefined()
  })

  it("transfer pages match TV6 bytes and round-trip", () => {
    const packet: Packet.Packet = {
      _tag: "TransferPages",
      transactionId: 0x42n,
      completionRequested: true,
      transferPageSetId: 1,
      senderOwnsSet: false,
      ranges: [
        { byteCount: 0x5ea, byteOffset: 0 },
        { byteCount: 0x100, byteOffset: 0x1000 }
      ],
      payload: new Uint8Array(0)
    }
    const bytes = encodeOk(packet)
    expect(bytes).toEqual(hex(`
      07 00 05 00 05 00 01 00  42 00 00 00 00 00 00 00
      01 00 00 00 02 00 00 00
      ea 05 00 00 00 00 00 00  00 01 00 00 00 10 00 00`))
    expect(decodeOk(bytes)).toEqual(expectedDecoded(packet))
  })

  it("property: every kind round-trips; size helpers agree with encode", () => {
    FastCheck.assert(
      FastCheck.property(packetArb, (packet) => {
        const bytes = encodeOk(packet)
        expect(bytes.length % 8).toBe(0)
        expect(bytes.length).toBe(Packet.packetLength(packet))
        expect(Packet.ringSize(packet)).toBe(bytes.length + 8)
        // offset8 / len8 in the descriptor
        const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
        expect(view.getUint16(2, true) * 8).toBe(Packet.headerSize(packet))
        expect(view.getUint16(4, true) * 8).toBe(bytes.length)
        if (packet._tag === "InBand" || packet._tag === "Completion") {
          expect(Packet.inBandRingSize(packet.payload.length)).toBe(bytes.length + 8)
        }
        if (packet._tag === "GpaDirect") {
          expect(Packet.gpaDirectRingSize(packet.ranges.map((r) => r.pfns.length), packet.payload.length)).toBe(
            bytes.length + 8
          )
          expect(Packet.validateGpaRanges(packet.ranges)).toBeUndefined()
        }
        // padding is zero
        expect(bytes.subarray(Packet.headerSize(packet) + packet.payload.length).every((b) => b === 0)).toBe(true)
        expect(decodeOk(bytes)).toEqual(expectedDecoded(packet))
      }),
      { numRuns: 300 }
    )
  })

  it("odd payload lengths round up, never down", () => {
    for (let n = 0; n <= 40; n++) {
      const bytes = encodeOk(Packet.inBand(new Uint8Array(n).fill(0xaa)))
      const up = Math.ceil((16 + n) / 8) * 8
      expect(bytes.length).toBe(up)
      expect(bytes.length).toBeGreaterThanOrEqual(16 + n)
      expect(Packet.inBandRingSize(n)).toBe(up + 8)
      // every payload byte is present
      expect(bytes.subarray(16, 16 + n).every((b) => b === 0xaa)).toBe(true)
    }
    // the tools/hv pitfall: 9 bytes -> 25 -> 32 (rounding down would give 24 and lose a byte)
    expect(encodeOk(Packet.inBand(new Uint8Array(9))).length).toBe(32)
    expect(Packet.inBandRingSize(9)).toBe(40)
    expect(Packet.inBandRingSize(8)).toBe(32)
    expect(Packet.inBandRingSize(0)).toBe(24)
    expect(Packet.gpaDirectRingSize([2], 4)).toBe(64) // TV5: len8 = 7
    expect(Packet.gpaDirectRingSize([1], 1)).toBe(16 + 8 + 16 + 8 + 8)
  })
})

describe("Packet decoding rejects what no correct writer produces", () => {
  const base = (): Uint8Array => encodeOk(Packet.inBand(hex("01 02 03 04 05 06 07 08"), { transactionId: 9n }))

  it("unknown packet types decode as Unknown, header and payload kept (C14); bytes round-trip", () => {
    const unsupported = [0x0, 0x1, 0x2, 0x3, 0x4, 0x5, 0x8, 0xa, 0xc, 0xd, 0xe, 0xf, 0x10, 0xff, 0x100, 0xffff]
    for (const type of unsupported) {
      const bytes = base()
      bytes[0] = type & 0xff
      bytes[1] = type >>> 8
      const packet = decodeOk(bytes)
      expect(packet).toEqual({
        _tag: "Unknown",
        type,
        transactionId: 9n,
        completionRequested: false,
        header: new Uint8Array(0),
        payload: hex("01 02 03 04 05 06 07 08")
      })
      expect(encodeOk(packet)).toEqual(bytes)
    }
    // a type-specific header of its own (offset8 = 3) stays apart from the payload
    const withHeader = base()
    withHeader[0] = 0x8
    withHeader[2] = 3
    const packet = decodeOk(withHeader) as Packet.UnknownPacket
    expect(packet.header).toEqual(hex("01 02 03 04 05 06 07 08"))
    expect(packet.payload.length).toBe(0)
    expect(encodeOk(packet)).toEqual(withHeader)
    FastCheck.assert(
      FastCheck.property(unknownTypeArb, FastCheck.integer({ min: 0, max: 0xffff }), (type, flags) => {
        const bytes = base()
        bytes[0] = type & 0xff
        bytes[1] = type >>> 8
        bytes[6] = flags & 0xff
        bytes[7] = flags >>> 8
        const decoded = decodeOk(bytes)
        expect(decoded._tag).toBe("Unknown")
        expect(Packet.wireFlags(decoded)).toBe(flags)
        expect(encodeOk(decoded)).toEqual(bytes)
      }),
      { numRuns: 200 }
    )
    // an Unknown packet cannot claim a known type, and its header is whole 8-byte words
    const bad = (packet: Partial<Packet.UnknownPacket>) =>
      Packet.encode({ _tag: "Unknown", type: 0x8, transactionId: 0n, completionRequested: false, header: new Uint8Array(0), payload: new Uint8Array(0), ...packet })
    for (const type of [0x6, 0x7, 0x9, 0xb, -1, 0x10000, 1.5]) {
      expect(bad({ type })).toMatchObject({ _tag: "InvalidParameter", field: "type" })
    }
    expect(bad({ header: new Uint8Array(4) })).toMatchObject({ _tag: "InvalidParameter", field: "header" })
    // the supported four decode
    for (const type of [0x6, 0x7, 0x9, 0xb]) {
      const bytes = encodeOk(Packet.inBand(new Uint8Array(24)))
      bytes[0] = type
      if (type === 0x7) {
        bytes[2] = 3 // offset8 = 3, range_cnt 0 (bytes 20..23 are zero)
      }
      if (type === 0x9) {
        // one range {byteCount 1, byteOffset 0} + 1 PFN: offset8 = 5
        bytes[2] = 5
        new DataView(bytes.buffer).setUint32(20, 1, true)
        new DataView(bytes.buffer).setUint32(24, 1, true)
      }
      expect(Packet.decode(bytes)).not.toBeInstanceOf(RingCorrupt)
    }
  })

  it("flag bits beyond bit 0 are kept in flags on every kind, never corrupt (C13)", () => {
    for (let bit = 1; bit < 16; bit++) {
      for (const low of [0, 1]) {
        const bytes = base()
        const flags = (1 << bit) | low
        bytes[6] = flags & 0xff
        bytes[7] = flags >>> 8
        const packet = decodeOk(bytes) as Packet.InBandPacket
        expect(packet.flags).toBe(flags)
        expect(packet.completionRequested).toBe(low === 1)
        expect(Packet.unknownFlagBits(packet)).toBe(1 << bit)
        expect(encodeOk(packet)).toEqual(bytes)
      }
    }
    const ok = base()
    ok[6] = 1
    const plain = decodeOk(ok) as Packet.InBandPacket
    expect(plain.completionRequested).toBe(true)
    expect("flags" in plain).toBe(false)
    // completions: any flags, written and read back (DPDK rte_vmbus_chan_send writes any flags on any type)
    for (const flags of [0x1, 0x2, 0x8000, 0xffff]) {
      const bytes = encodeOk(Packet.completion(3n, hex("aa"), { flags }))
      expect(new DataView(bytes.buffer).getUint16(6, true)).toBe(flags)
      expect(decodeOk(bytes)).toEqual({ _tag: "Completion", transactionId: 3n, payload: hex("aa 00 00 00 00 00 00 00"), flags })
      expect(Packet.unknownFlagBits(decodeOk(bytes))).toBe(0)
    }
    // flags must be a u16, and bit 0 cannot contradict completionRequested
    expect(Packet.encode(Packet.inBand(new Uint8Array(0), { flags: 0x10000 }))).toMatchObject({ _tag: "InvalidParameter", field: "flags" })
    expect(Packet.encode(Packet.inBand(new Uint8Array(0), { flags: 1 }))).toMatchObject({ _tag: "InvalidParameter", field: "flags" })
    expect(Packet.encode(Packet.completion(1n, new Uint8Array(0), { flags: -1 }))).toMatchObject({ _tag: "InvalidParameter", field: "flags" })
  })

  it("offset8 < 2, offset8 > len8, len8 mismatch, short buffers are RingCorrupt", () => {
    for (const off8 of [0, 1]) {
      const bytes = base()
      bytes[2] = off8
      expectCorrupt(bytes, "offset8")
    }
    const beyond = base()
    beyond[2] = 4 // len8 = 3
    expectCorrupt(beyond, "offset8")
    const mismatch = base()
    mismatch[4] = 4
    expectCorrupt(mismatch, "len8")
    expectCorrupt(new Uint8Array(0), "len8")
    expectCorrupt(new Uint8Array(8), "len8")
    expectCorrupt(base().subarray(0, 20), "len8")
  })

  it("GPA direct: zero ranges, missing sub-header, ranges overflowing offset8 are RingCorrupt", () => {
    const packet: Packet.Packet = {
      _tag: "GpaDirect",
      transactionId: 7n,
      completionRequested: true,
      ranges: [{ byteCount: 0x1ff0, byteOffset: 0x10, pfns: [0x12345, 0x12346] }],
      payload: hex("de ad be ef")
    }
    const good = encodeOk(packet)
    const set32 = (b: Uint8Array, at: number, v: number) => new DataView(b.buffer, b.byteOffset).setUint32(at, v, true)

    const zero = good.slice()
    set32(zero, 20, 0)
    expectCorrupt(zero, "range_cnt")

    const noHeader = good.slice()
    noHeader[2] = 2
    expectCorrupt(noHeader, "offset8")

    const twoRanges = good.slice() // second range header would start at offset8*8 = 48
    set32(twoRanges, 20, 2)
    expectCorrupt(twoRanges, "range_cnt")

    const hugeCount = good.slice()
    set32(hugeCount, 20, 0xffff_ffff)
    expectCorrupt(hugeCount, "range_cnt")

    const morePfns = good.slice() // 0x10 + 0x2FF0 = 3 pages, only 2 PFNs present before offset8
    set32(morePfns, 24, 0x2ff0)
    expectCorrupt(morePfns, "gpa_range[0].pfn_array")

    const hugePages = good.slice()
    set32(hugePages, 24, 0xffff_ffff)
    set32(hugePages, 28, 0xffff_ffff)
    expectCorrupt(hugePages, "gpa_range[0].pfn_array")

    // encode refuses a GPA-direct packet without ranges (InvalidParameter, not thrown)
    expect(Packet.encode({ ...packet, ranges: [] })).toBeInstanceOf(InvalidParameter)
  })

  it("transfer pages: range count beyond the header is RingCorrupt", () => {
    const packet: Packet.Packet = {
      _tag: "TransferPages",
      transactionId: 0x42n,
      completionRequested: true,
      transferPageSetId: 1,
      senderOwnsSet: false,
      ranges: [
        { byteCount: 0x5ea, byteOffset: 0 },
        { byteCount: 0x100, byteOffset: 0x1000 }
      ],
      payload: hex("aa bb")
    }
    const good = encodeOk(packet)
    const view = new DataView(good.buffer)
    expect(view.getUint32(20, true)).toBe(2)
    for (const count of [3, 4, 100, 0xffff_ffff]) {
      const bad = good.slice()
      new DataView(bad.buffer).setUint32(20, count, true)
      expectCorrupt(bad, "range_cnt")
    }
    const noHeader = good.slice()
    noHeader[2] = 2
    expectCorrupt(noHeader, "offset8")
    // fewer ranges than the header has room for is fine (the extra bytes are ignored)
    const fewer = good.slice()
    new DataView(fewer.buffer).setUint32(20, 1, true)
    const decoded = decodeOk(fewer) as Packet.TransferPagesPacket
    expect(decoded.ranges).toEqual([{ byteCount: 0x5ea, byteOffset: 0 }])
  })

  it("validateGpaRanges rejects byteCount 0, byteOffset > 0xFFF and wrong PFN counts (MalformedPacket)", () => {
    expect(Packet.validateGpaRanges([{ byteCount: 0x10, byteOffset: 0, pfns: [1] }])).toBeUndefined()
    expect(Packet.validateGpaRanges([{ byteCount: 1, byteOffset: 0xfff, pfns: [1] }])).toBeUndefined()
    const cases: Array<ReadonlyArray<Packet.GpaRange>> = [
      [{ byteCount: 0, byteOffset: 0, pfns: [] }],
      [{ byteCount: 0, byteOffset: 0x10, pfns: [1] }],
      [{ byteCount: 1, byteOffset: 0x1000, pfns: [1, 2] }],
      [{ byteCount: 1, byteOffset: 0xffff_ffff, pfns: [] }],
      [{ byteCount: 0x1000, byteOffset: 1, pfns: [1] }],
      [{ byteCount: 0x10, byteOffset: 0, pfns: [1] }, { byteCount: 0, byteOffset: 0, pfns: [] }]
    ]
    for (const ranges of cases) {
      const error = Packet.validateGpaRanges(ranges)
      expect(error).toBeInstanceOf(MalformedPacket)
      expect(isVmbusError(error)).toBe(true)
    }
    expect(Packet.validateGpaRanges(cases[5]!)?.field).toBe("gpa_range[1]")
    // a received packet whose range has byteCount 0 decodes (framing is fine) but fails validation
    const bytes = encodeOk({
      _tag: "GpaDirect",
      transactionId: 1n,
      completionRequested: false,
      ranges: [{ byteCount: 1, byteOffset: 0, pfns: [5] }],
      payload: new Uint8Array(0)
    })
    new DataView(bytes.buffer).setUint32(24, 0, true) // byteCount 0 -> 0 pages needed
    const decoded = decodeOk(bytes) as Packet.GpaDirectPacket
    expect(Packet.validateGpaRanges(decoded.ranges)).toBeInstanceOf(MalformedPacket)
  })

  it("property: random bytes never throw; the result is a packet or a RingCorrupt", () => {
    FastCheck.assert(
      FastCheck.property(
        FastCheck.integer({ min: 0, max: 12 }),
        FastCheck.uint8Array({ minLength: 16, maxLength: 16 }),
        FastCheck.uint8Array({ minLength: 0, maxLength: 200 }),
        (extra8, descriptor, rest) => {
          const bytes = new Uint8Array(16 + extra8 * 8)
          bytes.set(descriptor)
          bytes.set(rest.subarray(0, bytes.length - 16), 16)
          // make len8 consistent half the time so deeper checks are reached
          if ((descriptor[0]! & 1) === 0) {
            bytes[4] = bytes.length / 8
            bytes[5] = 0
            bytes[2] = descriptor[2]! % (bytes.length / 8 + 2)
            bytes[3] = 0
            bytes[6] &= 1
            bytes[7] = 0
            bytes[0] = [6, 7, 9, 11][descriptor[1]! & 3]!
            bytes[1] = 0
          }
          let result: unknown
          expect(() => {
            result = Packet.decode(bytes)
          }).not.toThrow()
          if (result instanceof RingCorrupt) return
          expect(result).toHaveProperty("_tag")
          const packet = result as Packet.Packet
          expect(["InBand", "Completion", "TransferPages", "GpaDirect"]).toContain(packet._tag)
          expect(Packet.headerSize(packet)).toBeLessThanOrEqual(bytes.length)
        }
      ),
      { numRuns: 500 }
    )
  })
})

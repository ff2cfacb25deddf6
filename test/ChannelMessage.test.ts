import { describe, it } from "@effect/vitest"
import { assertTrue, deepStrictEqual, strictEqual } from "@effect/vitest/utils"
import * as Either from "effect/Either"
import * as FastCheck from "effect/FastCheck"
import * as CM from "../src/ChannelMessage.js"
import type { GpadlTooLarge, InvalidParameter, MalformedMessage } from "../src/VmbusError.js"

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

const hex = (s: string): Uint8Array => {
  const clean = s.replace(/\s+/g, "")
  const out = new Uint8Array(clean.length / 2)
  for (let i = 0; i < out.length; i++) out[i] = parseInt(clean.slice(i * 2, i * 2 + 2), 16)
  return out
}
const toHex = (b: Uint8Array): string => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("")
const dv = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength)

const right = <A, E>(e: Either.Either<A, E>): A => {
  if (Either.isLeft(e)) throw new Error(`expected Right, got Left: ${String(e.left)}`)
  return e.right
}
const left = <A, E>(e: Either.Either<A, E>): E => {
  if (Either.isRight(e)) throw new Error(`expected Left, got Right: ${JSON.stringify(e.right, bigintJson)}`)
  return e.left
}
const bigintJson = (_: string, v: unknown) => (typeof v === "bigint" ? v.toString() : v)

const malformed = (bytes: Uint8Array): MalformedMessage => {
  const error = left(CM.decode(bytes))
  strictEqual(error._tag, "MalformedMessage")
  return error
}

const roundTrip = (msg: CM.ChannelMessage): Uint8Array => {
  strictEqual(CM.validate(msg), undefined)
  const bytes = CM.encode(msg)
  strictEqual(bytes.length, CM.byteLength(msg))
  deepStrictEqual(right(CM.decode(bytes)), msg)
  return bytes
}

const range = (start: number, count: number): Array<number> => Array.from({ length: count }, (_, i) => start + i)

const userBytes = (seed: number): Uint8Array => Uint8Array.from({ length: 120 }, (_, i) => (i * 7 + seed) & 0xff)

const HANDLE = 0xe1e10

const sampleOffer: CM.OfferChannel = {
  _tag: "OfferChannel",
  interfaceType: "57164f39-9115-4e78-ab55-382f3bd5422d",
  interfaceInstance: "00112233-4455-6677-8899-aabbccddeeff",
  reserved1: 0x0102030405060708n,
  reserved2: 0x1112131415161718n,
  channelFlags: CM.ChannelFlag.EnumerateDeviceInterface | CM.ChannelFlag.NamedPipeMode,
  mmioMegabytes: 0x2122,
  userDefined: userBytes(3),
  subChannelIndex: 0x3132,
  reserved3: 0x4142,
  childRelid: 0x51525354,
  monitorId: 0x61,
  monitorAllocated: true,
  isDedicatedInterrupt: true,
  connectionId: 0x71727374
}

const sampleOpen: CM.OpenChannel = {
  _tag: "OpenChannel",
  childRelid: 0x11,
  openId: 0x11,
  ringBufferGpadlHandle: HANDLE,
  targetVp: 3,
  downstreamRingBufferPageOffset: 512,
  userData: userBytes(9)
}

const samples: ReadonlyArray<CM.ChannelMessage> = [
  sampleOffer,
  { _tag: "RescindChannelOffer", childRelid: 0x11 },
  { _tag: "RequestOffers" },
  { _tag: "AllOffersDelivered" },
  sampleOpen,
  { _tag: "OpenChannelResult", childRelid: 0x11, openId: 0x11, status: 0xc0000001 },
  { _tag: "CloseChannel", childRelid: 0x11 },
  {
    _tag: "GpadlHeader",
    childRelid: 0x11,
    handle: HANDLE,
    rangeBufLength: 24,
    rangeCount: 1,
    byteCount: 8192,
    byteOffset: 0,
    pfns: [0x100, 0x101]
  },
  { _tag: "GpadlBody", msgNumber: 0, handle: HANDLE, pfns: [0x100, 0x1_0000_0001] },
  { _tag: "GpadlCreated", childRelid: 0x11, handle: HANDLE, creationStatus: 0 },
  { _tag: "GpadlTeardown", childRelid: 0x11, handle: HANDLE },
  { _tag: "GpadlTorndown", handle: HANDLE },
  { _tag: "RelidReleased", childRelid: 0x11 },
  {
    _tag: "InitiateContact",
    vmbusVersionRequested: (5 << 16) | 3,
    targetVcpu: 0,
    interruptPage: 2n,
    monitorPage1: 0x1000n,
    monitorPage2: 0x2000n
  },
  { _tag: "VersionResponse", versionSupported: true, connectionState: 0, msgConnId: 4 },
  { _tag: "Unload" },
  { _tag: "UnloadResponse" }
]

// ---------------------------------------------------------------------------------------------
// Byte-exact layouts
// ---------------------------------------------------------------------------------------------

describe("ChannelMessage encoding", () => {
  it("constants match wire-format §0", () => {
    strictEqual(CM.MAX_CHANNEL_MESSAGE_SIZE, 240)
    strictEqual(CM.OFFER_CHANNEL_SIZE, 196)
    strictEqual(CM.OPEN_CHANNEL_SIZE, 148)
    strictEqual(CM.GPADL_HEADER_MAX_PFNS, 26)
    strictEqual(CM.GPADL_BODY_MAX_PFNS, 28)
    strictEqual(CM.FIRST_GPADL_HANDLE, 0xe1e10)
    strictEqual(CM.MAX_GPADL_PAGES, 8190)
    deepStrictEqual(Object.values(CM.MessageType), range(1, 17))
  })

  it("OFFERCHANNEL is 196 bytes with every field at its offset", () => {
    const b = roundTrip(sampleOffer)
    strictEqual(b.length, 196)
    const v = dv(b)
    strictEqual(v.getUint32(0, true), 1)
    strictEqual(v.getUint32(4, true), 0)
    strictEqual(toHex(b.subarray(8, 24)), "394f16571591784eab55382f3bd5422d")
    strictEqual(toHex(b.subarray(24, 40)), "33221100554477668899aabbccddeeff")
    strictEqual(v.getBigUint64(40, true), 0x0102030405060708n)
    strictEqual(v.getBigUint64(48, true), 0x1112131415161718n)
    strictEqual(v.getUint16(56, true), 0x11)
    strictEqual(v.getUint16(58, true), 0x2122)
    deepStrictEqual(b.slice(60, 180), userBytes(3))
    strictEqual(v.getUint16(180, true), 0x3132)
    strictEqual(v.getUint16(182, true), 0x4142)
    strictEqual(v.getUint32(184, true), 0x51525354)
    strictEqual(b[188], 0x61)
    strictEqual(b[189], 1)
    strictEqual(v.getUint16(190, true), 1)
    strictEqual(v.getUint32(192, true), 0x71727374)
  })

  it("GUIDs use the Windows mixed-endian layout", () => {
    const bytes = hex("39 4f 16 57 15 91 78 4e ab 55 38 2f 3b d5 42 2d")
    strictEqual(CM.guidFromBytes(bytes), "57164f39-9115-4e78-ab55-382f3bd5422d")
    deepStrictEqual(right(CM.guidToBytes("57164F39-9115-4E78-AB55-382F3BD5422D")), bytes)
    strictEqual(left(CM.guidToBytes("57164f39-9115-4e78-ab55-382f3bd5422")).field, "guid")
  })

  it("OPENCHANNEL is 148 bytes with every field at its offset", () => {
    const b = roundTrip(sampleOpen)
    strictEqual(b.length, 148)
    strictEqual(toHex(b.subarray(0, 28)), toHex(hex("05000000 00000000 11000000 11000000 101e0e00 03000000 00020000")))
    deepStrictEqual(b.slice(28), userBytes(9))
  })

  it("short user data is zero-padded to 120 bytes", () => {
    const b = CM.encode({ ...sampleOpen, userData: Uint8Array.of(1, 2, 3) })
    strictEqual(b.length, 148)
    deepStrictEqual(b.slice(28, 31), Uint8Array.of(1, 2, 3))
    assertTrue(b.slice(31).every((x) => x === 0))
  })

  it("fixed-size messages, byte for byte", () => {
    const expected: Record<string, string> = {
      RescindChannelOffer: "02000000 00000000 11000000",
      RequestOffers: "03000000 00000000",
      AllOffersDelivered: "04000000 00000000",
      OpenChannelResult: "06000000 00000000 11000000 11000000 010000c0",
      CloseChannel: "07000000 00000000 11000000",
      GpadlHeader: "08000000 00000000 11000000 101e0e00 1800 0100 00200000 00000000" +
        "0001000000000000 0101000000000000",
      GpadlBody: "09000000 00000000 00000000 101e0e00 0001000000000000 0100000001000000",
      GpadlCreated: "0a000000 00000000 11000000 101e0e00 00000000",
      GpadlTeardown: "0b000000 00000000 11000000 101e0e00",
      GpadlTorndown: "0c000000 00000000 101e0e00",
      RelidReleased: "0d000000 00000000 11000000",
      InitiateContact: "0e000000 00000000 03000500 00000000 0200000000000000 0010000000000000 0020000000000000",
      VersionResponse: "0f000000 00000000 01 00 0000 04000000",
      Unload: "10000000 00000000",
      UnloadResponse: "11000000 00000000"
    }
    for (const msg of samples) {
      if (msg._tag === "OfferChannel" || msg._tag === "OpenChannel") continue
      const b = roundTrip(msg)
      strictEqual(toHex(b), toHex(hex(expected[msg._tag]!)), msg._tag)
    }
  })

  it("sizes: header 28+8k, body 16+8m, created 20, teardown 16, torndown 12", () => {
    const sizes = Object.fromEntries(samples.map((m) => [m._tag, CM.encode(m).length]))
    strictEqual(sizes.GpadlHeader, 28 + 8 * 2)
    strictEqual(sizes.GpadlBody, 16 + 8 * 2)
    strictEqual(sizes.GpadlCreated, 20)
    strictEqual(sizes.GpadlTeardown, 16)
    strictEqual(sizes.GpadlTorndown, 12)
    strictEqual(sizes.OpenChannelResult, 20)
    strictEqual(sizes.InitiateContact, 40)
    strictEqual(sizes.VersionResponse, 16)
  })

  it("decode ignores the header padding and bytes past a fixed-size message", () => {
    for (const msg of samples) {
      if (msg._tag === "GpadlHeader" || msg._tag === "GpadlBody") continue
      const b = CM.encode(msg)
      const padded = new Uint8Array(Math.min(240, b.length + 8))
      padded.set(b)
      padded.fill(0xff, 4, 8)
      deepStrictEqual(right(CM.decode(padded)), msg)
    }
  })

  it("decode reads a view at a non-zero offset and does not alias its input", () => {
    const b = CM.encode(sampleOpen)
    const big = new Uint8Array(b.length + 5)
    big.set(b, 5)
    const decoded = right(CM.decode(big.subarray(5))) as CM.OpenChannel
    big.fill(0)
    deepStrictEqual(decoded, sampleOpen)
  })

  it("validate rejects fields that do not fit their width", () => {
    strictEqual(CM.validate({ _tag: "CloseChannel", childRelid: 2 ** 32 })?.field, "childRelid")
    strictEqual(CM.validate({ _tag: "CloseChannel", childRelid: -1 })?.field, "childRelid")
    strictEqual(CM.validate({ ...sampleOffer, channelFlags: 0x10000 })?.field, "channelFlags")
    strictEqual(CM.validate({ ...sampleOffer, interfaceType: "nope" })?.field, "interfaceType")
    strictEqual(CM.validate({ ...sampleOffer, reserved1: -1n })?.field, "reserved1")
    strictEqual(CM.validate({ ...sampleOpen, userData: new Uint8Array(121) })?.field, "userData")
    strictEqual(CM.validate({ _tag: "GpadlBody", msgNumber: 0, handle: 1, pfns: [1.5] })?.field, "pfns[0]")
    strictEqual(CM.validate({ _tag: "GpadlBody", msgNumber: 0, handle: 1, pfns: range(1, 29) })?.field, "pfns")
    assertTrue(Either.isLeft(CM.encodeChecked({ _tag: "GpadlTorndown", handle: 0.5 })))
    deepStrictEqual(right(CM.encodeChecked({ _tag: "GpadlTorndown", handle: 1 })), hex("0c000000 00000000 01000000"))
  })
})

// ---------------------------------------------------------------------------------------------
// GPADL splitting
// ---------------------------------------------------------------------------------------------

const split = (pfns: ReadonlyArray<number>, extra: Partial<CM.GpadlMessagesOptions> = {}) =>
  CM.gpadlMessages({ childRelid: 0x11, handle: HANDLE, pfns, ...extra })

const checkSplit = (pages: number) => {
  const pfns = range(0x100, pages)
  const msgs = right(split(pfns))
  const [header, ...bodies] = msgs
  assertTrue(header !== undefined && header._tag === "GpadlHeader")
  strictEqual(header.rangeCount, 1)
  strictEqual(header.rangeBufLength, 8 + 8 * pages)
  strictEqual(header.byteCount, pages * 4096)
  strictEqual(header.byteOffset, 0)
  strictEqual(header.pfns.length, Math.min(26, pages))
  strictEqual(bodies.length, Math.max(0, Math.ceil((pages - 26) / 28)))
  bodies.forEach((body, i) => {
    assertTrue(body._tag === "GpadlBody")
    strictEqual(body.msgNumber, 0)
    strictEqual(body.handle, HANDLE)
    strictEqual(body.pfns.length, i < bodies.length - 1 ? 28 : pages - 26 - 28 * (bodies.length - 1))
  })
  deepStrictEqual(msgs.flatMap((m) => m.pfns), pfns)
  for (const m of msgs) {
    const b = CM.encode(m)
    assertTrue(b.length <= 240)
    strictEqual(b.length, m._tag === "GpadlHeader" ? 28 + 8 * m.pfns.length : 16 + 8 * m.pfns.length)
  }
  return msgs
}

describe("gpadlMessages", () => {
  it("uio example: 1024 PFNs → header with 26 PFNs + 36 bodies (35×28 + 18)", () => {
    const msgs = checkSplit(1024)
    strictEqual(msgs.length, 37)
    const header = msgs[0] as CM.GpadlHeader
    strictEqual(header.rangeBufLength, 8200)
    strictEqual(header.byteCount, 4194304)
    strictEqual(CM.encode(header).length, 236)
    deepStrictEqual(msgs.slice(1).map((m) => m.pfns.length), [...Array(35).fill(28), 18])
    strictEqual(CM.encode(msgs[36]!).length, 16 + 18 * 8)
  })

  it("1, 26, 27 and 1000 pages", () => {
    strictEqual(checkSplit(1).length, 1)
    strictEqual(checkSplit(26).length, 1)
    const m27 = checkSplit(27)
    strictEqual(m27.length, 2)
    strictEqual(m27[1]!.pfns.length, 1)
    const m1000 = checkSplit(1000)
    strictEqual(m1000.length, 1 + 35)
    strictEqual(m1000[35]!.pfns.length, 1000 - 26 - 34 * 28)
  })

  it("8190 pages is the largest GPADL; 8191 is GpadlTooLarge", () => {
    strictEqual((checkSplit(8190)[0] as CM.GpadlHeader).rangeBufLength, 65528)
    const error = left(split(range(0x100, 8191))) as GpadlTooLarge
    strictEqual(error._tag, "GpadlTooLarge")
    strictEqual(error.pages, 8191)
    strictEqual(error.max, 8190)
  })

  it("byteOffset and byteCount describe a partial range", () => {
    const header = right(split(range(0x100, 3), { byteOffset: 0x800, byteCount: 8192 }))[0] as CM.GpadlHeader
    strictEqual(header.byteOffset, 0x800)
    strictEqual(header.byteCount, 8192)
    strictEqual(header.rangeBufLength, 8 + 3 * 8)
  })

  it("rejects bad arguments with InvalidParameter", () => {
    const field = (e: Either.Either<unknown, GpadlTooLarge | InvalidParameter>) => {
      const error = left(e)
      strictEqual(error._tag, "InvalidParameter")
      return (error as InvalidParameter).field
    }
    strictEqual(field(split([])), "pfns")
    strictEqual(field(split([0x100], { handle: 0 })), "handle")
    strictEqual(field(split([0x100], { childRelid: -1 })), "childRelid")
    strictEqual(field(split([0x100], { byteOffset: 0x1000 })), "byteOffset")
    strictEqual(field(split([0x100], { byteCount: 0 })), "byteCount")
    strictEqual(field(split([0x100], { byteCount: 4097 })), "pfns")
    strictEqual(field(split([0x100, -1])), "pfns[1]")
    strictEqual(field(split([0x100, 2 ** 53])), "pfns[1]")
  })
})

// ---------------------------------------------------------------------------------------------
// Reassembly
// ---------------------------------------------------------------------------------------------

/** Encodes, decodes and pushes every message, as a host receiving them over the wire would. */
const reassemble = (r: CM.GpadlReassembler, msgs: ReadonlyArray<CM.GpadlHeader | CM.GpadlBody>) =>
  msgs.map((m) => {
    const decoded = right(CM.decode(CM.encode(m)))
    assertTrue(decoded._tag === "GpadlHeader" || decoded._tag === "GpadlBody")
    return r.push(decoded)
  })

const header = (overrides: Partial<CM.GpadlHeader> = {}): CM.GpadlHeader => ({
  _tag: "GpadlHeader",
  childRelid: 1,
  handle: HANDLE,
  rangeBufLength: 8 + 27 * 8,
  rangeCount: 1,
  byteCount: 27 * 4096,
  byteOffset: 0,
  pfns: range(0x100, 26),
  ...overrides
})
const body = (pfns: ReadonlyArray<number>, handle = HANDLE): CM.GpadlBody => ({
  _tag: "GpadlBody",
  msgNumber: 0,
  handle,
  pfns
})
const rejected = (e: Either.Either<CM.GpadlProgress, MalformedMessage>, field: string) => {
  const error = left(e)
  strictEqual(error._tag, "MalformedMessage")
  strictEqual(error.field, field)
}

describe("GpadlReassembler", () => {
  it("reassembles the uio example", () => {
    const pfns = range(0x4000, 1024)
    const r = new CM.GpadlReassembler()
    const results = reassemble(r, right(split(pfns)))
    results.slice(0, -1).forEach((p, i) => {
      const progress = right(p)
      assertTrue(progress._tag === "Pending")
      strictEqual(progress.received, Math.min(1024, 26 + 28 * i))
      strictEqual(progress.expected, 1024)
    })
    deepStrictEqual(right(results[results.length - 1]!), {
      _tag: "Complete",
      gpadl: { childRelid: 0x11, handle: HANDLE, byteCount: 4194304, byteOffset: 0, pfns }
    })
    strictEqual(r.pendingCount, 0)
  })

  it.prop(
    "split ∘ reassemble is the identity",
    {
      pages: FastCheck.integer({ min: 1, max: 2000 }),
      base: FastCheck.integer({ min: 0, max: 2 ** 40 }),
      byteOffset: FastCheck.integer({ min: 0, max: 0xfff }),
      slack: FastCheck.integer({ min: 0, max: 4095 })
    },
    ({ base, byteOffset, pages, slack }) => {
      const byteCount = Math.max(1, pages * 4096 - byteOffset - slack)
      strictEqual(CM.pageCount(byteOffset, byteCount), pages)
      const pfns = range(base, pages).reverse()
      const r = new CM.GpadlReassembler()
      const results = reassemble(r, right(split(pfns, { byteOffset, byteCount })))
      results.slice(0, -1).forEach((p) => strictEqual(right(p)._tag, "Pending"))
      deepStrictEqual(right(results[results.length - 1]!), {
        _tag: "Complete",
        gpadl: { childRelid: 0x11, handle: HANDLE, byteCount, byteOffset, pfns }
      })
      strictEqual(r.pendingCount, 0)
    },
    { fastCheck: { numRuns: 100 } }
  )

  it("interleaves GPADLs by handle", () => {
    const r = new CM.GpadlReassembler()
    const a = right(split(range(0x100, 60), { handle: 1 }))
    const b = right(split(range(0x900, 30), { handle: 2 }))
    const results = reassemble(r, [a[0]!, b[0]!, a[1]!, b[1]!, a[2]!])
    strictEqual(right(results[3]!)._tag, "Complete")
    strictEqual(right(results[4]!)._tag, "Complete")
    deepStrictEqual((right(results[3]!) as { gpadl: CM.CompletedGpadl }).gpadl.pfns, range(0x900, 30))
    deepStrictEqual((right(results[4]!) as { gpadl: CM.CompletedGpadl }).gpadl.pfns, range(0x100, 60))
  })

  it("rejects a body for an unknown handle", () => {
    rejected(new CM.GpadlReassembler().push(body([1])), "gpadl")
  })

  it("rejects more PFNs than range_buflen describes, and forgets the handle", () => {
    const r = new CM.GpadlReassembler()
    strictEqual(right(r.push(header()))._tag, "Pending")
    rejected(r.push(body([1, 2])), "pfn")
    strictEqual(r.isPending(HANDLE), false)
    rejected(r.push(body([1])), "gpadl")
    rejected(r.push(header({ pfns: range(0x100, 2), rangeBufLength: 16, byteCount: 4096 })), "pfn")
  })

  it("rejects an inconsistent range_buflen, rangecount ≠ 1, byte_count 0, byte_offset > 0xFFF, handle 0", () => {
    const r = new CM.GpadlReassembler()
    rejected(r.push(header({ rangeBufLength: 8 + 26 * 8 })), "range_buflen")
    rejected(r.push(header({ rangeBufLength: 0xffff })), "range_buflen")
    rejected(r.push(header({ rangeCount: 2 })), "rangecount")
    rejected(r.push(header({ rangeCount: 0 })), "rangecount")
    rejected(r.push(header({ byteCount: 0 })), "byte_count")
    rejected(r.push(header({ byteOffset: 0x1000 })), "byte_offset")
    rejected(r.push(header({ handle: 0 })), "gpadl")
    strictEqual(r.pendingCount, 0)
  })

  it("counts PFNs from byte_offset + byte_count", () => {
    const r = new CM.GpadlReassembler()
    // 2 bytes straddling a page boundary need two PFNs
    rejected(r.push(header({ byteOffset: 0xfff, byteCount: 2, rangeBufLength: 16, pfns: [1] })), "range_buflen")
    const done = right(r.push(header({ byteOffset: 0xfff, byteCount: 2, rangeBufLength: 24, pfns: [1, 2] })))
    strictEqual(done._tag, "Complete")
  })

  it("rejects a duplicate header for a pending handle", () => {
    const r = new CM.GpadlReassembler()
    strictEqual(right(r.push(header()))._tag, "Pending")
    rejected(r.push(header()), "gpadl")
    strictEqual(r.pendingCount, 0)
  })

  it("bounds the number of pending GPADLs; abandon and clear drop them", () => {
    const r = new CM.GpadlReassembler({ maxPending: 2 })
    right(r.push(header({ handle: 1 })))
    right(r.push(header({ handle: 2 })))
    rejected(r.push(header({ handle: 3 })), "gpadl")
    strictEqual(r.abandon(1), true)
    strictEqual(r.abandon(1), false)
    right(r.push(header({ handle: 3 })))
    r.clear()
    strictEqual(r.pendingCount, 0)
  })
})

// ---------------------------------------------------------------------------------------------
// Hostile input
// ---------------------------------------------------------------------------------------------

describe("ChannelMessage decoding of hostile input", () => {
  it("rejects messages over 240 bytes", () => {
    const b = new Uint8Array(241)
    b[0] = 1
    const error = malformed(b)
    strictEqual(error.length, 241)
  })

  it("rejects messages shorter than the header or than their type's minimum", () => {
    strictEqual(malformed(new Uint8Array(7)).length, 7)
    for (const msg of samples) {
      const min = CM.MinimumSize[msg._tag]
      if (min === 8) continue
      const error = malformed(CM.encode(msg).slice(0, min - 1))
      strictEqual(error.messageType, CM.MessageType[msg._tag])
      strictEqual(error.length, min - 1)
    }
  })

  it("rejects unknown message types", () => {
    for (const type of [0, 18, 19, 20, 21, 22, 24, 0xffffffff]) {
      const b = new Uint8Array(64)
      dv(b).setUint32(0, type, true)
      const error = malformed(b)
      strictEqual(error.messageType, type)
      strictEqual(error.field, "msgtype")
    }
  })

  it("rejects a GPADL PFN array that is not whole u64s, or a PFN beyond 52 bits", () => {
    const h = CM.encode(samples[7]!)
    strictEqual(malformed(h.slice(0, h.length - 3)).field, "pfn")
    const b = CM.encode(body([1, 2]))
    strictEqual(malformed(b.slice(0, 20)).field, "pfn")
    dv(b).setUint32(16 + 8 + 4, 0x100000, true)
    strictEqual(malformed(b).field, "pfn[1]")
  })

  it.prop(
    "decode never throws on random bytes",
    [FastCheck.uint8Array({ maxLength: 300 })],
    ([bytes]) => {
      assertTrue(Either.isEither(CM.decode(bytes)))
    },
    { fastCheck: { numRuns: 2000 } }
  )

  it.prop(
    "decode never throws on random bodies of every type, and re-encodes what it accepts",
    [FastCheck.integer({ min: 0, max: 26 }), FastCheck.uint8Array({ minLength: 4, maxLength: 244 })],
    ([type, bytes]) => {
      dv(bytes).setUint32(0, type, true)
      const decoded = CM.decode(bytes)
      if (Either.isRight(decoded)) {
        strictEqual(CM.validate(decoded.right), undefined)
        deepStrictEqual(right(CM.decode(CM.encode(decoded.right))), decoded.right)
      } else {
        strictEqual(decoded.left._tag, "MalformedMessage")
      }
    },
    { fastCheck: { numRuns: 3000 } }
  )
})

// ---------------------------------------------------------------------------------------------
// Round trip over arbitrary messages
// ---------------------------------------------------------------------------------------------

const u8 = FastCheck.integer({ min: 0, max: 0xff })
const u16 = FastCheck.integer({ min: 0, max: 0xffff })
const u32 = FastCheck.integer({ min: 0, max: 0xffffffff })
const u64 = FastCheck.bigInt({ min: 0n, max: 0xffff_ffff_ffff_ffffn })
const pfn = FastCheck.integer({ min: 0, max: CM.MAX_PFN })
const user = FastCheck.uint8Array({ minLength: 120, maxLength: 120 })
const guid = FastCheck.uuid()

const arbitraryMessage: FastCheck.Arbitrary<CM.ChannelMessage> = FastCheck.oneof(
  FastCheck.record({
    _tag: FastCheck.constant("OfferChannel" as const),
    interfaceType: guid,
    interfaceInstance: guid,
    reserved1: u64,
    reserved2: u64,
    channelFlags: u16,
    mmioMegabytes: u16,
    userDefined: user,
    subChannelIndex: u16,
    reserved3: u16,
    childRelid: u32,
    monitorId: u8,
    monitorAllocated: FastCheck.boolean(),
    isDedicatedInterrupt: FastCheck.boolean(),
    connectionId: u32
  }),
  FastCheck.record({ _tag: FastCheck.constant("RescindChannelOffer" as const), childRelid: u32 }),
  FastCheck.constant({ _tag: "RequestOffers" as const }),
  FastCheck.constant({ _tag: "AllOffersDelivered" as const }),
  FastCheck.record({
    _tag: FastCheck.constant("OpenChannel" as const),
    childRelid: u32,
    openId: u32,
    ringBufferGpadlHandle: u32,
    targetVp: u32,
    downstreamRingBufferPageOffset: u32,
    userData: user
  }),
  FastCheck.record({
    _tag: FastCheck.constant("OpenChannelResult" as const),
    childRelid: u32,
    openId: u32,
    status: u32
  }),
  FastCheck.record({ _tag: FastCheck.constant("CloseChannel" as const), childRelid: u32 }),
  FastCheck.record({
    _tag: FastCheck.constant("GpadlHeader" as const),
    childRelid: u32,
    handle: u32,
    rangeBufLength: u16,
    rangeCount: u16,
    byteCount: u32,
    byteOffset: u32,
    pfns: FastCheck.array(pfn, { maxLength: 26 })
  }),
  FastCheck.record({
    _tag: FastCheck.constant("GpadlBody" as const),
    msgNumber: u32,
    handle: u32,
    pfns: FastCheck.array(pfn, { maxLength: 28 })
  }),
  FastCheck.record({
    _tag: FastCheck.constant("GpadlCreated" as const),
    childRelid: u32,
    handle: u32,
    creationStatus: u32
  }),
  FastCheck.record({ _tag: FastCheck.constant("GpadlTeardown" as const), childRelid: u32, handle: u32 }),
  FastCheck.record({ _tag: FastCheck.constant("GpadlTorndown" as const), handle: u32 }),
  FastCheck.record({ _tag: FastCheck.constant("RelidReleased" as const), childRelid: u32 }),
  FastCheck.record({
    _tag: FastCheck.constant("InitiateContact" as const),
    vmbusVersionRequested: u32,
    targetVcpu: u32,
    interruptPage: u64,
    monitorPage1: u64,
    monitorPage2: u64
  }),
  FastCheck.record({
    _tag: FastCheck.constant("VersionResponse" as const),
    versionSupported: FastCheck.boolean(),
    connectionState: u8,
    msgConnId: u32
  }),
  FastCheck.constant({ _tag: "Unload" as const }),
  FastCheck.constant({ _tag: "UnloadResponse" as const })
)

describe("ChannelMessage round trip", () => {
  it.prop("decode ∘ encode is the identity", [arbitraryMessage], ([msg]) => {
    roundTrip(msg)
  }, { fastCheck: { numRuns: 1000 } })
})

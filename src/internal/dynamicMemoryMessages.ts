// Hyper-V Dynamic Memory messages: the layouts of Linux drivers/hv/hv_balloon.c (all `__packed`), as
// BinarySchema structs, plus a tagged union and its codec. Bitfield words are kept as whole u32/u64
// fields in the structs (BinarySchema has no bitfields) and split here.
import * as Either from "effect/Either"
import * as ParseResult from "effect/ParseResult"
import * as BinarySchema from "../BinarySchema.js"
import * as Protocol from "../Protocol.js"
import { ProtocolError } from "../VmbusError.js"

const { u16, u32, u64 } = BinarySchema

/** Class GUID of the Dynamic Memory device (`HV_DM_GUID`). */
export const DM_GUID = "525074dc-8985-46e2-8057-a307dc18a502"

export const makeVersion = (major: number, minor: number): number => ((major << 16) | minor) >>> 0
export const VERSION_WIN7 = makeVersion(0, 3)
export const VERSION_WIN8 = makeVersion(1, 0)
export const VERSION_WIN10 = makeVersion(2, 0)
/** The versions Linux tries, in order (`balloon_connect_vsp`, then `version_resp`). */
export const LINUX_VERSIONS: ReadonlyArray<number> = [VERSION_WIN10, VERSION_WIN8, VERSION_WIN7]

export const DM_ERROR = 0
export const DM_VERSION_REQUEST = 1
export const DM_VERSION_RESPONSE = 2
export const DM_CAPABILITIES_REPORT = 3
export const DM_CAPABILITIES_RESPONSE = 4
export const DM_STATUS_REPORT = 5
export const DM_BALLOON_REQUEST = 6
export const DM_BALLOON_RESPONSE = 7
export const DM_UNBALLOON_REQUEST = 8
export const DM_UNBALLOON_RESPONSE = 9
export const DM_MEM_HOT_ADD_REQUEST = 10
export const DM_MEM_HOT_ADD_RESPONSE = 11
export const DM_INFO_MESSAGE = 12

export const INFO_TYPE_MAX_PAGE_CNT = 0
export const PAGE_SIZE = 4096
/** `dm_mem_page_range`: start_page is 40 bits, page_cnt 24 bits. */
export const MAX_START_PAGE = 2 ** 40 - 1
export const MAX_RANGE_PAGES = 2 ** 24 - 1
/** Ranges in one balloon response of one page, as Linux sizes it (`send_buffer` is PAGE_SIZE). */
export const MAX_RANGES_PER_MESSAGE = (PAGE_SIZE - 16) / 8

// ---------------------------------------------------------------------------------------------
// Layouts
// ---------------------------------------------------------------------------------------------

export const DmHeader = BinarySchema.struct({ type: u16, size: u16, trans_id: u32 }, { identifier: "dm_header" })
const opts = (identifier: string) => ({ identifier, trailingBytes: "ignore" as const })

/** `version` then a word whose bit 0 is `is_last_attempt`. */
export const DmVersionRequest = BinarySchema.struct({ hdr: DmHeader, version: u32, flags: u32 }, opts("dm_version_request"))
/** Bit 0 of `flags` is `is_accepted`. */
export const DmVersionResponse = BinarySchema.struct({ hdr: DmHeader, flags: u64 }, opts("dm_version_response"))
/** `caps`: bit 0 balloon, bit 1 hot_add, bits 2–5 hot_add_alignment (2^n MiB), bit 6 hot_remove. */
export const DmCapabilities = BinarySchema.struct(
  { hdr: DmHeader, caps: u64, min_page_cnt: u64, max_page_number: u64 },
  opts("dm_capabilities")
)
/** Bit 0 is_accepted, bit 1 hot_remove, bit 2 suppress_pressure_reports. */
export const DmCapabilitiesResponse = BinarySchema.struct({ hdr: DmHeader, flags: u64 }, opts("dm_capabilities_resp_msg"))
export const DmStatus = BinarySchema.struct(
  {
    hdr: DmHeader,
    num_avail: u64,
    num_committed: u64,
    page_file_size: u64,
    zero_free: u64,
    page_file_writes: u32,
    io_diff: u32
  },
  opts("dm_status")
)
export const DmBalloon = BinarySchema.struct({ hdr: DmHeader, num_pages: u32, reservedz: u32 }, opts("dm_balloon"))
/** Followed by `range_count` u64 page ranges; `flags`: bit 0 more_pages, bits 1–31 range_count. */
export const DmBalloonResponse = BinarySchema.struct(
  { hdr: DmHeader, reservedz: BinarySchema.reserved(4), flags: u32 },
  opts("dm_balloon_response")
)
/** Followed by `range_count` u64 page ranges; bit 0 of `flags` is more_pages. */
export const DmUnballoonRequest = BinarySchema.struct(
  { hdr: DmHeader, flags: u32, range_count: u32 },
  opts("dm_unballoon_request")
)
export const DmUnballoonResponse = BinarySchema.struct({ hdr: DmHeader }, opts("dm_unballoon_response"))
/** Optionally followed by a second range, the hot-add region (Linux reads it when `size` allows). */
export const DmHotAdd = BinarySchema.struct({ hdr: DmHeader, range: u64 }, opts("dm_hot_add"))
export const DmHotAddResponse = BinarySchema.struct({ hdr: DmHeader, page_count: u32, result: u32 }, opts("dm_hot_add_response"))
/** Followed by `info_size` bytes: `dm_info_header` (type u32, data_size u32) and its data. */
export const DmInfoMessage = BinarySchema.struct({ hdr: DmHeader, reserved: u32, info_size: u32 }, opts("dm_info_msg"))
export const DmInfoHeader = BinarySchema.struct({ type: u32, data_size: u32 }, opts("dm_info_header"))

/** The message table: `dm_header.type` → layout (framed by `dm_header`, not by Protocol's own frame). */
export const DynamicMemoryProtocol = Protocol.make("DynamicMemory", {
  versionRequest: { id: DM_VERSION_REQUEST, request: DmVersionRequest },
  versionResponse: { id: DM_VERSION_RESPONSE, request: DmVersionResponse },
  capabilitiesReport: { id: DM_CAPABILITIES_REPORT, request: DmCapabilities },
  capabilitiesResponse: { id: DM_CAPABILITIES_RESPONSE, request: DmCapabilitiesResponse },
  statusReport: { id: DM_STATUS_REPORT, request: DmStatus },
  balloonRequest: { id: DM_BALLOON_REQUEST, request: DmBalloon },
  balloonResponse: { id: DM_BALLOON_RESPONSE, request: DmBalloonResponse },
  unballoonRequest: { id: DM_UNBALLOON_REQUEST, request: DmUnballoonRequest },
  unballoonResponse: { id: DM_UNBALLOON_RESPONSE, request: DmUnballoonResponse },
  hotAddRequest: { id: DM_MEM_HOT_ADD_REQUEST, request: DmHotAdd },
  hotAddResponse: { id: DM_MEM_HOT_ADD_RESPONSE, request: DmHotAddResponse },
  infoMessage: { id: DM_INFO_MESSAGE, request: DmInfoMessage }
})

// ---------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------

export interface PageRange {
  /** PFN of the first page (40 bits). */
  readonly startPage: number
  /** Number of pages (24 bits). */
  readonly pageCount: number
}

export interface Capabilities {
  /** The guest can balloon (give pages to the host). */
  readonly balloon: boolean
  /** The guest can hot-add memory the host offers. */
  readonly hotAdd: boolean
  /** Hot-add alignment as a power of two in MiB (0–15). */
  readonly hotAddAlignment: number
  /** The guest can hot-remove memory (protocol 2.0 bit). */
  readonly hotRemove: boolean
}

export type Message =
  | { readonly _tag: "VersionRequest"; readonly transactionId: number; readonly version: number; readonly isLastAttempt: boolean }
  | { readonly _tag: "VersionResponse"; readonly transactionId: number; readonly isAccepted: boolean }
  | {
    readonly _tag: "CapabilitiesReport"
    readonly transactionId: number
    readonly capabilities: Capabilities
    readonly minPageCount: bigint
    readonly maxPageNumber: bigint
  }
  | {
    readonly _tag: "CapabilitiesResponse"
    readonly transactionId: number
    readonly isAccepted: boolean
    readonly hotRemove: boolean
    readonly suppressPressureReports: boolean
  }
  | {
    readonly _tag: "StatusReport"
    readonly transactionId: number
    readonly numAvail: bigint
    readonly numCommitted: bigint
    readonly pageFileSize: bigint
    readonly zeroFree: bigint
    readonly pageFileWrites: number
    readonly ioDiff: number
  }
  | { readonly _tag: "BalloonRequest"; readonly transactionId: number; readonly numPages: number }
  | {
    readonly _tag: "BalloonResponse"
    readonly transactionId: number
    readonly morePages: boolean
    readonly ranges: ReadonlyArray<PageRange>
  }
  | {
    readonly _tag: "UnballoonRequest"
    readonly transactionId: number
    readonly morePages: boolean
    readonly ranges: ReadonlyArray<PageRange>
  }
  | { readonly _tag: "UnballoonResponse"; readonly transactionId: number }
  | {
    readonly _tag: "HotAddRequest"
    readonly transactionId: number
    readonly range: PageRange
    readonly region: PageRange | undefined
  }
  | { readonly _tag: "HotAddResponse"; readonly transactionId: number; readonly pageCount: number; readonly result: number }
  | {
    readonly _tag: "InfoMessage"
    readonly transactionId: number
    readonly infoType: number | undefined
    /** `INFO_TYPE_MAX_PAGE_CNT` data, when that is what the message carries. */
    readonly maxPageCount: bigint | undefined
    readonly info: Uint8Array
  }

export type MessageTag = Message["_tag"]

export const encodeRange = (range: PageRange): bigint =>
  (BigInt(range.startPage) & 0xff_ffff_ffffn) | (BigInt(range.pageCount & 0xff_ffff) << 40n)

export const decodeRange = (word: bigint): PageRange => ({
  startPage: Number(word & 0xff_ffff_ffffn),
  pageCount: Number(word >> 40n)
})

const fail = (reason: string, cause?: ParseResult.ParseError) =>
  Either.left(
    new ProtocolError({
      reason: `DynamicMemory: ${reason}`,
      ...(cause === undefined ? {} : { message_: ParseResult.TreeFormatter.formatErrorSync(cause) })
    })
  )

const checkRange = (range: PageRange, what: string): string | undefined => {
  if (!Number.isInteger(range.startPage) || range.startPage < 0 || range.startPage > MAX_START_PAGE) {
    return `${what}: start page ${range.startPage} does not fit 40 bits`
  }
  if (!Number.isInteger(range.pageCount) || range.pageCount < 0 || range.pageCount > MAX_RANGE_PAGES) {
    return `${what}: page count ${range.pageCount} does not fit 24 bits`
  }
  return undefined
}

const header = (type: number, size: number, transactionId: number) => ({ type, size, trans_id: transactionId >>> 0 })

const withRanges = (head: Uint8Array, ranges: ReadonlyArray<PageRange>): Uint8Array => {
  const bytes = new Uint8Array(head.length + 8 * ranges.length)
  bytes.set(head)
  const view = new DataView(bytes.buffer)
  ranges.forEach((range, i) => view.setBigUint64(head.length + 8 * i, encodeRange(range), true))
  return bytes
}

const flag = (on: boolean, bit: number): number => (on ? 1 << bit : 0)

/** Encodes a message with its `dm_header` (`size` = the message length). */
export const encode = (message: Message): Either.Either<Uint8Array, ProtocolError> => {
  const id = message.transactionId
  const enc = <F extends BinarySchema.Fields>(schema: BinarySchema.Struct<F>, value: BinarySchema.StructType<F>) =>
    Either.mapLeft(BinarySchema.encodeEither(schema)(value), (e) =>
      new ProtocolError({ reason: `DynamicMemory: cannot encode ${message._tag}`, message_: ParseResult.TreeFormatter.formatErrorSync(e) }))
  switch (message._tag) {
    case "VersionRequest":
      return enc(DmVersionRequest, { hdr: header(DM_VERSION_REQUEST, 16, id), version: message.version, flags: flag(message.isLastAttempt, 0) })
    case "VersionResponse":
      return enc(DmVersionResponse, { hdr: header(DM_VERSION_RESPONSE, 16, id), flags: message.isAccepted ? 1n : 0n })
    case "CapabilitiesReport": {
      const c = message.capabilities
      if (!Number.isInteger(c.hotAddAlignment) || c.hotAddAlignment < 0 || c.hotAddAlignment > 15) {
        return fail(`hot-add alignment ${c.hotAddAlignment} does not fit 4 bits`)
      }
      const caps = BigInt(flag(c.balloon, 0) | flag(c.hotAdd, 1) | (c.hotAddAlignment << 2) | flag(c.hotRemove, 6))
      return enc(DmCapabilities, { hdr: header(DM_CAPABILITIES_REPORT, 32, id), caps, min_page_cnt: message.minPageCount, max_page_number: message.maxPageNumber })
    }
    case "CapabilitiesResponse":
      return enc(DmCapabilitiesResponse, {
        hdr: header(DM_CAPABILITIES_RESPONSE, 16, id),
        flags: BigInt(flag(message.isAccepted, 0) | flag(message.hotRemove, 1) | flag(message.suppressPressureReports, 2))
      })
    case "StatusReport":
      return enc(DmStatus, {
        hdr: header(DM_STATUS_REPORT, 48, id),
        num_avail: message.numAvail,
        num_committed: message.numCommitted,
        page_file_size: message.pageFileSize,
        zero_free: message.zeroFree,
        page_file_writes: message.pageFileWrites,
        io_diff: message.ioDiff
      })
    case "BalloonRequest":
      return enc(DmBalloon, { hdr: header(DM_BALLOON_REQUEST, 16, id), num_pages: message.numPages, reservedz: 0 })
    case "BalloonResponse":
    case "UnballoonRequest": {
      for (const range of message.ranges) {
        const bad = checkRange(range, message._tag)
        if (bad !== undefined) return fail(bad)
      }
      const size = 16 + 8 * message.ranges.length
      if (size > 0xffff) return fail(`${message._tag}: ${message.ranges.length} ranges do not fit a 16-bit message size`)
      const head = message._tag === "BalloonResponse"
        ? enc(DmBalloonResponse, { hdr: header(DM_BALLOON_RESPONSE, size, id), flags: (flag(message.morePages, 0) | (message.ranges.length << 1)) >>> 0 })
        : enc(DmUnballoonRequest, { hdr: header(DM_UNBALLOON_REQUEST, size, id), flags: flag(message.morePages, 0), range_count: message.ranges.length })
      return Either.map(head, (bytes) => withRanges(bytes, message.ranges))
    }
    case "UnballoonResponse":
      return enc(DmUnballoonResponse, { hdr: header(DM_UNBALLOON_RESPONSE, 8, id) })
    case "HotAddRequest": {
      const ranges = message.region === undefined ? [message.range] : [message.range, message.region]
      for (const range of ranges) {
        const bad = checkRange(range, message._tag)
        if (bad !== undefined) return fail(bad)
      }
      return Either.map(
        enc(DmHotAdd, { hdr: header(DM_MEM_HOT_ADD_REQUEST, 8 + 8 * ranges.length, id), range: encodeRange(message.range) }),
        (bytes) => message.region === undefined ? bytes : withRanges(bytes, [message.region])
      )
    }
    case "HotAddResponse":
      return enc(DmHotAddResponse, { hdr: header(DM_MEM_HOT_ADD_RESPONSE, 16, id), page_count: message.pageCount, result: message.result })
    case "InfoMessage":
      return Either.map(
        enc(DmInfoMessage, { hdr: header(DM_INFO_MESSAGE, 16 + message.info.length, id), reserved: 0, info_size: message.info.length }),
        (head) => {
          const bytes = new Uint8Array(head.length + message.info.length)
          bytes.set(head)
          bytes.set(message.info, head.length)
          return bytes
        }
      )
  }
}

const MIN_SIZE: Record<number, number> = {
  [DM_VERSION_REQUEST]: 16,
  [DM_VERSION_RESPONSE]: 16,
  [DM_CAPABILITIES_REPORT]: 32,
  [DM_CAPABILITIES_RESPONSE]: 16,
  [DM_STATUS_REPORT]: 48,
  [DM_BALLOON_REQUEST]: 16,
  [DM_BALLOON_RESPONSE]: 16,
  [DM_UNBALLOON_REQUEST]: 16,
  [DM_UNBALLOON_RESPONSE]: 8,
  [DM_MEM_HOT_ADD_REQUEST]: 16,
  [DM_MEM_HOT_ADD_RESPONSE]: 16,
  [DM_INFO_MESSAGE]: 16
}

const readRanges = (bytes: Uint8Array, offset: number, count: number): ReadonlyArray<PageRange> => {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const ranges: Array<PageRange> = []
  for (let i = 0; i < count; i++) ranges.push(decodeRange(view.getBigUint64(offset + 8 * i, true)))
  return ranges
}

/**
 * Decodes one message from a packet payload (VMBus pads payloads to 8 bytes, so `dm_header.size` says
 * where the message ends). Every length is checked before it is used: peer data is untrusted.
 */
export const decode = (payload: Uint8Array): Either.Either<Message, ProtocolError> => {
  const head = BinarySchema.decodePrefix(DmHeader)(payload)
  if (Either.isLeft(head)) return fail(`payload of ${payload.length} bytes has no dm_header`, head.left)
  const { size, trans_id: transactionId, type } = head.right.value
  if (size > payload.length) return fail(`dm_header.size ${size} exceeds the ${payload.length}-byte payload (type ${type})`)
  const minimum = MIN_SIZE[type]
  if (minimum === undefined) return fail(`unknown message type ${type}`)
  if (size < minimum) return fail(`message type ${type} of ${size} bytes, needs at least ${minimum}`)
  const bytes = payload.subarray(0, size)
  const dec = <F extends BinarySchema.Fields>(schema: BinarySchema.Struct<F>) =>
    Either.mapLeft(BinarySchema.decodePrefix(schema)(bytes), (e) =>
      new ProtocolError({ reason: `DynamicMemory: cannot decode message type ${type}`, message_: ParseResult.TreeFormatter.formatErrorSync(e) }))
  const ranged = (count: number): Either.Either<ReadonlyArray<PageRange>, ProtocolError> =>
    16 + 8 * count > size
      ? fail(`message type ${type} announces ${count} ranges, its ${size} bytes hold ${Math.max(0, Math.floor((size - 16) / 8))}`)
      : Either.right(readRanges(bytes, 16, count))
  switch (type) {
    case DM_VERSION_REQUEST:
      return Either.map(dec(DmVersionRequest), ({ value }) => ({
        _tag: "VersionRequest" as const,
        transactionId,
        version: value.version,
        isLastAttempt: (value.flags & 1) === 1
      }))
    case DM_VERSION_RESPONSE:
      return Either.map(dec(DmVersionResponse), ({ value }) => ({ _tag: "VersionResponse" as const, transactionId, isAccepted: (value.flags & 1n) === 1n }))
    case DM_CAPABILITIES_REPORT:
      return Either.map(dec(DmCapabilities), ({ value }) => ({
        _tag: "CapabilitiesReport" as const,
        transactionId,
        capabilities: {
          balloon: (value.caps & 1n) !== 0n,
          hotAdd: (value.caps & 2n) !== 0n,
          hotAddAlignment: Number((value.caps >> 2n) & 0xfn),
          hotRemove: (value.caps & 0x40n) !== 0n
        },
        minPageCount: value.min_page_cnt,
        maxPageNumber: value.max_page_number
      }))
    case DM_CAPABILITIES_RESPONSE:
      return Either.map(dec(DmCapabilitiesResponse), ({ value }) => ({
        _tag: "CapabilitiesResponse" as const,
        transactionId,
        isAccepted: (value.flags & 1n) !== 0n,
        hotRemove: (value.flags & 2n) !== 0n,
        suppressPressureReports: (value.flags & 4n) !== 0n
      }))
    case DM_STATUS_REPORT:
      return Either.map(dec(DmStatus), ({ value }) => ({
        _tag: "StatusReport" as const,
        transactionId,
        numAvail: value.num_avail,
        numCommitted: value.num_committed,
        pageFileSize: value.page_file_size,
        zeroFree: value.zero_free,
        pageFileWrites: value.page_file_writes,
        ioDiff: value.io_diff
      }))
    case DM_BALLOON_REQUEST:
      return Either.map(dec(DmBalloon), ({ value }) => ({ _tag: "BalloonRequest" as const, transactionId, numPages: value.num_pages }))
    case DM_BALLOON_RESPONSE:
      return Either.flatMap(dec(DmBalloonResponse), ({ value }) =>
        Either.map(ranged(value.flags >>> 1), (ranges) => ({
          _tag: "BalloonResponse" as const,
          transactionId,
          morePages: (value.flags & 1) === 1,
          ranges
        })))
    case DM_UNBALLOON_REQUEST:
      return Either.flatMap(dec(DmUnballoonRequest), ({ value }) =>
        Either.map(ranged(value.range_count), (ranges) => ({
          _tag: "UnballoonRequest" as const,
          transactionId,
          morePages: (value.flags & 1) === 1,
          ranges
        })))
    case DM_UNBALLOON_RESPONSE:
      return Either.right({ _tag: "UnballoonResponse", transactionId })
    case DM_MEM_HOT_ADD_REQUEST:
      return Either.map(dec(DmHotAdd), ({ value }) => ({
        _tag: "HotAddRequest" as const,
        transactionId,
        range: decodeRange(value.range),
        region: size >= 24 ? readRanges(bytes, 16, 1)[0] : undefined
      }))
    case DM_MEM_HOT_ADD_RESPONSE:
      return Either.map(dec(DmHotAddResponse), ({ value }) => ({
        _tag: "HotAddResponse" as const,
        transactionId,
        pageCount: value.page_count,
        result: value.result
      }))
    default: {
      // DM_INFO_MESSAGE (the only type left in MIN_SIZE).
      return Either.flatMap(dec(DmInfoMessage), ({ value }) => {
        if (16 + value.info_size > size) return fail(`info message announces ${value.info_size} bytes, ${size - 16} present`)
        const info = bytes.slice(16, 16 + value.info_size)
        const infoHeader = BinarySchema.decodePrefix(DmInfoHeader)(info)
        const infoType = Either.isRight(infoHeader) ? infoHeader.right.value.type : undefined
        const maxPageCount = Either.isRight(infoHeader) && infoType === INFO_TYPE_MAX_PAGE_CNT &&
            infoHeader.right.value.data_size >= 8 && info.length >= 16
          ? new DataView(info.buffer, info.byteOffset + 8, 8).getBigUint64(0, true)
          : undefined
        return Either.right({ _tag: "InfoMessage" as const, transactionId, infoType, maxPageCount, info })
      })
    }
  }
}

/** Splits `ranges` so that none exceeds the 24-bit page count of `dm_mem_page_range`. */
export const splitRanges = (ranges: ReadonlyArray<PageRange>): Array<PageRange> => {
  const out: Array<PageRange> = []
  for (const range of ranges) {
    let start = range.startPage
    let left = range.pageCount
    while (left > 0) {
      const n = Math.min(left, MAX_RANGE_PAGES)
      out.push({ startPage: start, pageCount: n })
      start += n
      left -= n
    }
  }
  return out
}

/** Coalesces sorted-or-not PFNs into maximal runs (input order of runs follows the PFNs' order). */
export const rangesOfPfns = (pfns: ReadonlyArray<number>): Array<PageRange> => {
  const sorted = [...pfns].sort((a, b) => a - b)
  const out: Array<{ startPage: number; pageCount: number }> = []
  for (const pfn of sorted) {
    const last = out[out.length - 1]
    if (last !== undefined && last.startPage + last.pageCount === pfn && last.pageCount < MAX_RANGE_PAGES) last.pageCount++
    else out.push({ startPage: pfn, pageCount: 1 })
  }
  return out
}

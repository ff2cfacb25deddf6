// Packet descriptor and the four supported packet kinds (wire-format.md §2). Synchronous, over
// Uint8Array/DataView; errors are returned, never thrown.
import { InvalidParameter, MalformedPacket, PacketTooLarge, RingCorrupt } from "../VmbusError.js"
import * as L from "./layout.js"

export interface TransferPageRange {
  /** Bytes in the range. */
  readonly byteCount: number
  /** Offset of the range in the transfer page set. */
  readonly byteOffset: number
}

export interface GpaRange {
  /** Bytes in the range. */
  readonly byteCount: number
  /** Offset of the data in the first page (0–4095). */
  readonly byteOffset: number
  /** Page frame numbers of the range, in order. */
  readonly pfns: ReadonlyArray<number>
}

/**
 * The descriptor's `flags` word, kept as DPDK keeps it (any bits, on any type). On a data packet bit 0
 * is `completionRequested`; `flags` is present on a decoded packet only when it holds more than that
 * bit says (on a completion: any bit), so the usual packets read as before. A sender may set it; what
 * it writes is `flags | (completionRequested ? 1 : 0)`.
 */
interface Flagged {
  /** The descriptor's flags word when it says more than `completionRequested` (see above). */
  readonly flags?: number | undefined
}

export interface InBandPacket extends Flagged {
  readonly _tag: "InBand"
  /** The sender's id for the transaction; 0 when no completion is requested. */
  readonly transactionId: bigint
  /** Whether the receiver must send a completion. */
  readonly completionRequested: boolean
  /** The payload (padded to 8 bytes on the wire). */
  readonly payload: Uint8Array
}

export interface CompletionPacket extends Flagged {
  readonly _tag: "Completion"
  /** The id of the request this completes. */
  readonly transactionId: bigint
  /** The completion payload (padded to 8 bytes on the wire). */
  readonly payload: Uint8Array
}

export interface TransferPagesPacket extends Flagged {
  readonly _tag: "TransferPages"
  /** The sender's id for the transaction; 0 when no completion is requested. */
  readonly transactionId: bigint
  /** Whether the receiver must send a completion. */
  readonly completionRequested: boolean
  /** The transfer page set the ranges refer to. */
  readonly transferPageSetId: number
  /** The `sender_owns_set` byte of the header. */
  readonly senderOwnsSet: boolean
  /** The ranges within the transfer page set. */
  readonly ranges: ReadonlyArray<TransferPageRange>
  /** The in-band payload after the ranges. */
  readonly payload: Uint8Array
}

export interface GpaDirectPacket extends Flagged {
  readonly _tag: "GpaDirect"
  /** The sender's id for the transaction; 0 when no completion is requested. */
  readonly transactionId: bigint
  /** Whether the receiver must send a completion. */
  readonly completionRequested: boolean
  /** The guest page ranges the receiver may access. */
  readonly ranges: ReadonlyArray<GpaRange>
  /** The in-band payload after the ranges. */
  readonly payload: Uint8Array
}

/**
 * A well-framed packet of a type this library does not interpret (anything but 0x6, 0x7, 0x9, 0xB):
 * `header` holds the bytes between the descriptor and the payload (`offset8 * 8 - 16`, a multiple of 8).
 * Decoding never fails on the type, so a reader can always move past such a packet; what to do with it
 * is the reader's policy (the channel's `unknownPackets`).
 */
export interface UnknownPacket extends Flagged {
  readonly _tag: "Unknown"
  /** The wire type (u16), none of those this library interprets. */
  readonly type: number
  /** The descriptor's transaction id (u64). */
  readonly transactionId: bigint
  /** Bit 0 of the flags word. */
  readonly completionRequested: boolean
  /** The bytes between the descriptor and the payload (a multiple of 8). */
  readonly header: Uint8Array
  /** The bytes from `offset8 * 8` to the end of the packet, zero padding included. */
  readonly payload: Uint8Array
}

export type Packet = InBandPacket | CompletionPacket | TransferPagesPacket | GpaDirectPacket | UnknownPacket

/** Wire type values this library interprets. */
export const isKnownType = (type: number): boolean =>
  type === L.PACKET_TYPE_IN_BAND || type === L.PACKET_TYPE_TRANSFER_PAGES || type === L.PACKET_TYPE_GPA_DIRECT ||
  type === L.PACKET_TYPE_COMPLETION

/** The flags word a packet is written with. */
export const wireFlags = (packet: Packet): number =>
  packet._tag === "Completion"
    ? packet.flags ?? 0
    : (packet.flags ?? 0) | (packet.completionRequested ? L.FLAG_COMPLETION_REQUESTED : 0)

/** Flag bits of a data packet other than COMPLETION_REQUESTED (none defined; a peer may still set them). */
export const unknownFlagBits = (packet: Packet): number =>
  packet._tag === "Completion" ? 0 : (packet.flags ?? 0) & ~L.FLAG_COMPLETION_REQUESTED

const U64_MAX = 0xffff_ffff_ffff_ffffn

const typeHeaderSize = (packet: Packet): number => {
  switch (packet._tag) {
    case "InBand":
    case "Completion":
      return 0
    case "Unknown":
      return packet.header.length
    case "TransferPages":
      return L.EXTENDED_HEADER_SIZE + packet.ranges.length * L.TRANSFER_PAGE_RANGE_SIZE
    case "GpaDirect": {
      let size = L.EXTENDED_HEADER_SIZE
      for (const range of packet.ranges) size += L.GPA_RANGE_HEADER_SIZE + range.pfns.length * L.PFN_SIZE
      return size
    }
  }
}

/** Bytes from the start of the descriptor to the payload (`offset8 * 8`). */
export const headerSize = (packet: Packet): number => L.DESCRIPTOR_SIZE + typeHeaderSize(packet)

/** `len8 * 8`: the packet's length in the ring without its trailer. */
export const packetLength = (packet: Packet): number => L.align8Safe(headerSize(packet) + packet.payload.length)

/** Bytes a packet takes in the ring, trailer included. */
export const ringSize = (packet: Packet): number => packetLength(packet) + L.TRAILER_SIZE

/** Bytes an in-band (or completion) packet with `payloadLength` payload bytes takes in the ring. */
export const inBandRingSize = (payloadLength: number): number =>
  L.align8Safe(L.DESCRIPTOR_SIZE + payloadLength) + L.TRAILER_SIZE

/** Bytes a GPA-direct packet takes in the ring for the given range page counts and payload. */
export const gpaDirectRingSize = (pagesPerRange: ReadonlyArray<number>, payloadLength: number): number => {
  let header = L.DESCRIPTOR_SIZE + L.EXTENDED_HEADER_SIZE
  for (const pages of pagesPerRange) header += L.GPA_RANGE_HEADER_SIZE + pages * L.PFN_SIZE
  return L.align8Safe(header + payloadLength) + L.TRAILER_SIZE
}

const isU32 = (n: number): boolean => Number.isInteger(n) && n >= 0 && n <= 0xffff_ffff

/** Checks that an outgoing packet can be encoded: field ranges, range shapes, length limit. */
export const validateOutgoing = (packet: Packet): InvalidParameter | PacketTooLarge | undefined => {
  if (typeof packet.transactionId !== "bigint" || packet.transactionId < 0n || packet.transactionId > U64_MAX) {
    return new InvalidParameter({ field: "transactionId", reason: "must be a u64", value: packet.transactionId })
  }
  const flags = packet.flags
  if (flags !== undefined) {
    if (!Number.isInteger(flags) || flags < 0 || flags > 0xffff) {
      return new InvalidParameter({ field: "flags", reason: "must be a u16", value: flags })
    }
    if (packet._tag !== "Completion" && (flags & L.FLAG_COMPLETION_REQUESTED) !== 0 && !packet.completionRequested) {
      return new InvalidParameter({ field: "flags", reason: "bit 0 is completionRequested, which is false", value: flags })
    }
  }
  switch (packet._tag) {
    case "Unknown": {
      if (!Number.isInteger(packet.type) || packet.type < 0 || packet.type > 0xffff || isKnownType(packet.type)) {
        return new InvalidParameter({ field: "type", reason: "an unknown packet needs a u16 type other than 0x6, 0x7, 0x9, 0xB", value: packet.type })
      }
      if (packet.header.length % 8 !== 0 || L.DESCRIPTOR_SIZE + packet.header.length > 0xffff * 8) {
        return new InvalidParameter({ field: "header", reason: "must be a multiple of 8 bytes", value: packet.header.length })
      }
      break
    }
    case "TransferPages": {
      if (!Number.isInteger(packet.transferPageSetId) || packet.transferPageSetId < 0 || packet.transferPageSetId > 0xffff) {
        return new InvalidParameter({ field: "transferPageSetId", reason: "must be a u16", value: packet.transferPageSetId })
      }
      for (let i = 0; i < packet.ranges.length; i++) {
        const range = packet.ranges[i]!
        if (!isU32(range.byteCount) || !isU32(range.byteOffset)) {
          return new InvalidParameter({ field: `ranges[${i}]`, reason: "byteCount and byteOffset must be u32" })
        }
      }
      break
    }
    case "GpaDirect": {
      if (packet.ranges.length === 0) {
        return new InvalidParameter({ field: "ranges", reason: "a GPA-direct packet needs at least one range" })
      }
      for (let i = 0; i < packet.ranges.length; i++) {
        const reason = gpaRangeProblem(packet.ranges[i]!)
        if (reason !== undefined) return new InvalidParameter({ field: `ranges[${i}]`, reason })
      }
      break
    }
    default:
      break
  }
  const length = packetLength(packet)
  if (length > L.MAX_PACKET_LENGTH) return new PacketTooLarge({ size: length, max: L.MAX_PACKET_LENGTH })
  return undefined
}

/** Why a GPA range is unacceptable, or undefined (OpenVMM gparange.rs rules). */
export const gpaRangeProblem = (range: GpaRange): string | undefined => {
  if (!isU32(range.byteCount) || range.byteCount === 0) return "byteCount must be a non-zero u32"
  if (!Number.isInteger(range.byteOffset) || range.byteOffset < 0 || range.byteOffset > L.MAX_GPA_BYTE_OFFSET) {
    return "byteOffset must be within the first page (0..0xFFF)"
  }
  const pages = L.pageCount(range.byteOffset, range.byteCount)
  if (range.pfns.length !== pages) return `needs ${pages} PFNs for offset and length, has ${range.pfns.length}`
  for (const pfn of range.pfns) {
    if (!Number.isSafeInteger(pfn) || pfn < 0) return `PFN ${pfn} is not a valid page frame number`
  }
  return undefined
}

/**
 * Writes the descriptor and type-specific header of `packet` into `target` at 0 and returns its size.
 * `target` must hold `headerSize(packet)` bytes. The packet must have passed `validateOutgoing`.
 */
export const encodeHeaderInto = (packet: Packet, target: Uint8Array, view: DataView): number => {
  const header = headerSize(packet)
  const length = L.align8Safe(header + packet.payload.length)
  let type: number
  switch (packet._tag) {
    case "InBand":
      type = L.PACKET_TYPE_IN_BAND
      break
    case "Completion":
      type = L.PACKET_TYPE_COMPLETION
      break
    case "TransferPages":
      type = L.PACKET_TYPE_TRANSFER_PAGES
      break
    case "GpaDirect":
      type = L.PACKET_TYPE_GPA_DIRECT
      break
    case "Unknown":
      type = packet.type
      break
  }
  view.setUint16(0, type, true)
  view.setUint16(2, header / 8, true)
  view.setUint16(4, length / 8, true)
  view.setUint16(6, wireFlags(packet), true)
  view.setBigUint64(8, packet.transactionId, true)
  if (packet._tag === "Unknown") {
    target.set(packet.header, L.DESCRIPTOR_SIZE)
  } else if (packet._tag === "TransferPages") {
    view.setUint16(16, packet.transferPageSetId, true)
    target[18] = packet.senderOwnsSet ? 1 : 0
    target[19] = 0
    view.setUint32(20, packet.ranges.length, true)
    let at = 24
    for (const range of packet.ranges) {
      view.setUint32(at, range.byteCount, true)
      view.setUint32(at + 4, range.byteOffset, true)
      at += 8
    }
  } else if (packet._tag === "GpaDirect") {
    view.setUint32(16, 0, true)
    view.setUint32(20, packet.ranges.length, true)
    let at = 24
    for (const range of packet.ranges) {
      view.setUint32(at, range.byteCount, true)
      view.setUint32(at + 4, range.byteOffset, true)
      at += 8
      for (const pfn of range.pfns) {
        view.setBigUint64(at, BigInt(pfn), true)
        at += 8
      }
    }
  }
  return header
}

/** Encodes a whole packet (descriptor, header, payload, zero padding; no trailer). */
export const encode = (packet: Packet): Uint8Array | InvalidParameter | PacketTooLarge => {
  const problem = validateOutgoing(packet)
  if (problem !== undefined) return problem
  const bytes = new Uint8Array(packetLength(packet))
  const view = new DataView(bytes.buffer)
  const header = encodeHeaderInto(packet, bytes, view)
  bytes.set(packet.payload, header)
  return bytes
}

const corrupt = (reason: string, field: string, offset: number | undefined, value?: unknown): RingCorrupt =>
  new RingCorrupt({ reason, field, ...(offset === undefined ? {} : { offset }), ...(value === undefined ? {} : { value }) })

/**
 * Decodes a packet from a private copy of its bytes (exactly `len8 * 8` long). Structural problems —
 * lengths that do not add up, range arrays that do not fit the header — are `RingCorrupt`, since no
 * correct writer produces them. The type and flags are kept as they are (DPDK): a type this library
 * does not interpret is an `Unknown` packet, flag bits beyond bit 0 are in `flags`; what to do with
 * them is the reader's policy. `at` is the packet's data-area offset, for error reports.
 */
export const decode = (bytes: Uint8Array, at?: number): Packet | RingCorrupt => decodeAt(bytes, 0, bytes.length, at)

/** `decode` of `buffer[start, start + size)`, without a view of its own for the common packet kinds. */
export const decodeAt = (buffer: Uint8Array, start: number, size: number, at?: number): Packet | RingCorrupt => {
  if (size < L.DESCRIPTOR_SIZE || size % 8 !== 0) {
    return corrupt("packet shorter than a descriptor or not a multiple of 8", "len8", at, size)
  }
  const b = start
  const type = buffer[b]! | (buffer[b + 1]! << 8)
  const offset = (buffer[b + 2]! | (buffer[b + 3]! << 8)) * 8
  const length = (buffer[b + 4]! | (buffer[b + 5]! << 8)) * 8
  const flags = buffer[b + 6]! | (buffer[b + 7]! << 8)
  if (length !== size) return corrupt("len8 does not match the packet length", "len8", at, length / 8)
  if (offset < L.DESCRIPTOR_SIZE || offset > length) return corrupt("offset8 out of range", "offset8", at, offset / 8)
  const completionRequested = (flags & L.FLAG_COMPLETION_REQUESTED) !== 0
  // Present only when it says more than completionRequested (on a completion: any bit), see Flagged.
  const extra = type === L.PACKET_TYPE_COMPLETION ? flags !== 0 : (flags & ~L.FLAG_COMPLETION_REQUESTED) !== 0
  const low = (buffer[b + 8]! | (buffer[b + 9]! << 8) | (buffer[b + 10]! << 16) | (buffer[b + 11]! << 24)) >>> 0
  const high = (buffer[b + 12]! | (buffer[b + 13]! << 8) | (buffer[b + 14]! << 16) | (buffer[b + 15]! << 24)) >>> 0
  // Exact as a number below 2^53; BigInt arithmetic only for the rare larger ids.
  const transactionId = high === 0 && low === 0
    ? 0n
    : high < 0x20_0000
    ? BigInt(high * 0x1_0000_0000 + low)
    : (BigInt(high) << 32n) | BigInt(low)
  const payload = buffer.subarray(b + offset, b + length)
  switch (type) {
    case L.PACKET_TYPE_IN_BAND:
      return extra
        ? { _tag: "InBand", transactionId, completionRequested, payload, flags }
        : { _tag: "InBand", transactionId, completionRequested, payload }
    case L.PACKET_TYPE_COMPLETION:
      // A completion requesting a completion has no meaning; OpenVMM accepts the bit, DPDK any bit: kept.
      return extra ? { _tag: "Completion", transactionId, payload, flags } : { _tag: "Completion", transactionId, payload }
    default:
      break
  }
  const withFlags = <A extends Packet>(packet: A): A => (extra ? { ...packet, flags } : packet)
  const bytes = buffer.subarray(b, b + length)
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  switch (type) {
    case L.PACKET_TYPE_TRANSFER_PAGES: {
      if (offset < L.DESCRIPTOR_SIZE + L.EXTENDED_HEADER_SIZE) {
        return corrupt("transfer-page packet without its sub-header", "offset8", at, offset / 8)
      }
      const transferPageSetId = view.getUint16(16, true)
      const senderOwnsSet = bytes[18] !== 0
      const count = view.getUint32(20, true)
      const room = (offset - 24) / 8
      if (count > room) return corrupt("transfer range count exceeds the header", "range_cnt", at, count)
      const ranges: Array<TransferPageRange> = new Array(count)
      for (let i = 0, p = 24; i < count; i++, p += 8) {
        ranges[i] = { byteCount: view.getUint32(p, true), byteOffset: view.getUint32(p + 4, true) }
      }
      return withFlags({ _tag: "TransferPages", transactionId, completionRequested, transferPageSetId, senderOwnsSet, ranges, payload })
    }
    case L.PACKET_TYPE_GPA_DIRECT: {
      if (offset < L.DESCRIPTOR_SIZE + L.EXTENDED_HEADER_SIZE) {
        return corrupt("GPA-direct packet without its sub-header", "offset8", at, offset / 8)
      }
      const count = view.getUint32(20, true)
      if (count === 0) return corrupt("GPA-direct packet with no range", "range_cnt", at, 0)
      const ranges: Array<GpaRange> = []
      let p = 24
      for (let i = 0; i < count; i++) {
        if (p + 8 > offset) return corrupt("GPA range header beyond offset8", "range_cnt", at, count)
        const byteCount = view.getUint32(p, true)
        const byteOffset = view.getUint32(p + 4, true)
        p += 8
        const pages = L.pageCount(byteOffset, byteCount)
        if (p + pages * 8 > offset) return corrupt("GPA range PFNs beyond offset8", `gpa_range[${i}].pfn_array`, at, pages)
        const pfns: Array<number> = new Array(pages)
        for (let k = 0; k < pages; k++, p += 8) {
          const pfn = view.getBigUint64(p, true)
          // PFNs above 2^52 name no 64-bit physical address; they also keep numbers exact.
          if (pfn > 0xf_ffff_ffff_ffffn) return corrupt("PFN out of range", `gpa_range[${i}].pfn_array`, at, pfn)
          pfns[k] = Number(pfn)
        }
        ranges.push({ byteCount, byteOffset, pfns })
      }
      return withFlags({ _tag: "GpaDirect", transactionId, completionRequested, ranges, payload })
    }
    default:
      return withFlags({ _tag: "Unknown", type, transactionId, completionRequested, header: bytes.subarray(L.DESCRIPTOR_SIZE, offset), payload })
  }
}

/**
 * Content checks on the ranges of a received GPA-direct packet (non-zero length, offset in the first
 * page). A failure concerns one packet, not the ring: the receiver completes it with a failure status.
 */
export const validateGpaRanges = (ranges: ReadonlyArray<GpaRange>): MalformedPacket | undefined => {
  for (let i = 0; i < ranges.length; i++) {
    const reason = gpaRangeProblem(ranges[i]!)
    if (reason !== undefined) return new MalformedPacket({ reason, field: `gpa_range[${i}]` })
  }
  return undefined
}

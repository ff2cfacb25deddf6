// VMBus channel-management messages (wire-format.md §4–§5): byte-exact encode/decode over
// Uint8Array/DataView, GPADL message splitting and host-side GPADL reassembly. Synchronous, no
// Effect inside; errors are returned as Either values, never thrown.
import * as Either from "effect/Either"
import { GpadlTooLarge, InvalidParameter, MalformedMessage } from "../VmbusError.js"

// ---------------------------------------------------------------------------------------------
// Constants
// ---------------------------------------------------------------------------------------------

export const PAGE_SIZE = 4096
export const MAX_CHANNEL_MESSAGE_SIZE = 240
export const HEADER_SIZE = 8
export const OFFER_CHANNEL_SIZE = 196
export const OPEN_CHANNEL_SIZE = 148
export const USER_DEFINED_SIZE = 120
export const GUID_SIZE = 16
/** `vmbus_channel_gpadl_header` fixed part (20) plus one range header (8). */
export const GPADL_HEADER_FIXED_SIZE = 28
export const GPADL_BODY_FIXED_SIZE = 16
export const GPADL_HEADER_MAX_PFNS = 26
export const GPADL_BODY_MAX_PFNS = 28
export const GPA_RANGE_HEADER_SIZE = 8
export const PFN_SIZE = 8
export const FIRST_GPADL_HANDLE = 0xe1e10
/** `range_buflen` is a u16: `(65535 − 8) / 8` PFNs fit in one range. */
export const MAX_GPADL_PAGES = 8190
export const MAX_BYTE_OFFSET = 0xfff
/** PFNs are u64 on the wire; kept as numbers, 52 bits (4 KiB frames of a 64-bit address). */
export const MAX_PFN = 0xf_ffff_ffff_ffff

export const MessageType = {
  OfferChannel: 1,
  RescindChannelOffer: 2,
  RequestOffers: 3,
  AllOffersDelivered: 4,
  OpenChannel: 5,
  OpenChannelResult: 6,
  CloseChannel: 7,
  GpadlHeader: 8,
  GpadlBody: 9,
  GpadlCreated: 10,
  GpadlTeardown: 11,
  GpadlTorndown: 12,
  RelidReleased: 13,
  InitiateContact: 14,
  VersionResponse: 15,
  Unload: 16,
  UnloadResponse: 17
} as const

export type MessageTag = keyof typeof MessageType

/** Minimum total length (header included) of each known message type, as Linux's `min_payload_len`. */
export const MinimumSize: { readonly [K in MessageTag]: number } = {
  OfferChannel: OFFER_CHANNEL_SIZE,
  RescindChannelOffer: 12,
  RequestOffers: 8,
  AllOffersDelivered: 8,
  OpenChannel: OPEN_CHANNEL_SIZE,
  OpenChannelResult: 20,
  CloseChannel: 12,
  GpadlHeader: GPADL_HEADER_FIXED_SIZE,
  GpadlBody: GPADL_BODY_FIXED_SIZE,
  GpadlCreated: 20,
  GpadlTeardown: 16,
  GpadlTorndown: 12,
  RelidReleased: 12,
  InitiateContact: 40,
  VersionResponse: 16,
  Unload: 8,
  UnloadResponse: 8
}

const tagByType: ReadonlyArray<MessageTag | undefined> = (() => {
  const out: Array<MessageTag | undefined> = []
  for (const tag of Object.keys(MessageType) as Array<MessageTag>) out[MessageType[tag]] = tag
  return out
})()

export const ChannelFlag = {
  EnumerateDeviceInterface: 0x1,
  ServerSupportsTransferPages: 0x2,
  ServerSupportsGpadls: 0x4,
  NamedPipeMode: 0x10,
  LoopbackOffer: 0x100,
  ParentOffer: 0x200,
  RequestMonitoredNotification: 0x400,
  TlnpiProviderOffer: 0x2000
} as const

// ---------------------------------------------------------------------------------------------
// Models
// ---------------------------------------------------------------------------------------------

export interface OfferChannel {
  readonly _tag: "OfferChannel"
  /** The device class GUID. */
  readonly interfaceType: string
  /** The device instance GUID. */
  readonly interfaceInstance: string
  /** Reserved (`reserved1`, 8 bytes; written as zero). */
  readonly reserved1: bigint
  /** Reserved (`reserved2`, 8 bytes; written as zero). */
  readonly reserved2: bigint
  /** `VMBUS_CHANNEL_*` flags of the offer (`ChannelFlag`). */
  readonly channelFlags: number
  /** MMIO space the device needs, in MiB. */
  readonly mmioMegabytes: number
  /** The offer's 120 bytes of user-defined data (pipe mode parameters, …). */
  readonly userDefined: Uint8Array
  /** 0 for a primary channel, else the sub-channel's index. */
  readonly subChannelIndex: number
  /** Reserved (written as zero). */
  readonly reserved3: number
  /** The relative channel id the host assigns. */
  readonly childRelid: number
  /** The monitor id for monitored notification (see `monitorAllocated`). */
  readonly monitorId: number
  /** Whether a monitor id is allocated. */
  readonly monitorAllocated: boolean
  /** Whether the channel has a dedicated interrupt. */
  readonly isDedicatedInterrupt: boolean
  /** The connection id the guest signals the host with. */
  readonly connectionId: number
}

export interface RescindChannelOffer {
  readonly _tag: "RescindChannelOffer"
  /** The channel rescinded. */
  readonly childRelid: number
}

export interface RequestOffers {
  readonly _tag: "RequestOffers"
}

export interface AllOffersDelivered {
  readonly _tag: "AllOffersDelivered"
}

export interface OpenChannel {
  readonly _tag: "OpenChannel"
  /** The channel to open. */
  readonly childRelid: number
  /** An id the guest chooses, echoed in OPENCHANNEL_RESULT. */
  readonly openId: number
  /** The GPADL that holds both rings. */
  readonly ringBufferGpadlHandle: number
  /** The virtual processor to interrupt. */
  readonly targetVp: number
  /** Pages of the ring GPADL before the host→guest ring (the guest→host ring's size). */
  readonly downstreamRingBufferPageOffset: number
  /** Up to 120 bytes of user data. */
  readonly userData: Uint8Array
}

export interface OpenChannelResult {
  readonly _tag: "OpenChannelResult"
  /** The channel opened. */
  readonly childRelid: number
  /** The `openId` of the OPENCHANNEL answered. */
  readonly openId: number
  /** 0 on success, else the host's error status. */
  readonly status: number
}

export interface CloseChannel {
  readonly _tag: "CloseChannel"
  /** The channel to close. */
  readonly childRelid: number
}

export interface GpadlHeader {
  readonly _tag: "GpadlHeader"
  /** The channel the GPADL belongs to. */
  readonly childRelid: number
  /** The handle the guest chose for the GPADL. */
  readonly handle: number
  /** Bytes of the range description (8 + 8 × PFN count). */
  readonly rangeBufLength: number
  /** Number of ranges (always 1 here). */
  readonly rangeCount: number
  /** Bytes the range covers. */
  readonly byteCount: number
  /** Offset of the data in the first page. */
  readonly byteOffset: number
  /** The PFNs carried by this message (the rest follow in GPADL_BODY messages). */
  readonly pfns: ReadonlyArray<number>
}

export interface GpadlBody {
  readonly _tag: "GpadlBody"
  /** Sequence number of this body message. */
  readonly msgNumber: number
  /** The GPADL's handle. */
  readonly handle: number
  /** The next PFNs of the GPADL. */
  readonly pfns: ReadonlyArray<number>
}

export interface GpadlCreated {
  readonly _tag: "GpadlCreated"
  /** The channel the GPADL belongs to. */
  readonly childRelid: number
  /** The GPADL's handle. */
  readonly handle: number
  /** 0 when the host accepted the GPADL, else its error status. */
  readonly creationStatus: number
}

export interface GpadlTeardown {
  readonly _tag: "GpadlTeardown"
  /** The channel the GPADL belongs to. */
  readonly childRelid: number
  /** The GPADL to tear down. */
  readonly handle: number
}

export interface GpadlTorndown {
  readonly _tag: "GpadlTorndown"
  /** The GPADL torn down. */
  readonly handle: number
}

export interface RelidReleased {
  readonly _tag: "RelidReleased"
  /** The channel whose relid the guest releases. */
  readonly childRelid: number
}

export interface InitiateContact {
  readonly _tag: "InitiateContact"
  /** The VMBus protocol version the guest asks for. */
  readonly vmbusVersionRequested: number
  /** The virtual processor the host interrupts. */
  readonly targetVcpu: number
  /** Guest physical address of the interrupt page. */
  readonly interruptPage: bigint
  /** Guest physical address of the first monitor page. */
  readonly monitorPage1: bigint
  /** Guest physical address of the second monitor page. */
  readonly monitorPage2: bigint
}

export interface VersionResponse {
  readonly _tag: "VersionResponse"
  /** Whether the host accepts the version requested. */
  readonly versionSupported: boolean
  /** The connection state the host reports. */
  readonly connectionState: number
  /** The connection id for guest→host messages. */
  readonly msgConnId: number
}

export interface Unload {
  readonly _tag: "Unload"
}

export interface UnloadResponse {
  readonly _tag: "UnloadResponse"
}

export type ChannelMessage =
  | OfferChannel
  | RescindChannelOffer
  | RequestOffers
  | AllOffersDelivered
  | OpenChannel
  | OpenChannelResult
  | CloseChannel
  | GpadlHeader
  | GpadlBody
  | GpadlCreated
  | GpadlTeardown
  | GpadlTorndown
  | RelidReleased
  | InitiateContact
  | VersionResponse
  | Unload
  | UnloadResponse

// ---------------------------------------------------------------------------------------------
// GUIDs (Windows mixed-endian layout: Data1 u32 LE, Data2 u16 LE, Data3 u16 LE, Data4 8 bytes)
// ---------------------------------------------------------------------------------------------

const HEX: ReadonlyArray<string> = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"))
const GUID_PATTERN = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/
/** Byte index in the wire layout of each of the 16 bytes in canonical string order. */
const GUID_WIRE_ORDER: ReadonlyArray<number> = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15]

export const isGuid = (s: string): boolean => GUID_PATTERN.test(s)

export const guidFromBytes = (bytes: Uint8Array, offset: number = 0): string => {
  let s = ""
  for (let i = 0; i < 16; i++) {
    if (i === 4 || i === 6 || i === 8 || i === 10) s += "-"
    s += HEX[bytes[offset + GUID_WIRE_ORDER[i]!]!]
  }
  return s
}

/** Writes a GUID already known to be valid; an invalid string writes zeros. */
const writeGuid = (out: Uint8Array, offset: number, guid: string): void => {
  if (!GUID_PATTERN.test(guid)) return
  const hex = guid.replace(/-/g, "")
  for (let i = 0; i < 16; i++) out[offset + GUID_WIRE_ORDER[i]!] = parseInt(hex.slice(i * 2, i * 2 + 2), 16)
}

export const guidToBytes = (guid: string): Either.Either<Uint8Array, InvalidParameter> => {
  if (!GUID_PATTERN.test(guid)) {
    return Either.left(new InvalidParameter({ field: "guid", reason: "not a canonical GUID string", value: guid }))
  }
  const out = new Uint8Array(GUID_SIZE)
  writeGuid(out, 0, guid)
  return Either.right(out)
}

// ---------------------------------------------------------------------------------------------
// Sizes and validation of outgoing messages
// ---------------------------------------------------------------------------------------------

export const byteLength = (msg: ChannelMessage): number => {
  switch (msg._tag) {
    case "GpadlHeader":
      return GPADL_HEADER_FIXED_SIZE + msg.pfns.length * PFN_SIZE
    case "GpadlBody":
      return GPADL_BODY_FIXED_SIZE + msg.pfns.length * PFN_SIZE
    default:
      return MinimumSize[msg._tag]
  }
}

const isU = (bits: 8 | 16 | 32, n: number): boolean => Number.isInteger(n) && n >= 0 && n < 2 ** bits
const U64_MAX = 0xffff_ffff_ffff_ffffn
const isU64 = (n: bigint): boolean => typeof n === "bigint" && n >= 0n && n <= U64_MAX
export const isPfn = (n: number): boolean => Number.isSafeInteger(n) && n >= 0 && n <= MAX_PFN

const invalid = (field: string, reason: string, value?: unknown): InvalidParameter =>
  new InvalidParameter({ field, reason, value })

type FieldSpec = readonly [name: string, kind: 8 | 16 | 32 | 64 | "guid" | "bytes120" | "pfns"]

const FIELDS: { readonly [K in MessageTag]: ReadonlyArray<FieldSpec> } = {
  OfferChannel: [
    ["interfaceType", "guid"],
    ["interfaceInstance", "guid"],
    ["reserved1", 64],
    ["reserved2", 64],
    ["channelFlags", 16],
    ["mmioMegabytes", 16],
    ["userDefined", "bytes120"],
    ["subChannelIndex", 16],
    ["reserved3", 16],
    ["childRelid", 32],
    ["monitorId", 8],
    ["connectionId", 32]
  ],
  RescindChannelOffer: [["childRelid", 32]],
  RequestOffers: [],
  AllOffersDelivered: [],
  OpenChannel: [
    ["childRelid", 32],
    ["openId", 32],
    ["ringBufferGpadlHandle", 32],
    ["targetVp", 32],
    ["downstreamRingBufferPageOffset", 32],
    ["userData", "bytes120"]
  ],
  OpenChannelResult: [
    ["childRelid", 32],
    ["openId", 32],
    ["status", 32]
  ],
  CloseChannel: [["childRelid", 32]],
  GpadlHeader: [
    ["childRelid", 32],
    ["handle", 32],
    ["rangeBufLength", 16],
    ["rangeCount", 16],
    ["byteCount", 32],
    ["byteOffset", 32],
    ["pfns", "pfns"]
  ],
  GpadlBody: [
    ["msgNumber", 32],
    ["handle", 32],
    ["pfns", "pfns"]
  ],
  GpadlCreated: [
    ["childRelid", 32],
    ["handle", 32],
    ["creationStatus", 32]
  ],
  GpadlTeardown: [
    ["childRelid", 32],
    ["handle", 32]
  ],
  GpadlTorndown: [["handle", 32]],
  RelidReleased: [["childRelid", 32]],
  InitiateContact: [
    ["vmbusVersionRequested", 32],
    ["targetVcpu", 32],
    ["interruptPage", 64],
    ["monitorPage1", 64],
    ["monitorPage2", 64]
  ],
  VersionResponse: [
    ["connectionState", 8],
    ["msgConnId", 32]
  ],
  Unload: [],
  UnloadResponse: []
}

/** Checks that every field of an outgoing message fits its wire width and the message fits in 240 bytes. */
export const validate = (msg: ChannelMessage): InvalidParameter | undefined => {
  const fields = FIELDS[msg._tag]
  if (fields === undefined) return invalid("_tag", "unknown channel message", (msg as { _tag: unknown })._tag)
  const record = msg as unknown as Record<string, unknown>
  for (const [name, kind] of fields) {
    const value = record[name]
    switch (kind) {
      case 8:
      case 16:
      case 32:
        if (typeof value !== "number" || !isU(kind, value)) return invalid(name, `not a u${kind}`, value)
        break
      case 64:
        if (typeof value !== "bigint" || !isU64(value)) return invalid(name, "not a u64 bigint", value)
        break
      case "guid":
        if (typeof value !== "string" || !isGuid(value)) return invalid(name, "not a canonical GUID string", value)
        break
      case "bytes120":
        if (!(value instanceof Uint8Array) || value.length > USER_DEFINED_SIZE) {
          return invalid(name, `must be a Uint8Array of at most ${USER_DEFINED_SIZE} bytes`)
        }
        break
      case "pfns": {
        const pfns = value as ReadonlyArray<number>
        for (let i = 0; i < pfns.length; i++) {
          if (!isPfn(pfns[i]!)) return invalid(`${name}[${i}]`, "not a page frame number", pfns[i])
        }
        break
      }
    }
  }
  const size = byteLength(msg)
  if (size > MAX_CHANNEL_MESSAGE_SIZE) {
    return invalid("pfns", `message of ${size} bytes exceeds ${MAX_CHANNEL_MESSAGE_SIZE}`, size)
  }
  return undefined
}

// ---------------------------------------------------------------------------------------------
// Encode
// ---------------------------------------------------------------------------------------------

const writePfns = (view: DataView, at: number, pfns: ReadonlyArray<number>): void => {
  for (let i = 0; i < pfns.length; i++) {
    const pfn = pfns[i]!
    view.setUint32(at + i * 8, pfn % 0x1_0000_0000, true)
    view.setUint32(at + i * 8 + 4, Math.floor(pfn / 0x1_0000_0000), true)
  }
}

const writeBytes = (out: Uint8Array, at: number, bytes: Uint8Array): void => {
  out.set(bytes.length > USER_DEFINED_SIZE ? bytes.subarray(0, USER_DEFINED_SIZE) : bytes, at)
}

/** Encodes a message that passes `validate`. Never throws; invalid fields are truncated to their width. */
export const encode = (msg: ChannelMessage): Uint8Array => {
  const out = new Uint8Array(byteLength(msg))
  const view = new DataView(out.buffer)
  view.setUint32(0, MessageType[msg._tag], true)
  switch (msg._tag) {
    case "OfferChannel":
      writeGuid(out, 8, msg.interfaceType)
      writeGuid(out, 24, msg.interfaceInstance)
      view.setBigUint64(40, msg.reserved1, true)
      view.setBigUint64(48, msg.reserved2, true)
      view.setUint16(56, msg.channelFlags, true)
      view.setUint16(58, msg.mmioMegabytes, true)
      writeBytes(out, 60, msg.userDefined)
      view.setUint16(180, msg.subChannelIndex, true)
      view.setUint16(182, msg.reserved3, true)
      view.setUint32(184, msg.childRelid, true)
      view.setUint8(188, msg.monitorId)
      view.setUint8(189, msg.monitorAllocated ? 1 : 0)
      view.setUint16(190, msg.isDedicatedInterrupt ? 1 : 0, true)
      view.setUint32(192, msg.connectionId, true)
      break
    case "RescindChannelOffer":
    case "CloseChannel":
    case "RelidReleased":
      view.setUint32(8, msg.childRelid, true)
      break
    case "RequestOffers":
    case "AllOffersDelivered":
    case "Unload":
    case "UnloadResponse":
      break
    case "OpenChannel":
      view.setUint32(8, msg.childRelid, true)
      view.setUint32(12, msg.openId, true)
      view.setUint32(16, msg.ringBufferGpadlHandle, true)
      view.setUint32(20, msg.targetVp, true)
      view.setUint32(24, msg.downstreamRingBufferPageOffset, true)
      writeBytes(out, 28, msg.userData)
      break
    case "OpenChannelResult":
      view.setUint32(8, msg.childRelid, true)
      view.setUint32(12, msg.openId, true)
      view.setUint32(16, msg.status, true)
      break
    case "GpadlHeader":
      view.setUint32(8, msg.childRelid, true)
      view.setUint32(12, msg.handle, true)
      view.setUint16(16, msg.rangeBufLength, true)
      view.setUint16(18, msg.rangeCount, true)
      view.setUint32(20, msg.byteCount, true)
      view.setUint32(24, msg.byteOffset, true)
      writePfns(view, GPADL_HEADER_FIXED_SIZE, msg.pfns)
      break
    case "GpadlBody":
      view.setUint32(8, msg.msgNumber, true)
      view.setUint32(12, msg.handle, true)
      writePfns(view, GPADL_BODY_FIXED_SIZE, msg.pfns)
      break
    case "GpadlCreated":
      view.setUint32(8, msg.childRelid, true)
      view.setUint32(12, msg.handle, true)
      view.setUint32(16, msg.creationStatus, true)
      break
    case "GpadlTeardown":
      view.setUint32(8, msg.childRelid, true)
      view.setUint32(12, msg.handle, true)
      break
    case "GpadlTorndown":
      view.setUint32(8, msg.handle, true)
      break
    case "InitiateContact":
      view.setUint32(8, msg.vmbusVersionRequested, true)
      view.setUint32(12, msg.targetVcpu, true)
      view.setBigUint64(16, msg.interruptPage, true)
      view.setBigUint64(24, msg.monitorPage1, true)
      view.setBigUint64(32, msg.monitorPage2, true)
      break
    case "VersionResponse":
      view.setUint8(8, msg.versionSupported ? 1 : 0)
      view.setUint8(9, msg.connectionState)
      view.setUint32(12, msg.msgConnId, true)
      break
  }
  return out
}

export const encodeChecked = (msg: ChannelMessage): Either.Either<Uint8Array, InvalidParameter> => {
  const error = validate(msg)
  return error === undefined ? Either.right(encode(msg)) : Either.left(error)
}

// ---------------------------------------------------------------------------------------------
// Decode
// ---------------------------------------------------------------------------------------------

const malformed = (
  reason: string,
  length: number,
  messageType?: number,
  field?: string
): Either.Either<never, MalformedMessage> =>
  Either.left(
    new MalformedMessage({
      reason,
      length,
      ...(messageType === undefined ? {} : { messageType }),
      ...(field === undefined ? {} : { field })
    })
  )

/** Reads `count` u64 PFNs; `undefined` when one exceeds `MAX_PFN`, with its index in `bad`. */
const readPfns = (view: DataView, at: number, count: number, bad: { index: number }): Array<number> | undefined => {
  const pfns: Array<number> = new Array(count)
  for (let i = 0; i < count; i++) {
    const lo = view.getUint32(at + i * 8, true)
    const hi = view.getUint32(at + i * 8 + 4, true)
    if (hi > 0xfffff) {
      bad.index = i
      return undefined
    }
    pfns[i] = hi * 0x1_0000_0000 + lo
  }
  return pfns
}

/**
 * Decodes one channel message (header included). The input is read once, field by field, and
 * variable parts are copied, so the result does not alias `bytes`.
 */
export const decode = (bytes: Uint8Array): Either.Either<ChannelMessage, MalformedMessage> => {
  const length = bytes.byteLength
  if (length > MAX_CHANNEL_MESSAGE_SIZE) {
    return malformed(`message of ${length} bytes exceeds ${MAX_CHANNEL_MESSAGE_SIZE}`, length)
  }
  if (length < HEADER_SIZE) return malformed(`message of ${length} bytes is shorter than its header`, length)
  const view = new DataView(bytes.buffer, bytes.byteOffset, length)
  const type = view.getUint32(0, true)
  const tag = type < tagByType.length ? tagByType[type] : undefined
  if (tag === undefined) return malformed(`unknown message type ${type}`, length, type, "msgtype")
  const min = MinimumSize[tag]
  if (length < min) return malformed(`${tag} needs at least ${min} bytes, has ${length}`, length, type)
  const u32 = (at: number) => view.getUint32(at, true)
  switch (tag) {
    case "OfferChannel":
      return Either.right({
        _tag: tag,
        interfaceType: guidFromBytes(bytes, 8),
        interfaceInstance: guidFromBytes(bytes, 24),
        reserved1: view.getBigUint64(40, true),
        reserved2: view.getBigUint64(48, true),
        channelFlags: view.getUint16(56, true),
        mmioMegabytes: view.getUint16(58, true),
        userDefined: bytes.slice(60, 60 + USER_DEFINED_SIZE),
        subChannelIndex: view.getUint16(180, true),
        reserved3: view.getUint16(182, true),
        childRelid: u32(184),
        monitorId: view.getUint8(188),
        monitorAllocated: (view.getUint8(189) & 1) !== 0,
        isDedicatedInterrupt: (view.getUint16(190, true) & 1) !== 0,
        connectionId: u32(192)
      })
    case "RescindChannelOffer":
    case "CloseChannel":
    case "RelidReleased":
      return Either.right({ _tag: tag, childRelid: u32(8) })
    case "RequestOffers":
    case "AllOffersDelivered":
    case "Unload":
    case "UnloadResponse":
      return Either.right({ _tag: tag })
    case "OpenChannel":
      return Either.right({
        _tag: tag,
        childRelid: u32(8),
        openId: u32(12),
        ringBufferGpadlHandle: u32(16),
        targetVp: u32(20),
        downstreamRingBufferPageOffset: u32(24),
        userData: bytes.slice(28, 28 + USER_DEFINED_SIZE)
      })
    case "OpenChannelResult":
      return Either.right({ _tag: tag, childRelid: u32(8), openId: u32(12), status: u32(16) })
    case "GpadlHeader":
    case "GpadlBody": {
      const fixed = tag === "GpadlHeader" ? GPADL_HEADER_FIXED_SIZE : GPADL_BODY_FIXED_SIZE
      if ((length - fixed) % PFN_SIZE !== 0) {
        return malformed(`PFN array of ${length - fixed} bytes is not a multiple of 8`, length, type, "pfn")
      }
      const bad = { index: 0 }
      const pfns = readPfns(view, fixed, (length - fixed) / PFN_SIZE, bad)
      if (pfns === undefined) return malformed(`PFN ${bad.index} out of range`, length, type, `pfn[${bad.index}]`)
      return Either.right(
        tag === "GpadlHeader"
          ? {
            _tag: tag,
            childRelid: u32(8),
            handle: u32(12),
            rangeBufLength: view.getUint16(16, true),
            rangeCount: view.getUint16(18, true),
            byteCount: u32(20),
            byteOffset: u32(24),
            pfns
          }
          : { _tag: tag, msgNumber: u32(8), handle: u32(12), pfns }
      )
    }
    case "GpadlCreated":
      return Either.right({ _tag: tag, childRelid: u32(8), handle: u32(12), creationStatus: u32(16) })
    case "GpadlTeardown":
      return Either.right({ _tag: tag, childRelid: u32(8), handle: u32(12) })
    case "GpadlTorndown":
      return Either.right({ _tag: tag, handle: u32(8) })
    case "InitiateContact":
      return Either.right({
        _tag: tag,
        vmbusVersionRequested: u32(8),
        targetVcpu: u32(12),
        interruptPage: view.getBigUint64(16, true),
        monitorPage1: view.getBigUint64(24, true),
        monitorPage2: view.getBigUint64(32, true)
      })
    case "VersionResponse":
      return Either.right({
        _tag: tag,
        versionSupported: view.getUint8(8) !== 0,
        connectionState: view.getUint8(9),
        msgConnId: u32(12)
      })
  }
}

// ---------------------------------------------------------------------------------------------
// GPADL: splitting (guest side)
// ---------------------------------------------------------------------------------------------

export interface GpadlMessagesOptions {
  /** The channel the GPADL belongs to. */
  readonly childRelid: number
  /** The handle for the GPADL. */
  readonly handle: number
  /** The guest pages, in order. */
  readonly pfns: ReadonlyArray<number>
  /** Bytes covered (default: every page, minus `byteOffset`). */
  readonly byteCount?: number | undefined
  /** Offset of the data in the first page (default 0). */
  readonly byteOffset?: number | undefined
}

export const pageCount = (byteOffset: number, byteCount: number): number =>
  Math.ceil((byteOffset + byteCount) / PAGE_SIZE)

/**
 * Splits a single-range GPADL into one GPADL_HEADER (up to 26 PFNs) and GPADL_BODY messages (up to 28
 * PFNs each, `msgnumber` 0), as Linux `create_gpadl_header` does.
 */
export const gpadlMessages = (
  options: GpadlMessagesOptions
): Either.Either<ReadonlyArray<GpadlHeader | GpadlBody>, GpadlTooLarge | InvalidParameter> => {
  const { childRelid, handle, pfns } = options
  const pages = pfns.length
  if (pages > MAX_GPADL_PAGES) return Either.left(new GpadlTooLarge({ pages, max: MAX_GPADL_PAGES }))
  if (pages === 0) return Either.left(invalid("pfns", "a GPADL needs at least one page", pages))
  if (!isU(32, childRelid)) return Either.left(invalid("childRelid", "not a u32", childRelid))
  if (!isU(32, handle) || handle === 0) return Either.left(invalid("handle", "not a non-zero u32", handle))
  const byteOffset = options.byteOffset ?? 0
  const byteCount = options.byteCount ?? pages * PAGE_SIZE
  if (!Number.isInteger(byteOffset) || byteOffset < 0 || byteOffset > MAX_BYTE_OFFSET) {
    return Either.left(invalid("byteOffset", `must be an integer in [0, ${MAX_BYTE_OFFSET}]`, byteOffset))
  }
  if (!isU(32, byteCount) || byteCount === 0) {
    return Either.left(invalid("byteCount", "must be a non-zero u32", byteCount))
  }
  if (pageCount(byteOffset, byteCount) !== pages) {
    return Either.left(
      invalid("pfns", `byteOffset and byteCount span ${pageCount(byteOffset, byteCount)} pages, ${pages} PFNs given`)
    )
  }
  for (let i = 0; i < pages; i++) {
    if (!isPfn(pfns[i]!)) return Either.left(invalid(`pfns[${i}]`, "not a page frame number", pfns[i]))
  }
  const inHeader = Math.min(pages, GPADL_HEADER_MAX_PFNS)
  const out: Array<GpadlHeader | GpadlBody> = [{
    _tag: "GpadlHeader",
    childRelid,
    handle,
    rangeBufLength: GPA_RANGE_HEADER_SIZE + pages * PFN_SIZE,
    rangeCount: 1,
    byteCount,
    byteOffset,
    pfns: pfns.slice(0, inHeader)
  }]
  for (let at = inHeader; at < pages; at += GPADL_BODY_MAX_PFNS) {
    out.push({ _tag: "GpadlBody", msgNumber: 0, handle, pfns: pfns.slice(at, at + GPADL_BODY_MAX_PFNS) })
  }
  return Either.right(out)
}

// ---------------------------------------------------------------------------------------------
// GPADL: reassembly (host side)
// ---------------------------------------------------------------------------------------------

export interface CompletedGpadl {
  /** The channel the GPADL belongs to. */
  readonly childRelid: number
  /** The GPADL's handle. */
  readonly handle: number
  /** Bytes the GPADL covers. */
  readonly byteCount: number
  /** Offset of the data in the first page. */
  readonly byteOffset: number
  /** Every PFN of the GPADL, header and bodies joined. */
  readonly pfns: ReadonlyArray<number>
}

export type GpadlProgress =
  | { readonly _tag: "Pending"; readonly handle: number; readonly received: number; readonly expected: number }
  | { readonly _tag: "Complete"; readonly gpadl: CompletedGpadl }

interface PendingGpadl {
  readonly childRelid: number
  readonly handle: number
  readonly byteCount: number
  readonly byteOffset: number
  readonly expected: number
  readonly pfns: Array<number>
}

export const DEFAULT_MAX_PENDING_GPADLS = 1024

const gpadlError = (msg: GpadlHeader | GpadlBody, reason: string, field: string): MalformedMessage =>
  new MalformedMessage({ reason, messageType: MessageType[msg._tag], field, length: byteLength(msg) })

export class GpadlReassembler {
  readonly #pending = new Map<number, PendingGpadl>()
  readonly #maxPending: number

  constructor(options?: { readonly maxPending?: number | undefined }) {
    this.#maxPending = options?.maxPending ?? DEFAULT_MAX_PENDING_GPADLS
  }

  get pendingCount(): number {
    return this.#pending.size
  }

  isPending(handle: number): boolean {
    return this.#pending.has(handle)
  }

  abandon(handle: number): boolean {
    return this.#pending.delete(handle)
  }

  clear(): void {
    this.#pending.clear()
  }

  push(msg: GpadlHeader | GpadlBody): Either.Either<GpadlProgress, MalformedMessage> {
    return msg._tag === "GpadlHeader" ? this.#header(msg) : this.#body(msg)
  }

  #header(msg: GpadlHeader): Either.Either<GpadlProgress, MalformedMessage> {
    const fail = (reason: string, field: string) => {
      this.#pending.delete(msg.handle)
      return Either.left(gpadlError(msg, reason, field))
    }
    if (this.#pending.has(msg.handle)) return fail(`duplicate GPADL_HEADER for pending handle ${msg.handle}`, "gpadl")
    if (msg.handle === 0) return fail("GPADL handle 0 means no GPADL", "gpadl")
    if (msg.rangeCount !== 1) return fail(`rangecount ${msg.rangeCount} is not supported (only 1)`, "rangecount")
    if (msg.byteCount === 0) return fail("byte_count is 0", "byte_count")
    if (msg.byteOffset > MAX_BYTE_OFFSET) return fail(`byte_offset ${msg.byteOffset} exceeds 0xFFF`, "byte_offset")
    const expected = pageCount(msg.byteOffset, msg.byteCount)
    if (msg.rangeBufLength !== GPA_RANGE_HEADER_SIZE + expected * PFN_SIZE) {
      return fail(
        `range_buflen ${msg.rangeBufLength} does not match one range of ${expected} PFNs (${
          GPA_RANGE_HEADER_SIZE + expected * PFN_SIZE
        })`,
        "range_buflen"
      )
    }
    if (msg.pfns.length > expected) return fail(`${msg.pfns.length} PFNs for a range of ${expected}`, "pfn")
    for (let i = 0; i < msg.pfns.length; i++) {
      if (!isPfn(msg.pfns[i]!)) return fail(`PFN ${i} out of range`, `pfn[${i}]`)
    }
    if (msg.pfns.length === expected) {
      return Either.right({
        _tag: "Complete",
        gpadl: {
          childRelid: msg.childRelid,
          handle: msg.handle,
          byteCount: msg.byteCount,
          byteOffset: msg.byteOffset,
          pfns: msg.pfns.slice()
        }
      })
    }
    if (this.#pending.size >= this.#maxPending) {
      return fail(`more than ${this.#maxPending} GPADLs pending reassembly`, "gpadl")
    }
    this.#pending.set(msg.handle, {
      childRelid: msg.childRelid,
      handle: msg.handle,
      byteCount: msg.byteCount,
      byteOffset: msg.byteOffset,
      expected,
      pfns: msg.pfns.slice()
    })
    return Either.right({ _tag: "Pending", handle: msg.handle, received: msg.pfns.length, expected })
  }

  #body(msg: GpadlBody): Either.Either<GpadlProgress, MalformedMessage> {
    const pending = this.#pending.get(msg.handle)
    if (pending === undefined) {
      return Either.left(gpadlError(msg, `GPADL_BODY for unknown handle ${msg.handle}`, "gpadl"))
    }
    const fail = (reason: string, field: string) => {
      this.#pending.delete(msg.handle)
      return Either.left(gpadlError(msg, reason, field))
    }
    const received = pending.pfns.length + msg.pfns.length
    if (received > pending.expected) {
      return fail(`${received} PFNs received for a range of ${pending.expected}`, "pfn")
    }
    for (let i = 0; i < msg.pfns.length; i++) {
      const pfn = msg.pfns[i]!
      if (!isPfn(pfn)) return fail(`PFN ${i} out of range`, `pfn[${i}]`)
      pending.pfns.push(pfn)
    }
    if (received < pending.expected) {
      return Either.right({ _tag: "Pending", handle: msg.handle, received, expected: pending.expected })
    }
    this.#pending.delete(msg.handle)
    return Either.right({
      _tag: "Complete",
      gpadl: {
        childRelid: pending.childRelid,
        handle: pending.handle,
        byteCount: pending.byteCount,
        byteOffset: pending.byteOffset,
        pfns: pending.pfns
      }
    })
  }
}

/**
 * VMBus ring packets: the 16-byte descriptor and the four packet kinds in use — in-band (6), transfer
 * pages (7), GPA direct (9) and completion (11) — with byte-exact encode/decode and the size helpers a
 * sender needs. Like DPDK, the layer is lossless: the `flags` word travels on every kind (bit 0 is
 * `completionRequested`), and a well-framed packet of any other type decodes as `Unknown` (its header
 * bytes and payload kept) — what a reader does with it is its policy, not a decoding error. Pure and
 * synchronous: errors are returned as values, never thrown.
 *
 * @since 0.1.0
 */
import * as internal from "./internal/packet.js"
import * as L from "./internal/layout.js"
import type { InvalidParameter, MalformedPacket, PacketTooLarge, RingCorrupt } from "./VmbusError.js"

/**
 * One range of a transfer-page packet: `byteCount` bytes at `byteOffset` into the transfer page set.
 *
 * @since 0.1.0
 * @category models
 */
export type TransferPageRange = internal.TransferPageRange

/**
 * A page range of guest memory: `byteCount` bytes starting `byteOffset` bytes into the first of `pfns`
 * (4 KiB page frame numbers; `ceil((byteOffset + byteCount) / 4096)` of them).
 *
 * @since 0.1.0
 * @category models
 */
export type GpaRange = internal.GpaRange

/**
 * A packet whose payload travels in the ring (`VM_PKT_DATA_INBAND`).
 *
 * @since 0.1.0
 * @category models
 */
export type InBandPacket = internal.InBandPacket

/**
 * A completion (`VM_PKT_COMP`): the answer to a request, matched by its transaction id.
 *
 * @since 0.1.0
 * @category models
 */
export type CompletionPacket = internal.CompletionPacket

/**
 * A transfer-page packet (`VM_PKT_DATA_USING_XFER_PAGES`): ranges of a transfer page set registered earlier,
 * plus an in-band payload.
 *
 * @since 0.1.0
 * @category models
 */
export type TransferPagesPacket = internal.TransferPagesPacket

/**
 * A GPA-direct packet (`VM_PKT_DATA_USING_GPA_DIRECT`): guest page ranges the peer reads or writes directly,
 * plus an in-band payload.
 *
 * @since 0.1.0
 * @category models
 */
export type GpaDirectPacket = internal.GpaDirectPacket

/**
 * A packet of a type this library does not interpret (not 0x6, 0x7, 0x9 or 0xB): `type`, `flags`,
 * `transactionId`, the `header` bytes between the descriptor and the payload, and the payload.
 *
 * @since 0.1.0
 * @category models
 */
export type UnknownPacket = internal.UnknownPacket

/**
 * Any packet. On decode, `payload` includes the zero padding up to the 8-byte boundary: the exact
 * payload length is not on the wire. `flags` is present on a decoded packet only when the descriptor's
 * flags word says more than `completionRequested` (on a completion: when it is not zero).
 *
 * @since 0.1.0
 * @category models
 */
export type Packet = internal.Packet

/**
 * Wire values of the supported packet types.
 *
 * @since 0.1.0
 * @category constants
 */
export const PacketType = {
  InBand: L.PACKET_TYPE_IN_BAND,
  TransferPages: L.PACKET_TYPE_TRANSFER_PAGES,
  GpaDirect: L.PACKET_TYPE_GPA_DIRECT,
  Completion: L.PACKET_TYPE_COMPLETION
} as const

/**
 * The descriptor flag asking the receiver for a completion (`VMBUS_DATA_PACKET_FLAG_COMPLETION_REQUESTED`).
 *
 * @since 0.1.0
 * @category constants
 */
export const FLAG_COMPLETION_REQUESTED: number = L.FLAG_COMPLETION_REQUESTED

/**
 * Bytes of the packet descriptor (16).
 *
 * @since 0.1.0
 * @category constants
 */
export const DESCRIPTOR_SIZE: number = L.DESCRIPTOR_SIZE

/**
 * Bytes of the trailer after every packet in the ring (8: the writer's previous write index).
 *
 * @since 0.1.0
 * @category constants
 */
export const TRAILER_SIZE: number = L.TRAILER_SIZE

/**
 * Largest packet length, trailer excluded (`len8` = 0xFFFF).
 *
 * @since 0.1.0
 * @category constants
 */
export const MAX_PACKET_LENGTH: number = L.MAX_PACKET_LENGTH

/**
 * An in-band packet carrying `payload`; a completion is requested only when asked (`completionRequested`,
 * with a non-zero `transactionId`).
 *
 * @since 0.1.0
 * @category constructors
 */
export const inBand = (
  payload: Uint8Array,
  options?: {
    readonly transactionId?: bigint | undefined
    readonly completionRequested?: boolean | undefined
    readonly flags?: number | undefined
  }
): InBandPacket => {
  const packet: InBandPacket = {
    _tag: "InBand",
    payload,
    transactionId: options?.transactionId ?? 0n,
    completionRequested: options?.completionRequested ?? false
  }
  return options?.flags === undefined ? packet : { ...packet, flags: options.flags }
}

/**
 * A completion for `transactionId`, carrying `payload` (empty by default).
 *
 * @since 0.1.0
 * @category constructors
 */
export const completion = (
  transactionId: bigint,
  payload: Uint8Array = new Uint8Array(0),
  options?: { readonly flags?: number | undefined }
): CompletionPacket =>
  options?.flags === undefined
    ? { _tag: "Completion", transactionId, payload }
    : { _tag: "Completion", transactionId, payload, flags: options.flags }

/**
 * The flags word a packet is written with: `flags | (completionRequested ? 1 : 0)` (a completion: `flags`).
 *
 * @since 0.1.0
 * @category getters
 */
export const wireFlags: (packet: Packet) => number = internal.wireFlags

/**
 * Flag bits of a data packet other than COMPLETION_REQUESTED (0 for a completion, whose flags carry no
 * defined meaning).
 *
 * @since 0.1.0
 * @category getters
 */
export const unknownFlagBits: (packet: Packet) => number = internal.unknownFlagBits

/**
 * Bytes from the descriptor start to the payload (`offset8 * 8`).
 *
 * @since 0.1.0
 * @category getters
 */
export const headerSize: (packet: Packet) => number = internal.headerSize

/**
 * `len8 * 8`: the packet's length in the ring, trailer excluded.
 *
 * @since 0.1.0
 * @category getters
 */
export const packetLength: (packet: Packet) => number = internal.packetLength

/**
 * Bytes the packet takes in the ring, trailer included.
 *
 * @since 0.1.0
 * @category getters
 */
export const ringSize: (packet: Packet) => number = internal.ringSize

/**
 * Bytes an in-band or completion packet with `payloadLength` bytes of payload takes in the ring:
 * `align8(16 + n) + 8`.
 *
 * @since 0.1.0
 * @category getters
 */
export const inBandRingSize: (payloadLength: number) => number = internal.inBandRingSize

/**
 * Bytes a GPA-direct packet takes in the ring, for the page count of each range and the payload.
 *
 * @since 0.1.0
 * @category getters
 */
export const gpaDirectRingSize: (pagesPerRange: ReadonlyArray<number>, payloadLength: number) => number =
  internal.gpaDirectRingSize

/**
 * Encodes a packet: descriptor, type header, payload and zero padding (no trailer).
 *
 * @since 0.1.0
 * @category encoding
 */
export const encode: (packet: Packet) => Uint8Array | InvalidParameter | PacketTooLarge = internal.encode

/**
 * Decodes a packet from its bytes (exactly `len8 * 8`). Lengths or ranges that do not add up are
 * `RingCorrupt`; an unknown type is an `Unknown` packet and unknown flag bits are kept in `flags`.
 *
 * @since 0.1.0
 * @category decoding
 */
export const decode: (bytes: Uint8Array, at?: number) => Packet | RingCorrupt = internal.decode

/**
 * Checks an outgoing packet without encoding it.
 *
 * @since 0.1.0
 * @category validation
 */
export const validate: (packet: Packet) => InvalidParameter | PacketTooLarge | undefined = internal.validateOutgoing

/**
 * Content checks for the ranges of a received GPA-direct packet: non-zero length, offset inside the
 * first page, PFN count matching offset and length.
 *
 * @since 0.1.0
 * @category validation
 */
export const validateGpaRanges: (ranges: ReadonlyArray<GpaRange>) => MalformedPacket | undefined =
  internal.validateGpaRanges

/**
 * VMBus channel-management messages — offers, open/close, GPADL creation and teardown, contact and
 * unload — as a discriminated union of typed values with byte-exact `encode` / `decode`
 * (wire-format.md §4–§5, Linux `include/linux/hyperv.h`). Also the GPADL helpers: splitting a page
 * list into GPADL_HEADER + GPADL_BODY messages (guest side), and reassembling them (host side).
 *
 * Pure and synchronous: `decode` never throws and returns `MalformedMessage` for anything a hostile
 * peer can send (too long, too short for its type, unknown type, bad PFN array).
 *
 * @since 0.1.0
 */
import type * as Either from "effect/Either"
import * as internal from "./internal/channelMessage.js"
import type { GpadlTooLarge, InvalidParameter, MalformedMessage } from "./VmbusError.js"

// ---------------------------------------------------------------------------------------------
// Constants
// ---------------------------------------------------------------------------------------------

/**
 * Wire values of `enum vmbus_channel_message_type` for the supported messages.
 *
 * @since 0.1.0
 * @category constants
 */
export const MessageType: typeof internal.MessageType = internal.MessageType

/**
 * Minimum total length (8-byte header included) of each message type; shorter messages are
 * `MalformedMessage` (Linux `channel_message_table[].min_payload_len`).
 *
 * @since 0.1.0
 * @category constants
 */
export const MinimumSize: { readonly [K in ChannelMessage["_tag"]]: number } = internal.MinimumSize

/**
 * Offer `chn_flags` bits.
 *
 * @since 0.1.0
 * @category constants
 */
export const ChannelFlag: typeof internal.ChannelFlag = internal.ChannelFlag

/**
 * Largest channel message, header included (`HV_MESSAGE_PAYLOAD_BYTE_COUNT`).
 *
 * @since 0.1.0
 * @category constants
 */
export const MAX_CHANNEL_MESSAGE_SIZE: number = internal.MAX_CHANNEL_MESSAGE_SIZE

/**
 * Bytes of the header every channel message starts with (message type and padding: 8).
 *
 * @since 0.1.0
 * @category constants
 */
export const HEADER_SIZE: number = internal.HEADER_SIZE

/**
 * Bytes of OFFERCHANNEL.
 *
 * @since 0.1.0
 * @category constants
 */
export const OFFER_CHANNEL_SIZE: number = internal.OFFER_CHANNEL_SIZE

/**
 * Bytes of OPENCHANNEL.
 *
 * @since 0.1.0
 * @category constants
 */
export const OPEN_CHANNEL_SIZE: number = internal.OPEN_CHANNEL_SIZE

/**
 * Size of the offer's `user_def` and the open message's `userdata`.
 *
 * @since 0.1.0
 * @category constants
 */
export const USER_DEFINED_SIZE: number = internal.USER_DEFINED_SIZE

/**
 * PFNs that fit in a GPADL_HEADER message.
 *
 * @since 0.1.0
 * @category constants
 */
export const GPADL_HEADER_MAX_PFNS: number = internal.GPADL_HEADER_MAX_PFNS

/**
 * PFNs that fit in a GPADL_BODY message.
 *
 * @since 0.1.0
 * @category constants
 */
export const GPADL_BODY_MAX_PFNS: number = internal.GPADL_BODY_MAX_PFNS

/**
 * The first GPADL handle Linux and FreeBSD hand out; later handles count up from it.
 *
 * @since 0.1.0
 * @category constants
 */
export const FIRST_GPADL_HANDLE: number = internal.FIRST_GPADL_HANDLE

/**
 * Most pages one single-range GPADL can describe (`range_buflen` is a u16).
 *
 * @since 0.1.0
 * @category constants
 */
export const MAX_GPADL_PAGES: number = internal.MAX_GPADL_PAGES

/**
 * Largest PFN accepted (52 bits: 4 KiB frames of a 64-bit physical address).
 *
 * @since 0.1.0
 * @category constants
 */
export const MAX_PFN: number = internal.MAX_PFN

// ---------------------------------------------------------------------------------------------
// Models
// ---------------------------------------------------------------------------------------------

/**
 * CHANNELMSG_OFFERCHANNEL (1), host→guest, 196 bytes. GUIDs are canonical lowercase strings
 * (Windows mixed-endian on the wire). `reserved1` is DPDK's `chlat` (latency, 100 ns units) and
 * `reserved2` DPDK's `chrev` | `svrctx_sz << 32`. Reserved bits of bytes 189–191 are dropped on decode.
 *
 * @since 0.1.0
 * @category models
 */
export type OfferChannel = internal.OfferChannel

/**
 * CHANNELMSG_RESCIND_CHANNELOFFER (2), host→guest.
 *
 * @since 0.1.0
 * @category models
 */
export type RescindChannelOffer = internal.RescindChannelOffer

/**
 * CHANNELMSG_REQUESTOFFERS (3), guest→host.
 *
 * @since 0.1.0
 * @category models
 */
export type RequestOffers = internal.RequestOffers

/**
 * CHANNELMSG_ALLOFFERS_DELIVERED (4), host→guest.
 *
 * @since 0.1.0
 * @category models
 */
export type AllOffersDelivered = internal.AllOffersDelivered

/**
 * CHANNELMSG_OPENCHANNEL (5), guest→host, 148 bytes. `downstreamRingBufferPageOffset` is the number of
 * 4 KiB pages of the guest→host ring, control page included.
 *
 * @since 0.1.0
 * @category models
 */
export type OpenChannel = internal.OpenChannel

/**
 * CHANNELMSG_OPENCHANNEL_RESULT (6), host→guest; `status` 0 is success.
 *
 * @since 0.1.0
 * @category models
 */
export type OpenChannelResult = internal.OpenChannelResult

/**
 * CHANNELMSG_CLOSECHANNEL (7), guest→host (not answered).
 *
 * @since 0.1.0
 * @category models
 */
export type CloseChannel = internal.CloseChannel

/**
 * CHANNELMSG_GPADL_HEADER (8), guest→host, `28 + 8·k` bytes. Decoding is structural: `pfns` are the
 * u64 words after the first range header; whether they add up is checked by `GpadlReassembler`.
 *
 * @since 0.1.0
 * @category models
 */
export type GpadlHeader = internal.GpadlHeader

/**
 * CHANNELMSG_GPADL_BODY (9), guest→host, `16 + 8·m` bytes.
 *
 * @since 0.1.0
 * @category models
 */
export type GpadlBody = internal.GpadlBody

/**
 * CHANNELMSG_GPADL_CREATED (10), host→guest, 20 bytes; `creationStatus` 0 is success.
 *
 * @since 0.1.0
 * @category models
 */
export type GpadlCreated = internal.GpadlCreated

/**
 * CHANNELMSG_GPADL_TEARDOWN (11), guest→host, 16 bytes.
 *
 * @since 0.1.0
 * @category models
 */
export type GpadlTeardown = internal.GpadlTeardown

/**
 * CHANNELMSG_GPADL_TORNDOWN (12), host→guest, 12 bytes.
 *
 * @since 0.1.0
 * @category models
 */
export type GpadlTorndown = internal.GpadlTorndown

/**
 * CHANNELMSG_RELID_RELEASED (13), guest→host.
 *
 * @since 0.1.0
 * @category models
 */
export type RelidReleased = internal.RelidReleased

/**
 * CHANNELMSG_INITIATE_CONTACT (14), guest→host, 40 bytes. From protocol 5.0 the low byte of
 * `interruptPage` is `msg_sint`.
 *
 * @since 0.1.0
 * @category models
 */
export type InitiateContact = internal.InitiateContact

/**
 * CHANNELMSG_VERSION_RESPONSE (15), host→guest, 16 bytes.
 *
 * @since 0.1.0
 * @category models
 */
export type VersionResponse = internal.VersionResponse

/**
 * CHANNELMSG_UNLOAD (16), guest→host.
 *
 * @since 0.1.0
 * @category models
 */
export type Unload = internal.Unload

/**
 * CHANNELMSG_UNLOAD_RESPONSE (17), host→guest.
 *
 * @since 0.1.0
 * @category models
 */
export type UnloadResponse = internal.UnloadResponse

/**
 * Any supported channel-management message.
 *
 * @since 0.1.0
 * @category models
 */
export type ChannelMessage = internal.ChannelMessage

/**
 * A GPADL whose header and bodies have all arrived.
 *
 * @since 0.1.0
 * @category models
 */
export type CompletedGpadl = internal.CompletedGpadl

/**
 * What `GpadlReassembler.push` reports: still waiting for PFNs, or complete.
 *
 * @since 0.1.0
 * @category models
 */
export type GpadlProgress = internal.GpadlProgress

/**
 * Options of `gpadlMessages`: the channel, the handle, the pages and the byte range.
 *
 * @since 0.1.0
 * @category models
 */
export type GpadlMessagesOptions = internal.GpadlMessagesOptions

// ---------------------------------------------------------------------------------------------
// Codec
// ---------------------------------------------------------------------------------------------

/**
 * Encoded length of a message, header included.
 *
 * @since 0.1.0
 * @category getters
 */
export const byteLength: (message: ChannelMessage) => number = internal.byteLength

/**
 * Checks that every field of an outgoing message fits its wire width (u8/u16/u32/u64, PFN ≤ `MAX_PFN`,
 * canonical GUIDs, user data ≤ 120 bytes) and that it fits in 240 bytes.
 *
 * @since 0.1.0
 * @category validation
 */
export const validate: (message: ChannelMessage) => InvalidParameter | undefined = internal.validate

/**
 * Encodes a message, header `{ msgtype, padding = 0 }` included. Byte-exact for messages that pass
 * `validate`; never throws (out-of-range numbers are truncated to their field width, an unparsable
 * GUID is written as zeros, user data shorter than 120 bytes is zero-padded). Use `encodeChecked` for
 * values that were not built by this library.
 *
 * @since 0.1.0
 * @category encoding
 */
export const encode: (message: ChannelMessage) => Uint8Array = internal.encode

/**
 * `validate` then `encode`.
 *
 * @since 0.1.0
 * @category encoding
 */
export const encodeChecked: (message: ChannelMessage) => Either.Either<Uint8Array, InvalidParameter> =
  internal.encodeChecked

/**
 * Decodes one message. Rejects with `MalformedMessage` a length over 240 bytes, a length below the
 * type's minimum, an unknown type (0, 18 and above), a GPADL PFN array that is not a whole number of
 * u64s, or a PFN above `MAX_PFN`. The header's padding word is ignored, as are bytes past a fixed-size
 * message. The result never aliases `bytes`.
 *
 * @since 0.1.0
 * @category decoding
 */
export const decode: (bytes: Uint8Array) => Either.Either<ChannelMessage, MalformedMessage> = internal.decode

// ---------------------------------------------------------------------------------------------
// GUIDs
// ---------------------------------------------------------------------------------------------

/**
 * Formats 16 wire bytes (first three groups little-endian) as a canonical lowercase GUID string.
 *
 * @since 0.1.0
 * @category guids
 */
export const guidFromBytes: (bytes: Uint8Array, offset?: number) => string = internal.guidFromBytes

/**
 * Parses a canonical GUID string (either case) into its 16 wire bytes.
 *
 * @since 0.1.0
 * @category guids
 */
export const guidToBytes: (guid: string) => Either.Either<Uint8Array, InvalidParameter> = internal.guidToBytes

// ---------------------------------------------------------------------------------------------
// GPADL
// ---------------------------------------------------------------------------------------------

/**
 * Number of 4 KiB pages a range of `byteCount` bytes starting `byteOffset` bytes into its first page
 * spans: `ceil((byteOffset + byteCount) / 4096)`.
 *
 * @since 0.1.0
 * @category getters
 */
export const pageCount: (byteOffset: number, byteCount: number) => number = internal.pageCount

/**
 * Splits a single-range GPADL into the messages that create it, as Linux `create_gpadl_header`: one
 * GPADL_HEADER with up to 26 PFNs, then GPADL_BODY messages of up to 28 PFNs with `msgnumber` 0.
 * `range_buflen = 8 + 8·pages`, `rangecount = 1`, `byteCount` defaults to `pages · 4096` and
 * `byteOffset` to 0; the PFN count must equal `ceil((byteOffset + byteCount) / 4096)`. More than 8190
 * pages is `GpadlTooLarge`; other bad arguments (no pages, handle 0, bad PFN) are `InvalidParameter`.
 *
 * @since 0.1.0
 * @category gpadl
 */
export const gpadlMessages: (
  options: GpadlMessagesOptions
) => Either.Either<ReadonlyArray<GpadlHeader | GpadlBody>, GpadlTooLarge | InvalidParameter> = internal.gpadlMessages

/**
 * Default bound on GPADLs a `GpadlReassembler` holds half-received.
 *
 * @since 0.1.0
 * @category constants
 */
export const DEFAULT_MAX_PENDING_GPADLS: number = internal.DEFAULT_MAX_PENDING_GPADLS

/**
 * Host-side reassembly of GPADL_HEADER + GPADL_BODY messages, keyed by handle. `push` answers
 * `Pending` until all PFNs of the range arrived, then `Complete` (and forgets the handle).
 *
 * Rejected with `MalformedMessage`: `rangecount` ≠ 1, `range_buflen` ≠ `8 + 8·pages`, `byte_count` 0,
 * `byte_offset` > 0xFFF, handle 0, a duplicate header for a pending handle, a body for an unknown
 * handle, more PFNs than `range_buflen` describes, and more than `maxPending` half-received GPADLs.
 * After an error the handle is forgotten, so the host can answer GPADL_CREATED with a failure status.
 * `msgnumber` is ignored (Linux always sends 0).
 *
 * @since 0.1.0
 * @category gpadl
 */
export const GpadlReassembler: new(options?: { readonly maxPending?: number | undefined }) => GpadlReassembler =
  internal.GpadlReassembler

/**
 * @since 0.1.0
 * @category gpadl
 */
export interface GpadlReassembler {
  /** GPADLs whose header arrived and whose bodies are still missing. */
  readonly pendingCount: number
  /** Whether a GPADL with this handle is being received. */
  isPending(handle: number): boolean
  /** Drops a half-received GPADL; `true` when one was pending. */
  abandon(handle: number): boolean
  /** Drops every half-received GPADL. */
  clear(): void
  /**
   * Adds a GPADL_HEADER or GPADL_BODY; the result says whether the GPADL is complete (with its pages) or
   * still needs bodies.
   */
  push(message: GpadlHeader | GpadlBody): Either.Either<GpadlProgress, MalformedMessage>
}

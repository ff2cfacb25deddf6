/**
 * Every typed error of effect-vmbus: one class per failure a caller handles differently, each carrying
 * the fields that explain it. All share one TypeId so `isVmbusError` recognises them.
 *
 * @since 0.1.0
 */
import * as Predicate from "effect/Predicate"
import * as Schema from "effect/Schema"

/**
 * Brands every effect-vmbus error (see `isVmbusError`).
 *
 * @since 0.1.0
 * @category symbols
 */
export const TypeId: unique symbol = Symbol.for("effect-vmbus/VmbusError")

/**
 * @since 0.1.0
 * @category symbols
 */
export type TypeId = typeof TypeId

/**
 * Tells whether a value is one of effect-vmbus's errors.
 *
 * @since 0.1.0
 * @category refinements
 */
export const isVmbusError = (u: unknown): u is VmbusError => Predicate.hasProperty(u, TypeId)

const optionalNumber = Schema.optional(Schema.Number)
const optionalString = Schema.optional(Schema.String)

// ---------------------------------------------------------------------------------------------
// Parameters and state
// ---------------------------------------------------------------------------------------------

/**
 * A configuration value or argument is out of range. `index` follows KMCL's
 * `STATUS_INVALID_PARAMETER_n` numbering where one applies.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidParameter extends Schema.TaggedError<InvalidParameter>("effect-vmbus/InvalidParameter")(
  "InvalidParameter",
  { field: Schema.String, reason: Schema.String, value: Schema.optional(Schema.Unknown), index: optionalNumber }
) {
  readonly [TypeId]: TypeId = TypeId
  override get message(): string {
    return `invalid parameter ${this.field}: ${this.reason}`
  }
}

/**
 * An operation was attempted in a state that does not allow it.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidState extends Schema.TaggedError<InvalidState>("effect-vmbus/InvalidState")("InvalidState", {
  operation: Schema.String,
  expected: Schema.String,
  actual: Schema.String
}) {
  readonly [TypeId]: TypeId = TypeId
  override get message(): string {
    return `${this.operation} needs state ${this.expected}, but the state is ${this.actual}`
  }
}

/**
 * The transport cannot honour a requested capability (for example ring geometry under uio).
 *
 * @since 0.1.0
 * @category errors
 */
export class Unsupported extends Schema.TaggedError<Unsupported>("effect-vmbus/Unsupported")("Unsupported", {
  capability: Schema.String,
  reason: optionalString
}) {
  readonly [TypeId]: TypeId = TypeId
  override get message(): string {
    return `unsupported capability ${this.capability}${this.reason ? `: ${this.reason}` : ""}`
  }
}

// ---------------------------------------------------------------------------------------------
// Lifecycle
// ---------------------------------------------------------------------------------------------

/**
 * The peer answered OPENCHANNEL with a non-zero status, or an `onOpened` hook rolled the open back.
 *
 * @since 0.1.0
 * @category errors
 */
export class OpenRejected extends Schema.TaggedError<OpenRejected>("effect-vmbus/OpenRejected")("OpenRejected", {
  status: Schema.Number,
  reason: optionalString
}) {
  readonly [TypeId]: TypeId = TypeId
  override get message(): string {
    return `channel open rejected with status 0x${(this.status >>> 0).toString(16)}${
      this.reason ? `: ${this.reason}` : ""
    }`
  }
}

/**
 * No peer opened (or offered) the channel within the open timeout.
 *
 * @since 0.1.0
 * @category errors
 */
export class OpenTimeout extends Schema.TaggedError<OpenTimeout>("effect-vmbus/OpenTimeout")("OpenTimeout", {
  timeoutMillis: Schema.Number,
  /** The channel waited for: its interface type, the instance if one was named, and this side's role. */
  interfaceType: optionalString,
  interfaceInstance: optionalString,
  role: Schema.optional(Schema.Literal("client", "server"))
}) {
  readonly [TypeId]: TypeId = TypeId
  override get message(): string {
    const what = this.interfaceType === undefined
      ? "channel"
      : `${this.role ?? "channel"} of interface ${this.interfaceType}` +
        (this.interfaceInstance === undefined ? " (any instance)" : ` instance ${this.interfaceInstance}`)
    const waited = this.role === "server" ? "no guest opened it" : "it did not open"
    return `${what}: ${waited} within ${this.timeoutMillis} ms`
  }
}

/**
 * The reason a channel's open period ended.
 *
 * @since 0.1.0
 * @category models
 */
export const CloseReason = Schema.Literal("LocalClose", "PeerClose", "Rescinded", "Corrupt")

/**
 * @since 0.1.0
 * @category models
 */
export type CloseReason = typeof CloseReason.Type

/**
 * The channel's open period ended (local close, peer close, rescind, or a corrupt ring) while the
 * operation was pending or before it started.
 *
 * @since 0.1.0
 * @category errors
 */
export class ChannelClosed extends Schema.TaggedError<ChannelClosed>("effect-vmbus/ChannelClosed")("ChannelClosed", {
  reason: CloseReason
}) {
  readonly [TypeId]: TypeId = TypeId
  override get message(): string {
    return `channel closed (${this.reason})`
  }
}

// ---------------------------------------------------------------------------------------------
// Send
// ---------------------------------------------------------------------------------------------

/**
 * A packet can never fit: larger than the channel's maximum packet size or the ring.
 *
 * @since 0.1.0
 * @category errors
 */
export class PacketTooLarge extends Schema.TaggedError<PacketTooLarge>("effect-vmbus/PacketTooLarge")(
  "PacketTooLarge",
  {
    size: Schema.Number,
    max: Schema.Number,
    /** The limit exceeded when it is not a byte size: `"maxExternalPages"` (then size and max are pages). */
    limit: optionalString
  }
) {
  readonly [TypeId]: TypeId = TypeId
  override get message(): string {
    return this.limit === undefined
      ? `packet of ${this.size} bytes exceeds the maximum of ${this.max}`
      : `packet of ${this.size} exceeds ${this.limit} ${this.max}`
  }
}

/**
 * The outgoing ring has no room for the packet right now (`required` bytes including the trailer,
 * `available` raw free bytes). Never overwrites; the never-completely-full rule is kept.
 *
 * @since 0.1.0
 * @category errors
 */
export class RingFull extends Schema.TaggedError<RingFull>("effect-vmbus/RingFull")("RingFull", {
  required: Schema.Number,
  available: Schema.Number
}) {
  readonly [TypeId]: TypeId = TypeId
  override get message(): string {
    return `ring full: ${this.required} bytes needed, ${this.available} free (must be strictly more)`
  }
}

/**
 * A synchronous request timed out or was cancelled (KMCL `STATUS_CANCELLED`).
 *
 * @since 0.1.0
 * @category errors
 */
export class Cancelled extends Schema.TaggedError<Cancelled>("effect-vmbus/Cancelled")("Cancelled", {
  transactionId: Schema.optional(Schema.BigIntFromSelf),
  reason: optionalString
}) {
  readonly [TypeId]: TypeId = TypeId
  override get message(): string {
    return `request cancelled${this.reason ? `: ${this.reason}` : ""}`
  }
}

/**
 * Too many transactions are outstanding on the channel (`maxOutstandingTransactions`).
 *
 * @since 0.1.0
 * @category errors
 */
export class TooManyTransactions extends Schema.TaggedError<TooManyTransactions>(
  "effect-vmbus/TooManyTransactions"
)("TooManyTransactions", { limit: Schema.Number }) {
  readonly [TypeId]: TypeId = TypeId
  override get message(): string {
    return `more than ${this.limit} outstanding transactions`
  }
}

// ---------------------------------------------------------------------------------------------
// Receive
// ---------------------------------------------------------------------------------------------

/**
 * An incoming packet was completed twice (KMCL `VmbChannelPacketComplete` allows exactly one).
 *
 * @since 0.1.0
 * @category errors
 */
export class PacketAlreadyCompleted extends Schema.TaggedError<PacketAlreadyCompleted>(
  "effect-vmbus/PacketAlreadyCompleted"
)("PacketAlreadyCompleted", { transactionId: Schema.BigIntFromSelf }) {
  readonly [TypeId]: TypeId = TypeId
  override get message(): string {
    return `packet with transaction id ${this.transactionId} was already completed`
  }
}

/**
 * A packet is well framed in the ring but its content is unacceptable (bad range, unknown
 * transfer page set, packet failed by the receiver, unexpected completion in strict mode, …).
 *
 * @since 0.1.0
 * @category errors
 */
export class MalformedPacket extends Schema.TaggedError<MalformedPacket>("effect-vmbus/MalformedPacket")(
  "MalformedPacket",
  { reason: Schema.String, field: optionalString, value: Schema.optional(Schema.Unknown) }
) {
  readonly [TypeId]: TypeId = TypeId
  override get message(): string {
    return `malformed packet: ${this.reason}${this.field ? ` (${this.field})` : ""}`
  }
}

/**
 * A `serve` handler failed, died or returned a result that cannot be sent; the packet was completed
 * with the channel's `failureCompletion` payload (by default zero bytes: the requester sees a
 * successful, empty reply) unless the handler had completed it already. Reported on the channel's
 * `events` and logged at warning level.
 *
 * @since 0.1.0
 * @category errors
 */
export class HandlerFailed extends Schema.TaggedError<HandlerFailed>("effect-vmbus/HandlerFailed")(
  "HandlerFailed",
  {
    reason: Schema.String,
    transactionId: Schema.optional(Schema.BigIntFromSelf),
    /** False when the handler had completed the packet itself before it failed. */
    failureCompleted: Schema.Boolean
  }
) {
  readonly [TypeId]: TypeId = TypeId
  override get message(): string {
    const packet = this.transactionId === undefined ? "a packet" : `packet ${this.transactionId}`
    const outcome = this.failureCompleted ? "completed with the failure payload" : "after completing it"
    return `handler failed on ${packet}; ${outcome}: ${this.reason}`
  }
}

/**
 * The peer left the ring in a state no correct writer or reader can produce: an index out of range
 * or misaligned, a descriptor with bad lengths, type or flags. `offset` is a data-area offset.
 *
 * @since 0.1.0
 * @category errors
 */
export class RingCorrupt extends Schema.TaggedError<RingCorrupt>("effect-vmbus/RingCorrupt")("RingCorrupt", {
  reason: Schema.String,
  field: Schema.String,
  offset: optionalNumber,
  value: Schema.optional(Schema.Unknown)
}) {
  readonly [TypeId]: TypeId = TypeId
  override get message(): string {
    return `ring corrupt: ${this.reason} (field ${this.field}${
      this.offset === undefined ? "" : ` at data offset 0x${this.offset.toString(16)}`
    }${this.value === undefined ? "" : `, value ${String(this.value)}`})`
  }
}

/**
 * The caller's buffer is too small for the next packet; the packet was not consumed.
 *
 * @since 0.1.0
 * @category errors
 */
export class BufferTooSmall extends Schema.TaggedError<BufferTooSmall>("effect-vmbus/BufferTooSmall")(
  "BufferTooSmall",
  { required: Schema.Number, available: Schema.Number }
) {
  readonly [TypeId]: TypeId = TypeId
  override get message(): string {
    return `buffer too small: ${this.required} bytes required, ${this.available} available`
  }
}

/**
 * The packet has no external data of the requested kind, or it is no longer available because the
 * packet was completed.
 *
 * @since 0.1.0
 * @category errors
 */
export class ExternalDataUnavailable extends Schema.TaggedError<ExternalDataUnavailable>(
  "effect-vmbus/ExternalDataUnavailable"
)("ExternalDataUnavailable", { reason: Schema.String }) {
  readonly [TypeId]: TypeId = TypeId
  override get message(): string {
    return `external data unavailable: ${this.reason}`
  }
}

/**
 * A completion owed to the peer was never written: the open period ended (local close after the drain
 * timeout, peer close, rescind, corruption) while it waited for ring space. Reported on `events`.
 *
 * @since 0.1.0
 * @category errors
 */
export class CompletionDropped extends Schema.TaggedError<CompletionDropped>("effect-vmbus/CompletionDropped")(
  "CompletionDropped",
  { transactionId: Schema.BigIntFromSelf, reason: Schema.String }
) {
  readonly [TypeId]: TypeId = TypeId
  override get message(): string {
    return `completion of transaction ${this.transactionId} dropped: ${this.reason}`
  }
}

/**
 * A user callback (`onSettled`, a lifecycle hook) threw or died; the library carried on without it.
 * Reported on `events`.
 *
 * @since 0.1.0
 * @category errors
 */
export class CallbackFailed extends Schema.TaggedError<CallbackFailed>("effect-vmbus/CallbackFailed")(
  "CallbackFailed",
  { callback: Schema.String, cause: Schema.Defect }
) {
  readonly [TypeId]: TypeId = TypeId
  override get message(): string {
    return `${this.callback} failed: ${String(this.cause)}`
  }
}

// ---------------------------------------------------------------------------------------------
// Memory and GPADL
// ---------------------------------------------------------------------------------------------

/**
 * Guest memory has too few free pages for an allocation.
 *
 * @since 0.1.0
 * @category errors
 */
export class OutOfMemory extends Schema.TaggedError<OutOfMemory>("effect-vmbus/OutOfMemory")("OutOfMemory", {
  requestedPages: Schema.Number,
  freePages: Schema.Number
}) {
  readonly [TypeId]: TypeId = TypeId
  override get message(): string {
    return `out of guest memory: ${this.requestedPages} pages requested, ${this.freePages} free`
  }
}

/**
 * A page range names memory outside guest memory, or an access falls outside a mapped range.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidMemoryRange extends Schema.TaggedError<InvalidMemoryRange>("effect-vmbus/InvalidMemoryRange")(
  "InvalidMemoryRange",
  { reason: Schema.String, pfn: optionalNumber, offset: optionalNumber, length: optionalNumber }
) {
  readonly [TypeId]: TypeId = TypeId
  override get message(): string {
    return `invalid memory range: ${this.reason}`
  }
}

/**
 * The host answered GPADL_HEADER with a non-zero creation status.
 *
 * @since 0.1.0
 * @category errors
 */
export class GpadlCreateFailed extends Schema.TaggedError<GpadlCreateFailed>("effect-vmbus/GpadlCreateFailed")(
  "GpadlCreateFailed",
  { handle: Schema.Number, status: Schema.Number }
) {
  readonly [TypeId]: TypeId = TypeId
  override get message(): string {
    return `GPADL 0x${this.handle.toString(16)} creation failed with status 0x${(this.status >>> 0).toString(16)}`
  }
}

/**
 * The GPADL is already mapped by the host (one mapping at a time).
 *
 * @since 0.1.0
 * @category errors
 */
export class GpadlAlreadyMapped extends Schema.TaggedError<GpadlAlreadyMapped>("effect-vmbus/GpadlAlreadyMapped")(
  "GpadlAlreadyMapped",
  { handle: Schema.Number }
) {
  readonly [TypeId]: TypeId = TypeId
  override get message(): string {
    return `GPADL 0x${this.handle.toString(16)} is already mapped`
  }
}

/**
 * A write mapping was asked of a GPADL created read-only.
 *
 * @since 0.1.0
 * @category errors
 */
export class GpadlWriteMapOfReadOnly extends Schema.TaggedError<GpadlWriteMapOfReadOnly>(
  "effect-vmbus/GpadlWriteMapOfReadOnly"
)("GpadlWriteMapOfReadOnly", { handle: Schema.Number }) {
  readonly [TypeId]: TypeId = TypeId
  override get message(): string {
    return `GPADL 0x${this.handle.toString(16)} is read-only and cannot be mapped for writing`
  }
}

/**
 * A GPADL needs more pages than one `range_buflen` (u16) can describe.
 *
 * @since 0.1.0
 * @category errors
 */
export class GpadlTooLarge extends Schema.TaggedError<GpadlTooLarge>("effect-vmbus/GpadlTooLarge")(
  "GpadlTooLarge",
  { pages: Schema.Number, max: Schema.Number }
) {
  readonly [TypeId]: TypeId = TypeId
  override get message(): string {
    return `GPADL of ${this.pages} pages exceeds the maximum of ${this.max}`
  }
}

/**
 * The GPADL handle is unknown, or the GPADL is being torn down.
 *
 * @since 0.1.0
 * @category errors
 */
export class GpadlUnavailable extends Schema.TaggedError<GpadlUnavailable>("effect-vmbus/GpadlUnavailable")(
  "GpadlUnavailable",
  { handle: Schema.Number, reason: Schema.Literal("Unknown", "TearingDown") }
) {
  readonly [TypeId]: TypeId = TypeId
  override get message(): string {
    return `GPADL 0x${this.handle.toString(16)} unavailable (${this.reason})`
  }
}

// ---------------------------------------------------------------------------------------------
// Control plane
// ---------------------------------------------------------------------------------------------

/**
 * A channel-management message is malformed: unknown type, too long (over 240 bytes), shorter than
 * its type's minimum, or with a field out of range.
 *
 * @since 0.1.0
 * @category errors
 */
export class MalformedMessage extends Schema.TaggedError<MalformedMessage>("effect-vmbus/MalformedMessage")(
  "MalformedMessage",
  { reason: Schema.String, messageType: optionalNumber, field: optionalString, length: optionalNumber }
) {
  readonly [TypeId]: TypeId = TypeId
  override get message(): string {
    return `malformed channel message${this.messageType === undefined ? "" : ` (type ${this.messageType})`}: ${
      this.reason
    }`
  }
}

// ---------------------------------------------------------------------------------------------
// Protocols
// ---------------------------------------------------------------------------------------------

/**
 * A typed protocol message could not be encoded or decoded.
 *
 * @since 0.1.0
 * @category errors
 */
export class ProtocolError extends Schema.TaggedError<ProtocolError>("effect-vmbus/ProtocolError")(
  "ProtocolError",
  { reason: Schema.String, message_: optionalString, cause: Schema.optional(Schema.Defect) }
) {
  readonly [TypeId]: TypeId = TypeId
  override get message(): string {
    return `protocol error: ${this.reason}${this.message_ ? ` (${this.message_})` : ""}`
  }
}

/**
 * Version negotiation found no version both sides support.
 *
 * @since 0.1.0
 * @category errors
 */
export class NegotiationFailed extends Schema.TaggedError<NegotiationFailed>("effect-vmbus/NegotiationFailed")(
  "NegotiationFailed",
  { service: Schema.String, offered: Schema.Array(Schema.String), supported: Schema.Array(Schema.String) }
) {
  readonly [TypeId]: TypeId = TypeId
  override get message(): string {
    return `${this.service}: no common version (offered ${this.offered.join(", ")}; supported ${
      this.supported.join(", ")
    })`
  }
}

// ---------------------------------------------------------------------------------------------
// Transport
// ---------------------------------------------------------------------------------------------

/**
 * A transport-level failure, with a reason from the `@effect/platform` `SystemErrorReason` vocabulary.
 *
 * @since 0.1.0
 * @category errors
 */
export class TransportError extends Schema.TaggedError<TransportError>("effect-vmbus/TransportError")(
  "TransportError",
  {
    reason: Schema.Literal(
      "AlreadyExists",
      "BadResource",
      "Busy",
      "InvalidData",
      "NotFound",
      "PermissionDenied",
      "TimedOut",
      "UnexpectedEof",
      "Unknown",
      "WouldBlock",
      "WriteZero"
    ),
    detail: Schema.String,
    errno: optionalNumber,
    cause: Schema.optional(Schema.Defect)
  }
) {
  readonly [TypeId]: TypeId = TypeId
  override get message(): string {
    return `transport error (${this.reason}): ${this.detail}`
  }
}

// ---------------------------------------------------------------------------------------------
// Native devices (uio_hv_generic)
// ---------------------------------------------------------------------------------------------

/**
 * No VMBus device with this instance GUID under the sysfs root (never offered, rescinded, or a typo).
 *
 * @since 0.1.0
 * @category errors
 */
export class DeviceNotFound extends Schema.TaggedError<DeviceNotFound>("effect-vmbus/DeviceNotFound")("DeviceNotFound", {
  device: Schema.String,
  path: Schema.String,
  detail: optionalString
}) {
  readonly [TypeId]: TypeId = TypeId
  override get message(): string {
    return `no VMBus device ${this.device} (${this.path})${this.detail ? `: ${this.detail}` : ""}`
  }
}

/**
 * The device exists but is not bound to `uio_hv_generic` (`driver` names another driver, or none).
 * `fix` says how to bind it.
 *
 * @since 0.1.0
 * @category errors
 */
export class DeviceNotBound extends Schema.TaggedError<DeviceNotBound>("effect-vmbus/DeviceNotBound")("DeviceNotBound", {
  device: Schema.String,
  driver: optionalString,
  fix: Schema.String
}) {
  readonly [TypeId]: TypeId = TypeId
  override get message(): string {
    return `VMBus device ${this.device} is ${
      this.driver === undefined ? "not bound to any driver" : `bound to ${this.driver}`
    }, not uio_hv_generic; ${this.fix}`
  }
}

/**
 * A sysfs attribute the native transport needs is missing, unreadable or not in the kernel's format.
 *
 * @since 0.1.0
 * @category errors
 */
export class SysfsInvalid extends Schema.TaggedError<SysfsInvalid>("effect-vmbus/SysfsInvalid")("SysfsInvalid", {
  path: Schema.String,
  reason: Schema.String,
  value: optionalString
}) {
  readonly [TypeId]: TypeId = TypeId
  override get message(): string {
    return `sysfs ${this.path}: ${this.reason}${this.value === undefined ? "" : ` (read ${JSON.stringify(this.value)})`}`
  }
}

/**
 * A memory map of the uio device (or a channel's `ring` file) has the wrong name or size.
 *
 * @since 0.1.0
 * @category errors
 */
export class DeviceMapInvalid extends Schema.TaggedError<DeviceMapInvalid>("effect-vmbus/DeviceMapInvalid")(
  "DeviceMapInvalid",
  { map: Schema.String, reason: Schema.String, size: optionalNumber }
) {
  readonly [TypeId]: TypeId = TypeId
  override get message(): string {
    return `device map ${this.map}: ${this.reason}${this.size === undefined ? "" : ` (size ${this.size})`}`
  }
}

/**
 * Every error effect-vmbus fails with.
 *
 * @since 0.1.0
 * @category models
 */
export type VmbusError =
  | InvalidParameter
  | InvalidState
  | Unsupported
  | OpenRejected
  | OpenTimeout
  | ChannelClosed
  | PacketTooLarge
  | RingFull
  | Cancelled
  | TooManyTransactions
  | PacketAlreadyCompleted
  | MalformedPacket
  | HandlerFailed
  | RingCorrupt
  | BufferTooSmall
  | ExternalDataUnavailable
  | CompletionDropped
  | CallbackFailed
  | OutOfMemory
  | InvalidMemoryRange
  | GpadlCreateFailed
  | GpadlAlreadyMapped
  | GpadlWriteMapOfReadOnly
  | GpadlTooLarge
  | GpadlUnavailable
  | MalformedMessage
  | ProtocolError
  | NegotiationFailed
  | TransportError
  | DeviceNotFound
  | DeviceNotBound
  | SysfsInvalid
  | DeviceMapInvalid

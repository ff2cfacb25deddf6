// A channel's configuration (validated with Schema, defaults filled in) and the public shapes of the
// Channel module: options, errors, events, hooks and the OpenedChannel interface.
import type * as Duration from "effect/Duration"
import type * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import type * as Stream from "effect/Stream"
import type * as IncomingPacketNs from "../IncomingPacket.js"
import type * as PacketNs from "../Packet.js"
import type { GuestBuffer } from "../GuestMemory.js"
import type * as Transport from "../Transport.js"
import type {
  Cancelled,
  ChannelClosed,
  CloseReason,
  CallbackFailed,
  CompletionDropped,
  GpadlAlreadyMapped,
  HandlerFailed as HandlerFailedError,
  GpadlCreateFailed,
  GpadlTooLarge,
  GpadlUnavailable,
  GpadlWriteMapOfReadOnly,
  InvalidState,
  MalformedPacket,
  OpenRejected,
  OpenTimeout,
  OutOfMemory,
  PacketTooLarge,
  RingCorrupt,
  RingFull,
  TooManyTransactions,
  TransportError,
  Unsupported
} from "../VmbusError.js"
import { InvalidParameter } from "../VmbusError.js"
import * as L from "./layout.js"

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

const Guid = Schema.String.pipe(
  Schema.pattern(/^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/, {
    message: () => "must be a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"
  })
)
const PositiveInt = Schema.Int.pipe(Schema.positive())
const RingPages = Schema.Int.pipe(Schema.between(2, 0x10_0000, { message: () => "a ring needs 2..2^20 pages" }))

const common = {
  interfaceType: Guid,
  maxPacketSize: Schema.optionalWith(PositiveInt.pipe(Schema.lessThanOrEqualTo(L.MAX_PACKET_LENGTH - 16)), {
    default: () => 4096
  }),
  transactionQuota: Schema.optionalWith(PositiveInt, { default: () => 64 }),
  maxOutstandingTransactions: Schema.optionalWith(PositiveInt, { default: () => 1024 }),
  maxExternalPages: Schema.optionalWith(PositiveInt.pipe(Schema.lessThanOrEqualTo(0xfffff)), { default: () => 1024 }),
  drainTimeoutMillis: Schema.optionalWith(Schema.NonNegative, { default: () => 5000 }),
  openTimeoutMillis: Schema.optionalWith(Schema.NonNegative, { default: () => 10_000 }),
  failureCompletion: Schema.optionalWith(Schema.Uint8ArrayFromSelf, { default: () => new Uint8Array(0) }),
  /** Metrics are flushed at least this often while anything changed (0: every 256 events and at close only). */
  metricsFlushMillis: Schema.optionalWith(Schema.NonNegative, { default: () => 1000 }),
  strictCompletions: Schema.optionalWith(Schema.Boolean, { default: () => false }),
  readBatchLimit: Schema.optionalWith(PositiveInt, { default: () => 128 }),
  unknownPackets: Schema.optionalWith(Schema.Literal("skip", "deliver", "fail"), { default: () => "skip" as const }),
  /** A `vmbus.channel.request` span for every request (off by default: a span costs about a round trip). */
  requestSpans: Schema.optionalWith(Schema.Boolean, { default: () => false }),
  name: Schema.optional(Schema.String)
}

export const ClientConfig = Schema.Struct({
  role: Schema.Literal("client"),
  interfaceInstance: Schema.optional(Guid),
  outgoingRingPages: Schema.optionalWith(RingPages, { default: () => 16 }),
  incomingRingPages: Schema.optionalWith(RingPages, { default: () => 16 }),
  ...common
})

export const ServerConfig = Schema.Struct({
  role: Schema.Literal("server"),
  interfaceInstance: Guid,
  ...common
})

export const ChannelConfig = Schema.Union(ClientConfig, ServerConfig)
export type ChannelConfig = typeof ChannelConfig.Type
export type ChannelConfigInput = typeof ChannelConfig.Encoded

export const decodeConfig = (input: ChannelConfigInput): Either.Either<ChannelConfig, InvalidParameter> => {
  const result = Schema.decodeUnknownEither(ChannelConfig)(input, { errors: "first", onExcessProperty: "error" })
  if (Either.isRight(result)) {
    const config = result.right
    // Sent as a completion's payload: longer than maxPacketSize it could never be sent (the ring fits
    // maxPacketSize), and every failed packet would stay pending with its quota slot.
    if (config.failureCompletion.length > config.maxPacketSize) {
      return Either.left(new InvalidParameter({
        field: "failureCompletion",
        reason: `longer than maxPacketSize (${config.maxPacketSize} bytes)`,
        value: config.failureCompletion.length
      }))
    }
    return Either.right(config)
  }
  const issues = ParseResult.ArrayFormatter.formatErrorSync(result.left)
  // A union reports one issue per branch: prefer the branch of the role actually given.
  const first = issues.find((issue) => issue.path.length > 0 && issue.path[0] !== "role") ?? issues[0]
  const field = first === undefined || first.path.length === 0 ? "config" : first.path.join(".")
  return Either.left(new InvalidParameter({ field, reason: first?.message ?? "invalid configuration", value: undefined }))
}

// ---------------------------------------------------------------------------------------------
// Public shapes
// ---------------------------------------------------------------------------------------------

/** A GPA range to send as external data. */
export type ExternalRange = PacketNs.GpaRange

/** Memory a transfer page set refers to: a guest buffer (client) or a GPADL mapping (server). */
export type ExternalSource = GuestBuffer | Transport.GpadlView


export type ChannelState = "Opening" | "Active" | "Paused" | "Closing" | "Closed"

export interface ChannelStats {
  /** Packets written to the outgoing ring (completions included). */
  readonly packetsSent: number
  /** Payload bytes written to the outgoing ring. */
  readonly bytesSent: number
  /** Packets read from the incoming ring (completions included). */
  readonly packetsReceived: number
  /** Payload bytes read from the incoming ring. */
  readonly bytesReceived: number
  /** Completions this channel sent for packets it received. */
  readonly completionsSent: number
  /** Completions received for this channel's requests. */
  readonly completionsReceived: number
  /** Packets completed with the failure payload because their consumer neither completed nor failed them. */
  readonly autoCompleted: number
  /** Requests sent and not yet completed. */
  readonly requestsOutstanding: number
  /** Packets handed to consumers and not yet completed (bounded by the transaction quota). */
  readonly packetsOutstanding: number
  /** Doorbells rung towards the peer. */
  readonly signalsSent: number
  /** Doorbells received from the peer. */
  readonly signalsReceived: number
  /** Times a send waited for room in a full ring. */
  readonly ringFullWaits: number
  /** Completions whose transaction id matched no pending request (reported on `events`). */
  readonly unknownCompletions: number
  /** Packets whose `serve` handler failed, died or was interrupted (completed with the failure payload). */
  readonly handlerFailures: number
  /** Completions owed to the peer and never written (the open period ended first); see `events`. */
  readonly completionsDropped: number
  /** Packets of an unknown type or with unknown flag bits that were skipped (`unknownPackets: "skip"`). */
  readonly unknownPackets: number
}

export interface SendOptions {
  /** `"wait"` (default) suspends until the ring has room; `"fail"` fails with `RingFull` at once. */
  readonly ifFull?: "wait" | "fail" | undefined
}

export interface RequestOptions extends SendOptions {
  /** Stop waiting after this long with `Cancelled`; the transaction stays reserved until it completes. */
  readonly timeout?: Duration.DurationInput | undefined
  /**
   * Raw GPA ranges (a GPA-direct packet), sent as given: neither checked against guest memory nor
   * pinned — for memory the caller manages itself. Use `external` for memory the transaction should own.
   */
  readonly ranges?: ReadonlyArray<PacketNs.GpaRange> | undefined
  /**
   * External data as guest buffers or explicit ranges of them (a GPA-direct packet, one range per item).
   * What they name is pinned: it stays allocated, owned by the transaction, until its completion arrives
   * or — once the open period ended — until the host side can no longer reach it (after the close or
   * rescind handshake), even if the requesting fiber is interrupted or the buffers' own scope closes
   * first. A released buffer, or a range over pages that are not a live allocation, is `InvalidParameter`.
   */
  readonly external?: ReadonlyArray<GuestBuffer | ExternalRange> | undefined
  /**
   * Send a transfer-page packet: ranges of the peer's transfer page set `setId` (a buffer the peer
   * registered with `registerTransferPageSet`, e.g. its receive buffer). Not with `ranges`/`external`.
   */
  readonly transferPages?: {
    readonly setId: number
    readonly ranges: ReadonlyArray<PacketNs.TransferPageRange>
    readonly senderOwnsSet?: boolean | undefined
  } | undefined
  /**
   * Run once the transaction's id is freed: its completion arrived, or its open period ended and the
   * host side can no longer reach its external buffers.
   */
  readonly onSettled?: (() => void) | undefined
  /** Trace this request with a `vmbus.channel.request` span (also on for every request with `requestSpans`). */
  readonly span?: boolean | undefined
}

export type SendError = ChannelClosed | InvalidState | PacketTooLarge | RingFull | RingCorrupt | InvalidParameter
export type RequestError = SendError | Cancelled | TooManyTransactions | Unsupported
export type ReceiveError = ChannelClosed | RingCorrupt | MalformedPacket

/** A reported, non-fatal problem on a channel (unknown completion, …) or the fatal one that ended it. */
export interface ChannelEvent {
  readonly _tag:
    | "UnknownCompletion"
    | "DuplicateCompletion"
    | "RingCorrupt"
    | "PacketFailed"
    | "InvalidExternalData"
    | "HandlerFailed"
    | "CompletionDropped"
    | "CallbackFailed"
    | "UnknownPacket"
  /** The typed error that describes the problem. */
  readonly error: MalformedPacket | RingCorrupt | HandlerFailedError | CompletionDropped | CallbackFailed
}

export interface Sender {
  /**
   * Writes one in-band packet, no completion requested; done once the packet is in the ring. A full ring
   * waits (FIFO, with the `pending_send_sz` protocol) unless `ifFull: "fail"`.
   */
  readonly send: (payload: Uint8Array, options?: SendOptions) => Effect.Effect<void, SendError>
}

export interface OpenedChannel extends Sender {
  /** `client` (guest, VSC) or `server` (host, VSP). */
  readonly role: "client" | "server"
  /** The offer's interface type and instance. */
  readonly identity: Transport.OfferIdentity
  /** The relative channel id the host assigned. */
  readonly childRelid: number
  /** The validated configuration, defaults filled in. */
  readonly config: ChannelConfig
  /** The current lifecycle state. */
  readonly state: Effect.Effect<ChannelState>
  /** Every state change, starting with the current state. */
  readonly stateChanges: Stream.Stream<ChannelState>
  /** Waits until the open period ends and returns why. */
  readonly closed: Effect.Effect<CloseReason>
  /**
   * Writes several in-band packets: what fits goes in with one publish and at most one signal; the rest
   * follows packet by packet.
   */
  readonly sendBatch: (payloads: ReadonlyArray<Uint8Array>, options?: SendOptions) => Effect.Effect<void, SendError>
  /** Writes a packet of any kind (in-band, GPA-direct, transfer pages, completion) as it is given. */
  readonly sendPacket: (packet: PacketNs.Packet, options?: SendOptions) => Effect.Effect<void, SendError>
  /**
   * Sends a request (completion requested) and waits for the peer's completion; the result is its payload,
   * zero-padded to 8 bytes as on the wire. A timeout or interruption stops the wait, not the transaction: its
   * id stays reserved until the completion arrives or the open period ends (then `ChannelClosed`).
   */
  readonly request: (payload: Uint8Array, options?: RequestOptions) => Effect.Effect<Uint8Array, RequestError>
  /**
   * Takes one incoming packet as a scoped resource: completed with the failure payload if its scope closes
   * before `complete` or `fail`.
   */
  readonly take: Effect.Effect<IncomingPacketNs.IncomingPacket, ReceiveError, Scope.Scope>
  /**
   * The incoming packets as a `Stream` of chunks, one pull per batch the receive loop read: the packets of a
   * chunk are the consumer's until it pulls the next chunk, then each still pending is auto-completed
   * (`Stream.runForEachChunk` / `Stream.chunks` see the chunks; `runForEach` sees the packets one by one, with
   * a packet's ownership lasting until the chunk after its own is pulled).
   */
  readonly packets: Stream.Stream<IncomingPacketNs.IncomingPacket, ReceiveError>
  /**
   * The per-packet form of `packets`: each packet is the consumer's until it pulls the next one, then it is
   * auto-completed if still pending. One Stream pull per packet: several times the cost of `packets`.
   */
  readonly packetsOneByOne: Stream.Stream<IncomingPacketNs.IncomingPacket, ReceiveError>
  /**
   * Serves incoming packets with `handler` on a pool of persistent workers (`concurrency`, default: the
   * transaction quota, at most 64). A worker claims queued packets one by one in a plain loop (one
   * wake-up per drain of the ring) and wakes an idle worker before a handler that has to run. The
   * handler's result is the completion payload; if it fails, dies or is interrupted the packet is
   * completed with the failure payload (so is the packet in a worker's hands when the worker is
   * interrupted; packets not yet claimed stay queued). A handler that returns an `Exit`
   * (`Effect.succeed`, `Effect.void`, `Effect.fail`) is settled inline, without running the interpreter. No scope per packet: a handler
   * that needs one uses `serveScoped` (or `Effect.scoped` itself). Runs until the open period ends.
   */
  readonly serve: <E, R>(
    handler: (packet: IncomingPacketNs.IncomingPacket) => Effect.Effect<Uint8Array | void, E, R>,
    options?: { readonly concurrency?: number | undefined }
  ) => Effect.Effect<void, ReceiveError, R>
  /**
   * `serve` with a `Scope` per packet, closed when its handler ends (the cost of a scope for each
   * packet: a handler that needs no scope should use `serve`).
   */
  readonly serveScoped: <E, R>(
    handler: (packet: IncomingPacketNs.IncomingPacket) => Effect.Effect<Uint8Array | void, E, R | Scope.Scope>,
    options?: { readonly concurrency?: number | undefined }
  ) => Effect.Effect<void, ReceiveError, Exclude<R, Scope.Scope>>
  /**
   * Pauses the channel (KMCL `VmbChannelPause`): runs `onSuspend`, waits for packets in consumers' hands (at
   * most `drainTimeoutMillis`), keeps undelivered packets for `start`, and fails this side's pending requests
   * with `ChannelClosed`.
   */
  readonly pause: Effect.Effect<void, InvalidState>
  /** Resumes a paused channel (KMCL `VmbChannelStart`): runs the start hooks and delivers packets again. */
  readonly start: Effect.Effect<void, InvalidState>
  /**
   * Changes the transaction quota: how many incoming packets may be delivered and not yet completed. Beyond
   * it packets stay in the ring, so the sender sees a full ring.
   */
  readonly setTransactionQuota: (quota: number) => Effect.Effect<void, InvalidParameter>
  /** The channel's counters, exact and immediate. */
  readonly stats: Effect.Effect<ChannelStats>
  /**
   * Problems reported on the channel, as they happen (unknown or duplicate completions, invalid external
   * data, failed packets, corruption).
   */
  readonly events: Stream.Stream<ChannelEvent>
  /** Client: shares guest pages with the host as a GPADL (scoped; torn down on close). */
  readonly createGpadl: (
    range: Transport.GpadlRange,
    options?: { readonly readOnly?: boolean | undefined; readonly buffer?: GuestBuffer | undefined }
  ) => Effect.Effect<number, GpadlCreateFailed | GpadlTooLarge | InvalidParameter | ChannelClosed | Unsupported, Scope.Scope>
  /** Server: maps a GPADL of this channel (scoped; one mapping at a time; `ChannelClosed` after the open period). */
  readonly mapGpadl: (
    handle: number,
    options?: { readonly write?: boolean | undefined }
  ) => Effect.Effect<
    Transport.GpadlView,
    GpadlUnavailable | GpadlAlreadyMapped | GpadlWriteMapOfReadOnly | ChannelClosed | Unsupported,
    Scope.Scope
  >
  /**
   * Registers a transfer page set: transfer-page packets naming `id` have their ranges resolved and
   * bounds-checked against `buffer` (a guest buffer is pinned while registered; a released one is
   * `InvalidParameter`). Scoped: unregistered when the scope closes, which ends every view of it.
   */
  readonly registerTransferPageSet: (
    id: number,
    buffer: ExternalSource
  ) => Effect.Effect<void, InvalidParameter, Scope.Scope>
}

export interface Hooks<E = never> {
  /**
   * Runs first, once the channel is open and before any packet flows (KMCL `EvtVmbChannelOpened`). A failure
   * rolls the open back.
   */
  readonly onOpened?: ((channel: { readonly childRelid: number; readonly identity: Transport.OfferIdentity }) => Effect.Effect<void, E>) | undefined
  /**
   * Runs next, with `send` only (KMCL `EvtVmbChannelStarted`: the incoming queue is not running, so nothing
   * here may wait for a reply). A failure rolls the open back.
   */
  readonly onStarted?: ((sender: Sender) => Effect.Effect<void, E>) | undefined
  /**
   * Runs once incoming packets flow, with the whole channel (e.g. for version negotiation). A failure rolls
   * the open back.
   */
  readonly onPostStarted?: ((channel: OpenedChannel) => Effect.Effect<void, E>) | undefined
  /** Runs when the channel pauses or closes, before packets are drained (KMCL `EvtVmbChannelSuspend`). */
  readonly onSuspend?: Effect.Effect<void> | undefined
  /** Runs last, with the reason the open period ended (KMCL `EvtVmbChannelClosed`). */
  readonly onClosed?: ((reason: CloseReason) => Effect.Effect<void>) | undefined
}

/**
 * The largest packet (trailer excluded) a channel accepts: a GPA-direct packet of maxExternalPages
 * one-page ranges (a range header and a PFN each) and a maxPacketSize payload — so every packet within
 * the limits fits the reader's private buffer. Senders refuse larger ones with `PacketTooLarge`.
 */
export const packetBudget = (config: ChannelConfig): number =>
  Math.min(
    L.MAX_PACKET_LENGTH,
    L.DESCRIPTOR_SIZE + L.EXTENDED_HEADER_SIZE + config.maxExternalPages * (L.GPA_RANGE_HEADER_SIZE + L.PFN_SIZE) +
      L.align8Safe(config.maxPacketSize)
  )

export type OpenError =
  | InvalidParameter
  | OpenRejected
  | OpenTimeout
  | Unsupported
  | TransportError
  | ChannelClosed
  | RingCorrupt
  | OutOfMemory
  | GpadlCreateFailed
  | GpadlTooLarge

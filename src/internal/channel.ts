// The KMCL model over a transport endpoint: lifecycle, transactions, exactly-once completion, quota,
// flow control. Ring work is synchronous and batched; Effect wraps whole packets or batches.
import * as Cause from "effect/Cause"
import * as Chunk from "effect/Chunk"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberId from "effect/FiberId"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as PubSub from "effect/PubSub"
import * as Runtime from "effect/Runtime"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as SubscriptionRef from "effect/SubscriptionRef"
import type * as IncomingPacketNs from "../IncomingPacket.js"
import { TypeId as IncomingPacketTypeId } from "../IncomingPacket.js"
import type * as PacketNs from "../Packet.js"
import * as Ring from "../Ring.js"
import { TOO_LARGE, WRITTEN, type WriteStatus } from "./ring.js"
import type { GuestBuffer } from "../GuestMemory.js"
import * as Transport from "../Transport.js"
import type {
  GpadlAlreadyMapped,
  HandlerFailed as HandlerFailedError,
  GpadlCreateFailed,
  GpadlTooLarge,
  GpadlUnavailable,
  GpadlWriteMapOfReadOnly,
  OpenRejected,
  OutOfMemory,
  TransportError
} from "../VmbusError.js"
import {
  CallbackFailed,
  Cancelled,
  ChannelClosed,
  CompletionDropped,
  ExternalDataUnavailable,
  HandlerFailed,
  InvalidMemoryRange,
  Unsupported,
  type CloseReason,
  InvalidParameter,
  InvalidState,
  MalformedPacket,
  OpenTimeout,
  PacketAlreadyCompleted,
  PacketTooLarge,
  RingCorrupt,
  RingFull,
  TooManyTransactions
} from "../VmbusError.js"
import { ChannelMetrics, spanAttributes } from "./channelMetrics.js"
import * as L from "./layout.js"
import { actingFiber, actingFor, currentFiber, interruptBounded } from "./bounded.js"
import { Doorbell, Notifier, WaitQueue } from "./notifier.js"
import * as P from "./packet.js"
import { TransactionTable } from "./transactions.js"
import { type View, Views } from "./views.js"

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

const isGuestBuffer = (u: GuestBuffer | ExternalRange | ExternalSource): u is GuestBuffer =>
  "firstPfn" in u && "bytes" in u

/** A released guest buffer named by the caller: its pages may already be someone else's. */
const released = (field: string, buffer: GuestBuffer): InvalidParameter =>
  new InvalidParameter({ field, reason: "the guest buffer was released (its scope closed)", value: buffer.firstPfn })

/** The packet a request sends (transaction id 0 until one is reserved), or why it cannot be sent. */
const requestPacket = (
  payload: Uint8Array,
  options: RequestOptions | undefined
): P.InBandPacket | P.GpaDirectPacket | P.TransferPagesPacket | InvalidParameter | PacketTooLarge => {
  const ranges: Array<PacketNs.GpaRange> = [...(options?.ranges ?? [])]
  for (const item of options?.external ?? []) {
    ranges.push(isGuestBuffer(item) ? { byteCount: item.byteLength, byteOffset: 0, pfns: item.pfns } : item)
  }
  const transfer = options?.transferPages
  if (transfer !== undefined) {
    if (ranges.length > 0) {
      return new InvalidParameter({ field: "transferPages", reason: "a packet carries transfer pages or GPA ranges, not both" })
    }
    const packet: P.TransferPagesPacket = {
      _tag: "TransferPages",
      transactionId: 0n,
      completionRequested: true,
      transferPageSetId: transfer.setId,
      senderOwnsSet: transfer.senderOwnsSet ?? false,
      ranges: transfer.ranges,
      payload
    }
    return P.validateOutgoing(packet) ?? packet
  }
  if (ranges.length === 0) return { _tag: "InBand", transactionId: 0n, completionRequested: true, payload }
  const packet: P.GpaDirectPacket = { _tag: "GpaDirect", transactionId: 0n, completionRequested: true, ranges, payload }
  return P.validateOutgoing(packet) ?? packet
}

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
   * Serves incoming packets with `handler` on a pool of workers (`concurrency`, default: the transaction
   * quota, at most 64), fed by batch: each worker takes its share of what one drain of the ring queued.
   * The handler's result is the completion payload; if it fails, dies or is interrupted the packet is
   * completed with the failure payload (and so is every packet of its batch not yet handled when the
   * worker is interrupted). A handler that returns an `Exit` (`Effect.succeed`, `Effect.void`,
   * `Effect.fail`) is settled inline, without running the interpreter. No scope per packet: a handler
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

// Metrics and span attributes: ./channelMetrics.ts (flushed every 256 events, on a time bound, and at close)

// ---------------------------------------------------------------------------------------------
// Implementation
// ---------------------------------------------------------------------------------------------

type Terminal = ChannelClosed | RingCorrupt | MalformedPacket

class Counters {
  packetsSent = 0
  bytesSent = 0
  packetsReceived = 0
  bytesReceived = 0
  completionsSent = 0
  completionsReceived = 0
  autoCompleted = 0
  signalsSent = 0
  signalsReceived = 0
  ringFullWaits = 0
  unknownCompletions = 0
  handlerFailures = 0
  completionsDropped = 0
  unknownPackets = 0
}

const EMPTY = new Uint8Array(0)
const NO_PINS: Array<() => void> = []

/** Every packet kind but completions: what the receive side delivers. */
type DataPacket = Exclude<PacketNs.Packet, PacketNs.CompletionPacket>

/**
 * One plain object per delivered packet: its methods live on the prototype and its Effects are built
 * only when asked for, so a packet nobody inspects costs its fields alone.
 */
class PacketHandle implements IncomingPacketNs.IncomingPacket {
  declare readonly [IncomingPacketTypeId]: IncomingPacketNs.TypeId
  state: IncomingPacketNs.Disposition = "pending"
  readonly kind: DataPacket["_tag"]
  readonly payload: Uint8Array
  readonly completionRequested: boolean
  /** The views of its external data, once handed out: revoked when the packet is released. */
  views: View | undefined = undefined
  /** Set at delivery when the packet's external data failed validation; completed with failure. */
  invalid: MalformedPacket | undefined = undefined
  /** The fiber the packet was handed to (undefined until handed out). */
  holder: Fiber.RuntimeFiber<unknown, unknown> | undefined = undefined

  constructor(
    readonly channel: ChannelImpl,
    readonly packet: DataPacket
  ) {
    this.kind = packet._tag
    this.payload = packet.payload
    this.completionRequested = packet.completionRequested
  }

  get transactionId(): Option.Option<bigint> {
    return this.packet.completionRequested ? Option.some(this.packet.transactionId) : Option.none()
  }

  complete(payload?: Uint8Array) {
    return this.channel.completePacket(this, payload ?? EMPTY, "completed")
  }

  fail(reason: string) {
    return this.channel.failPacket(this, reason)
  }

  get disposition(): Effect.Effect<IncomingPacketNs.Disposition> {
    return Effect.sync(() => this.state)
  }

  get externalData(): Effect.Effect<ReadonlyArray<IncomingPacketNs.ExternalBuffer>, ExternalDataUnavailable> {
    return Effect.suspend(() => this.channel.externalData(this))
  }
}
Object.defineProperty(PacketHandle.prototype, IncomingPacketTypeId, { value: IncomingPacketTypeId })

export class ChannelImpl implements OpenedChannel {
  readonly role: "client" | "server"
  readonly identity: Transport.OfferIdentity
  readonly childRelid: number
  private readonly out: Ring.OutgoingRing
  private readonly in: Ring.IncomingRing
  private readonly counters = new Counters()
  private readonly metrics: ChannelMetrics
  private readonly spanAttributes: Record<string, unknown>
  private readonly tags: ReadonlyArray<readonly [string, string]>

  // lifecycle
  private current: ChannelState = "Opening"
  private delivering = false
  private terminal: Terminal | undefined = undefined
  private closeReason: CloseReason | undefined = undefined
  private readonly closedDeferred: Deferred.Deferred<CloseReason>
  private readonly stateRef: SubscriptionRef.SubscriptionRef<ChannelState>

  // receive side
  private readonly wake = new Doorbell()
  private readonly queue: Array<PacketHandle> = []
  /** Packets whose external data failed validation, waiting to be completed with failure. */
  private readonly rejected: Array<PacketHandle> = []
  /** Delivered packets not yet released (pending, or completing). */
  private readonly live = new Set<PacketHandle>()
  private readonly packetWaiters = new WaitQueue()
  private readonly packetReady = (): boolean =>
    (this.delivering && this.queue.length > 0) || this.terminal !== undefined || this.current === "Closing" ||
    this.current === "Closed"

  /** `serve`'s claim on the next queued packet: like `handOut`, without waking anyone. */
  private claim(holder: Fiber.RuntimeFiber<unknown, unknown> | undefined): PacketHandle | undefined {
    if (!this.delivering) return undefined
    const packet = this.queue.shift()
    if (packet !== undefined) packet.holder = holder
    return packet
  }

  /** The next queued packet, unless delivery is paused (queued packets then wait for start). */
  private handOut(): PacketHandle | undefined {
    if (!this.delivering) return undefined
    const packet = this.queue.shift()
    if (packet === undefined) return undefined
    // Who holds it: a pause or close run by that fiber cannot wait for it.
    packet.holder = currentFiber()
    // Only a hand-over passes the wake-up on: a waiter woken while delivery is paused must not wake
    // the next one, or the waiters would wake each other forever.
    if (this.queue.length > 0) this.packetWaiters.wakeOne()
    return packet
  }
  private outstanding = 0
  private readonly outstandingChanged = new Notifier()
  private quota: number
  private readonly handlerFibers = new Set<Fiber.RuntimeFiber<unknown, unknown>>()
  private readonly eventHub: PubSub.PubSub<ChannelEvent>

  // send side
  private readonly spaceChanged = new Notifier()
  /**
   * Completions owed to the peer, in order. Once a packet is completed its completion is queued here
   * and written as soon as the ring has room — whatever happens to the fiber that completed it — so a
   * completion is sent exactly once and no completing fiber holds the close up.
   */
  private readonly outbox: Array<{ readonly packet: PacketHandle; readonly completion: P.CompletionPacket }> = []
  private readonly outboxChanged = new Notifier()
  private waitingWriters = 0
  private readonly writerLock: Effect.Semaphore
  private readonly transactions: TransactionTable
  private readonly views: Views

  constructor(
    readonly config: ChannelConfig,
    private readonly endpoint: Transport.Endpoint,
    private readonly hooks: Hooks<unknown>,
    closedDeferred: Deferred.Deferred<CloseReason>,
    stateRef: SubscriptionRef.SubscriptionRef<ChannelState>,
    eventHub: PubSub.PubSub<ChannelEvent>,
    writerLock: Effect.Semaphore,
    out: Ring.OutgoingRing,
    incoming: Ring.IncomingRing
  ) {
    this.role = endpoint.role
    this.identity = endpoint.identity
    this.childRelid = endpoint.childRelid
    this.closedDeferred = closedDeferred
    this.stateRef = stateRef
    this.eventHub = eventHub
    this.writerLock = writerLock
    this.out = out
    this.in = incoming
    this.quota = config.transactionQuota
    this.transactions = new TransactionTable(config.maxOutstandingTransactions, (size) => {
      endpoint.counters.outstandingTransactions = size
    })
    this.views = new Views((count) => {
      endpoint.counters.liveViews = count
    })
    this.tags = [
      ["channel", config.name ?? `${endpoint.identity.interfaceInstance}/${endpoint.childRelid}`],
      ["role", endpoint.role]
    ]
    this.metrics = new ChannelMetrics(this.counters, () => this.transactions.size, this.tags)
    this.spanAttributes = spanAttributes(this)
  }

  // ----- state -------------------------------------------------------------------------------

  readonly state: Effect.Effect<ChannelState> = Effect.sync(() => this.current)

  get stateChanges(): Stream.Stream<ChannelState> {
    return this.stateRef.changes
  }

  readonly closed: Effect.Effect<CloseReason> = Effect.suspend(() => Deferred.await(this.closedDeferred))

  private setState(state: ChannelState): Effect.Effect<void> {
    return Effect.suspend(() => {
      this.current = state
      return SubscriptionRef.set(this.stateRef, state)
    })
  }

  get events(): Stream.Stream<ChannelEvent> {
    return Stream.unwrapScoped(Effect.map(PubSub.subscribe(this.eventHub), (queue) => Stream.fromQueue(queue)))
  }

  private report(event: ChannelEvent): void {
    this.eventHub.unsafeOffer(event)
  }

  /**
   * Runs a lifecycle hook that must not stop the lifecycle. It is called inside the guard, so a hook
   * that throws instead of returning an Effect is caught too; failures and defects are logged and
   * reported as `CallbackFailed`.
   */
  private runHook(name: string, hook: () => Effect.Effect<unknown, unknown> | undefined): Effect.Effect<void> {
    return Effect.catchAllCause(
      Effect.suspend(() => Effect.asVoid(hook() ?? Effect.void)),
      (cause) =>
        Effect.zipRight(
          Effect.sync(() => this.report({ _tag: "CallbackFailed", error: new CallbackFailed({ callback: name, cause: Cause.squash(cause) }) })),
          Effect.logWarning(`vmbus: lifecycle hook ${name} failed`, cause)
        )
    )
  }

  /** Runs a synchronous user callback from library code: what it throws is reported, never rethrown. */
  private runCallback(name: string, callback: () => void): void {
    try {
      callback()
    } catch (thrown) {
      this.report({ _tag: "CallbackFailed", error: new CallbackFailed({ callback: name, cause: thrown }) })
      if (this.runtime !== undefined) Runtime.runFork(this.runtime)(Effect.logWarning(`vmbus: ${name} threw`, thrown))
    }
  }

  // ----- signalling --------------------------------------------------------------------------

  private signalPeer(): void {
    this.counters.signalsSent++
    this.endpoint.signal()
  }

  /** Runs on every signal from the peer: new data, or space freed in our outgoing ring. */
  readonly onPeerSignal = (): void => {
    this.counters.signalsReceived++
    if (this.outbox.length > 0) this.flushOutbox()
    this.spaceChanged.notifyAll()
    if (this.transactions.size > 0) this.readCompletions()
    this.scheduleDrain()
  }

  private drainScheduled = false

  private scheduleDrain(): void {
    if (this.drainScheduled) return
    this.drainScheduled = true
    queueMicrotask(this.drainSoon)
  }

  /**
   * The reader's work for a signal, in a microtask rather than a fiber: the ring is drained, packets
   * queued and a consumer woken without waking the receive loop's fiber first (one hop less per
   * packet). Still after the signalling code has run, so writes right after the signal find the ring
   * not empty and do not signal again. What needs Effect (a flush of metrics, packets to reject, a
   * batch left over, a blocked reader) is left to the receive loop, which is rung for it.
   */
  private readonly drainSoon = (): void => {
    this.drainScheduled = false
    for (let round = 0; round < 4; round++) {
      if (!this.writable) return
      this.in.mask()
      const status = this.drain()
      if (status === "stop") return
      if (status !== "idle" || this.rejected.length > 0 || this.metrics.due()) break
      this.in.discardCopy()
      if (this.endpoint.polled === true) return
      const more = this.in.unmask()
      if (typeof more !== "boolean") {
        this.failCorrupt(more)
        return
      }
      if (!more) return
    }
    this.wake.ring()
  }

  /**
   * Reads the completions at the head of the incoming ring here, in the signal itself: a request is
   * resumed without waiting for the receive loop's fiber (a round trip costs two hops, not four). Stops
   * at the first data packet (delivery stays the loop's, in order) and leaves anything malformed to the
   * loop, which reports it. Not while a drain runs: a transport may signal synchronously from inside one.
   */
  private readCompletions(): void {
    if (this.draining || !this.writable) return
    this.draining = true
    try {
      let read = false
      for (let budget = this.config.readBatchLimit; budget > 0; budget--) {
        const head = this.in.peek()
        if (head === undefined || head._tag !== "Completion") break
        this.in.read()
        read = true
        this.handleCompletion(head)
        if (this.closeReason !== undefined) return
      }
      if (read && this.in.commit()) this.signalPeer()
    } finally {
      this.draining = false
    }
  }

  /** Writes queued completions while the ring has room; asks for a signal when it has not. */
  private flushOutbox(): void {
    while (this.outbox.length > 0) {
      const { completion, packet } = this.outbox[0]!
      if (!this.writable) {
        // The peer is gone (or the period ended): nothing to send, release locally.
        this.outbox.shift()
        this.dropCompletion(packet, `the open period ended (${this.closeReason ?? "rings released"}) before the ring had room`)
        continue
      }
      const result = this.out.writeStatus(completion)
      if (result === WRITTEN) {
        this.outbox.shift()
        this.counters.packetsSent++
        this.counters.completionsSent++
        if (this.out.commit()) this.signalPeer()
        this.release(packet)
        continue
      }
      if (typeof result !== "number") {
        this.failCorrupt(result)
        continue
      }
      if (result === TOO_LARGE) {
        // Checked at completion time; unreachable unless the ring is smaller than maxPacketSize allows.
        this.outbox.shift()
        this.dropCompletion(packet, "larger than the ring")
        continue
      }
      const fits = this.askForSpace(P.ringSize(completion))
      if (fits === true) continue
      if (typeof fits !== "boolean") this.failCorrupt(fits)
      break
    }
    this.outboxChanged.notifyAll()
    this.maybeClearSpaceRequest()
  }

  /** A completion that will never be written: counted, reported, and its packet released. */
  private dropCompletion(packet: PacketHandle, reason: string): void {
    this.counters.completionsDropped++
    this.report({ _tag: "CompletionDropped", error: new CompletionDropped({ transactionId: packet.packet.transactionId, reason }) })
    this.release(packet)
  }

  /** `requestSpace`, except on a polled endpoint: no host signal is wanted there, the next poll re-checks. */
  private askForSpace(size: number): boolean | RingCorrupt {
    if (this.endpoint.polled !== true) return this.out.requestSpace(size)
    const free = this.out.freeBytes()
    return typeof free === "number" ? free > size : free
  }

  /** pending_send_sz is withdrawn only when no writer and no queued completion still needs space. */
  private maybeClearSpaceRequest(): void {
    if (this.waitingWriters === 0 && this.outbox.length === 0 && this.writable) this.out.clearSpaceRequest()
  }

  /** The peer closed or rescinded the channel, or our ring reader found corruption. */
  endOpenPeriod(reason: CloseReason, error: Terminal): void {
    if (this.closeReason !== undefined) return
    this.closeReason = reason
    this.terminal = error
    this.delivering = false
    Deferred.unsafeDone(this.closedDeferred, Exit.succeed(reason))
    // Completions already in the ring settle their requests; the rest fail now (C1). What they pinned
    // stays until the host side can no longer reach it (`releaseEndedTransactions`).
    if (reason !== "Corrupt") this.drainCompletionsAtEnd()
    this.transactions.endPeriod(reason)
    // Every view of guest memory this channel handed out dies with the open period.
    this.views.revokeAll()
    this.spaceChanged.notifyAll()
    this.packetWaiters.wakeAll()
    this.flushOutbox()
    this.outstandingChanged.notifyAll()
    this.wake.ring()
  }

  /**
   * Reads the completions still in the incoming ring as the open period ends (the rings are still
   * mapped: the transport reports the peer's close before it releases them). Other packets can no
   * longer be delivered or completed and are skipped. Bounded: at most one ring's worth of packets.
   */
  private drainCompletionsAtEnd(): void {
    if (!(this.endpoint.ringsValid?.() ?? true)) return
    const most = Math.ceil(this.endpoint.incoming.byteLength / (L.DESCRIPTOR_SIZE + L.TRAILER_SIZE))
    for (let n = 0; n < most; n++) {
      const result = this.in.read()
      if (result === undefined || result._tag === "RingCorrupt" || result._tag === "BufferTooSmall") return
      if (result._tag === "Completion") this.handleCompletion(result)
    }
  }

  /** The rings may be touched only during the open period, and only while the transport maps them. */
  private get writable(): boolean {
    return this.closeReason === undefined && (this.endpoint.ringsValid?.() ?? true)
  }

  /**
   * The host side can no longer reach this endpoint's guest memory (the transport closed it): what
   * requests of the ended open period pinned is released now.
   */
  releaseEndedTransactions(): void {
    this.transactions.releaseEnded()
  }

  // ----- writing -----------------------------------------------------------------------------

  private writeNow(packet: P.Packet): WriteStatus | RingCorrupt {
    const result = this.out.writeStatus(packet)
    if (result !== WRITTEN) return result
    this.counters.packetsSent++
    this.counters.bytesSent += packet.payload.length
    if (this.out.commit()) this.signalPeer()
    return WRITTEN
  }

  private failCorrupt(error: RingCorrupt): void {
    this.report({ _tag: "RingCorrupt", error })
    this.endOpenPeriod("Corrupt", error)
    this.closeAllInBackground()
  }

  /**
   * Writes one packet, waiting (FIFO) for space with the pending-send-size protocol when the ring is
   * full. `written` is set synchronously the moment the packet is in the ring, so a caller interrupted
   * afterwards can tell.
   */
  writePacket(
    packet: P.Packet,
    ifFull: "wait" | "fail",
    written?: { done: boolean }
  ): Effect.Effect<void, ChannelClosed | RingFull | RingCorrupt | PacketTooLarge | InvalidState> {
    return Effect.suspend((): Effect.Effect<void, ChannelClosed | RingFull | RingCorrupt | PacketTooLarge | InvalidState> => {
      // Rings released before the peer's close was reported (a transport may report it late): a peer close.
      if (!this.writable) return Effect.fail(new ChannelClosed({ reason: this.closeReason ?? "PeerClose" }))
      if (this.outbox.length > 0) this.flushOutbox()
      if (this.waitingWriters === 0) {
        const outcome = this.tryWrite(packet, written)
        if (outcome !== "full") return outcome
        if (ifFull === "fail") {
          const free = this.out.freeBytes()
          return Effect.fail(new RingFull({ required: P.ringSize(packet), available: typeof free === "number" ? free : 0 }))
        }
      } else if (ifFull === "fail") {
        const free = this.out.freeBytes()
        return Effect.fail(new RingFull({ required: P.ringSize(packet), available: typeof free === "number" ? free : 0 }))
      }
      // Slow path: copy the payload now, the caller may reuse its buffer while we wait.
      const owned = { ...packet, payload: packet.payload.slice() } as P.Packet
      return this.slowWrite(owned, written)
    })
  }

  /**
   * One synchronous write attempt: done (with `written` set at once), a typed failure (a corrupt ring
   * also fails the channel), or "full".
   */
  private tryWrite(
    packet: P.Packet,
    written: { done: boolean } | undefined
  ): Effect.Effect<void, RingCorrupt | PacketTooLarge> | "full" {
    const result = this.writeNow(packet)
    if (result === WRITTEN) {
      if (written) written.done = true
      return Effect.void
    }
    if (typeof result !== "number") {
      this.failCorrupt(result)
      return Effect.fail(result)
    }
    if (result === TOO_LARGE) return Effect.fail(this.out.tooLarge(packet))
    return "full"
  }

  private slowWrite(
    packet: P.Packet,
    written: { done: boolean } | undefined
  ): Effect.Effect<void, ChannelClosed | RingCorrupt | PacketTooLarge | InvalidState> {
    const size = P.ringSize(packet)
    const attempt: Effect.Effect<void, ChannelClosed | RingCorrupt | PacketTooLarge | InvalidState> = Effect.suspend(() => {
      // C9: a writer still waiting when the channel pauses or closes does not write afterwards.
      const problem = this.checkSendable("send")
      if (problem !== undefined) return Effect.fail(problem)
      // Queued completions go first; the space request stays while they still need it.
      if (this.outbox.length > 0) this.flushOutbox()
      if (this.outbox.length === 0) this.out.clearSpaceRequest()
      const outcome = this.tryWrite(packet, written)
      if (outcome !== "full") return outcome
      const seen = this.spaceChanged.current
      const fits = this.askForSpace(size)
      if (typeof fits !== "boolean") {
        this.failCorrupt(fits)
        return Effect.fail(fits)
      }
      if (fits) return attempt
      this.counters.ringFullWaits++
      return Effect.zipRight(this.spaceChanged.waitAfter(seen), attempt)
    })
    return Effect.acquireUseRelease(
      Effect.sync(() => {
        this.waitingWriters++
      }),
      () => this.writerLock.withPermits(1)(attempt),
      () =>
        Effect.sync(() => {
          this.waitingWriters--
          this.maybeClearSpaceRequest()
        })
    )
  }

  private checkSendable(operation: string): InvalidState | ChannelClosed | undefined {
    if (this.closeReason !== undefined) return new ChannelClosed({ reason: this.closeReason })
    if (!this.writable) return new ChannelClosed({ reason: "PeerClose" })
    if (this.current === "Active" || this.current === "Opening") return undefined
    if (this.current === "Closing" || this.current === "Closed") return new ChannelClosed({ reason: "LocalClose" })
    return new InvalidState({ operation, expected: "Active", actual: this.current })
  }

  /**
   * What a receiver configured alike would refuse is refused here, before it is sent: more external
   * pages than maxExternalPages (it would fail the packet), more bytes than its packet budget (it would
   * end the channel as Corrupt).
   */
  private checkReceivable(packet: P.Packet): PacketTooLarge | undefined {
    if (packet._tag === "GpaDirect") {
      let pages = 0
      for (const range of packet.ranges) pages += range.pfns.length
      if (pages > this.config.maxExternalPages) {
        return new PacketTooLarge({ size: pages, max: this.config.maxExternalPages, limit: "maxExternalPages" })
      }
    }
    const length = P.packetLength(packet)
    const budget = packetBudget(this.config)
    return length > budget ? new PacketTooLarge({ size: length, max: budget }) : undefined
  }

  private checkPayload(length: number): PacketTooLarge | undefined {
    return length > this.config.maxPacketSize ? new PacketTooLarge({ size: length, max: this.config.maxPacketSize }) : undefined
  }

  readonly send = (payload: Uint8Array, options?: SendOptions): Effect.Effect<void, SendError> =>
    Effect.suspend((): Effect.Effect<void, SendError> => {
      const problem = this.checkSendable("send") ?? this.checkPayload(payload.length)
      if (problem !== undefined) return Effect.fail(problem)
      const packet: P.InBandPacket = { _tag: "InBand", transactionId: 0n, completionRequested: false, payload }
      return this.writePacket(packet, options?.ifFull ?? "wait")
    })

  readonly sendPacket = (packet: PacketNs.Packet, options?: SendOptions): Effect.Effect<void, SendError> =>
    Effect.suspend((): Effect.Effect<void, SendError> => {
      const problem = this.checkSendable("sendPacket") ?? this.checkPayload(packet.payload.length) ??
        P.validateOutgoing(packet) ?? this.checkReceivable(packet)
      if (problem !== undefined) return Effect.fail(problem)
      return this.writePacket(packet, options?.ifFull ?? "wait")
    })

  /** Writes several in-band packets with one publish and at most one signal, as ring space allows. */
  readonly sendBatch = (payloads: ReadonlyArray<Uint8Array>, options?: SendOptions): Effect.Effect<void, SendError> =>
    Effect.suspend(() => {
      const problem = this.checkSendable("sendBatch")
      if (problem !== undefined) return Effect.fail(problem)
      for (const payload of payloads) {
        const tooLarge = this.checkPayload(payload.length)
        if (tooLarge !== undefined) return Effect.fail(tooLarge)
      }
      let index = 0
      if (this.waitingWriters === 0) {
        for (; index < payloads.length; index++) {
          const result = this.out.writeStatus({
            _tag: "InBand",
            transactionId: 0n,
            completionRequested: false,
            payload: payloads[index]!
          })
          if (result !== WRITTEN) {
            if (typeof result !== "number") {
              this.out.revert()
              this.failCorrupt(result)
              return Effect.fail(result)
            }
            break
          }
          this.counters.packetsSent++
          this.counters.bytesSent += payloads[index]!.length
        }
        if (this.out.commit()) this.signalPeer()
      }
      if (index === payloads.length) return Effect.void
      // C6: the caller may reuse its buffers once the call is made, so copy what still waits.
      const rest = payloads.slice(index).map((payload) => payload.slice())
      return Effect.forEach(rest, (payload) => this.send(payload, options), { discard: true })
    })

  readonly request = (payload: Uint8Array, options?: RequestOptions): Effect.Effect<Uint8Array, RequestError> => {
    // KMCL: a zero timeout means "do not queue if the ring is full" (RingFull), not an instant Cancelled.
    const zeroTimeout = options?.timeout !== undefined && Duration.toMillis(Duration.decode(options.timeout)) === 0
    const ifFull = zeroTimeout ? "fail" : options?.ifFull ?? "wait"
    const run = Effect.suspend((): Effect.Effect<Uint8Array, RequestError> => {
      const problem = this.checkSendable("request") ?? this.checkPayload(payload.length)
      if (problem !== undefined) return Effect.fail(problem)
      const shape = requestPacket(payload, options)
      if (shape instanceof InvalidParameter || shape instanceof PacketTooLarge) return Effect.fail(shape)
      if (shape._tag === "GpaDirect" && this.endpoint.gpaDirect === false) {
        return Effect.fail(new Unsupported({ capability: "externalData", reason: "the transport cannot name guest physical pages" }))
      }
      const tooLarge = this.checkReceivable(shape)
      if (tooLarge !== undefined) return Effect.fail(tooLarge)
      const external = options?.external
      const pins = external === undefined || external.length === 0 ? NO_PINS : this.pinExternal(external)
      if (!Array.isArray(pins)) return Effect.fail(pins)
      const userSettled = options?.onSettled
      const startedAt = performance.now()
      // The table owns the pins from here: released once, when the id is freed.
      const transaction = this.transactions.reserve(() => {
        // Freed by its completion (see handleCompletion): one round trip for the latency histogram.
        if (this.completing) this.metrics.recordLatency(performance.now() - startedAt)
        for (const unpin of pins) unpin()
        // Runs in the receive loop or a close: a throw must stop neither.
        if (userSettled !== undefined) this.runCallback("onSettled", userSettled)
      })
      if (transaction instanceof TooManyTransactions) {
        for (const unpin of pins) unpin()
        return Effect.fail(transaction)
      }
      const packet = { ...shape, transactionId: transaction.id } as P.Packet
      // Fast path: room in the ring, nobody queued before us — written now, synchronously (no point
      // where an interruption could fall between the write and the wait).
      if (this.writable && this.waitingWriters === 0) {
        if (this.outbox.length > 0) this.flushOutbox()
        const result = this.writeNow(packet)
        if (result === WRITTEN) return this.transactions.await(transaction)
        if (typeof result !== "number") {
          this.transactions.cancel(transaction)
          this.failCorrupt(result)
          return Effect.fail(result)
        }
        if (result === TOO_LARGE) {
          this.transactions.cancel(transaction)
          return Effect.fail(this.out.tooLarge(packet))
        }
        if (ifFull === "fail") {
          this.transactions.cancel(transaction)
          const free = this.out.freeBytes()
          return Effect.fail(new RingFull({ required: P.ringSize(packet), available: typeof free === "number" ? free : 0 }))
        }
      }
      const written = { done: false }
      return Effect.uninterruptibleMask((restore) =>
        Effect.onExit(restore(this.writePacket(packet, ifFull, written)), (exit) =>
          Effect.sync(() => {
            // Not in the ring: nothing will complete it and no host saw its pages, so free it now.
            if (Exit.isFailure(exit) && !written.done) this.transactions.cancel(transaction)
          })).pipe(
            // Interruption of this wait stops only the wait: the id stays reserved until it completes (C8).
            Effect.zipRight(restore(this.transactions.await(transaction)))
          )
      )
    })
    const timed = options?.timeout === undefined || zeroTimeout
      ? run
      : Effect.timeoutFail(run, {
        duration: options.timeout,
        onTimeout: () => new Cancelled({ reason: `no completion within ${Duration.format(Duration.decode(options.timeout!))}` })
      })
    // Spans cost about as much as the round trip itself: on when the channel or the request asks.
    if (!this.config.requestSpans && options?.span !== true) return timed
    return Effect.withSpan(timed, "vmbus.channel.request", {
      attributes: this.spanAttributes,
      captureStackTrace: false
    })
  }

  /**
   * Pins what `external` names for the transaction carrying it: a buffer must be live; an explicit range
   * pins the live allocations its pages belong to. On refusal nothing stays pinned.
   */
  private pinExternal(external: ReadonlyArray<GuestBuffer | ExternalRange>): Array<() => void> | InvalidParameter {
    const memory = this.endpoint.memory
    const pins: Array<() => void> = []
    if (memory === undefined) return pins
    for (let i = 0; i < external.length; i++) {
      const item = external[i]!
      let refused: InvalidParameter | undefined
      if (isGuestBuffer(item)) {
        if (memory.isLive(item)) pins.push(memory.pin(item))
        else refused = released(`external[${i}]`, item)
      } else {
        const pinned = memory.pinRange(item.pfns)
        if (Either.isRight(pinned)) pins.push(pinned.right)
        else refused = new InvalidParameter({ field: `external[${i}]`, reason: pinned.left.reason, value: pinned.left.pfn })
      }
      if (refused !== undefined) {
        for (const unpin of pins) unpin()
        return refused
      }
    }
    return pins
  }

  // ----- receiving ---------------------------------------------------------------------------

  /** True while a completion frees its transaction (the request's latency is recorded then). */
  private completing = false

  private handleCompletion(packet: PacketNs.CompletionPacket): void {
    this.counters.completionsReceived++
    const id = packet.transactionId
    this.completing = true
    const outcome = this.transactions.complete(id, packet.payload)
    this.completing = false
    // "late": its waiter was failed by pause, the id kept reserved for it; freed silently, no false alarm.
    if (outcome !== "settled" && outcome !== "late") {
      this.counters.unknownCompletions++
      const duplicate = outcome === "duplicate"
      const error = new MalformedPacket({
        reason: duplicate
          ? "completion for a transaction already completed or abandoned"
          : "completion for a transaction id never issued",
        field: "trans_id",
        value: id
      })
      this.report({ _tag: duplicate ? "DuplicateCompletion" : "UnknownCompletion", error })
      if (this.config.strictCompletions) {
        this.endOpenPeriod("Corrupt", error)
        this.closeAllInBackground()
      }
    }
  }

  private deliver(packet: DataPacket): void {
    this.counters.packetsReceived++
    this.counters.bytesReceived += packet.payload.length
    this.outstanding++
    this.endpoint.counters.outstandingPackets = this.outstanding
    const handle = new PacketHandle(this, packet)
    this.live.add(handle)
    const invalid = this.checkExternal(packet)
    if (invalid !== undefined) {
      // Not delivered: completed with the failure payload by the receive loop.
      handle.invalid = invalid
      this.report({ _tag: "InvalidExternalData", error: invalid })
      this.rejected.push(handle)
      return
    }
    this.queue.push(handle)
  }

  /** The last drain left packets in the ring (quota reached, or not delivering): a release rings the loop. */
  private readerBlocked = false

  /** True while a drain runs: a signal arriving from inside it (a synchronous transport) must not nest. */
  private draining = false

  /** Reads one batch (one commit, at most one signal). Returns what the receive loop should do next. */
  private drain(): "idle" | "blocked" | "more" | "stop" {
    if (this.draining) return "more"
    this.draining = true
    try {
      return this.drainBatch()
    } finally {
      this.draining = false
    }
  }

  private drainBatch(): "idle" | "blocked" | "more" | "stop" {
    if (!this.writable) return "stop"
    let budget = this.config.readBatchLimit
    let status: "idle" | "blocked" | "more" = "idle"
    for (;;) {
      if (budget-- === 0) {
        status = "more"
        break
      }
      const canDeliver = this.delivering && this.outstanding < this.quota
      const result = canDeliver ? this.in.read() : this.in.peek()
      if (result === undefined) break
      if (result._tag === "RingCorrupt" || result._tag === "BufferTooSmall") {
        if (this.in.commit()) this.signalPeer()
        const error = result._tag === "RingCorrupt" ? result : new RingCorrupt({
          reason: "packet larger than the channel's maximum packet size",
          field: "len8",
          value: result.required
        })
        this.failCorrupt(error)
        return "stop"
      }
      if (result._tag === "Completion") {
        if (!canDeliver) this.in.read()
        this.handleCompletion(result)
        if (this.closeReason !== undefined) return "stop"
        continue
      }
      if (this.config.unknownPackets !== "deliver" && (result._tag === "Unknown" || P.unknownFlagBits(result) !== 0)) {
        // Consumed whatever the policy, so no reader is ever stuck behind it (issue 8, C14).
        if (!canDeliver) this.in.read()
        if (this.refuseUnknown(result)) return "stop"
        continue
      }
      if (!canDeliver) {
        status = "blocked"
        this.readerBlocked = true
        break
      }
      this.deliver(result)
    }
    if (this.in.commit()) this.signalPeer()
    // One wake-up per drained batch: the consumer woken wakes the next if it leaves packets queued.
    if (this.queue.length > 0) this.packetWaiters.wakeOne()
    return status
  }

  /**
   * A packet of a type this channel does not interpret, or with flag bits it does not know: skipped and
   * reported (as Linux drivers log and skip), or fatal (`unknownPackets: "fail"`, OpenVMM's rule).
   * Returns true when the channel ended.
   */
  private refuseUnknown(packet: DataPacket): boolean {
    const unknownType = packet._tag === "Unknown"
    const field = unknownType ? "type" : "flags"
    const value = unknownType ? packet.type : packet.flags
    const reason = unknownType ? "packet of an unknown type" : "packet with unknown flag bits"
    if (this.config.unknownPackets === "fail") {
      if (this.in.commit()) this.signalPeer()
      this.failCorrupt(new RingCorrupt({ reason, field, value }))
      return true
    }
    this.counters.unknownPackets++
    this.report({ _tag: "UnknownPacket", error: new MalformedPacket({ reason: `${reason}, skipped`, field, value }) })
    return false
  }

  private readonly receiveLoop: Effect.Effect<void> = Effect.suspend(() => {
    const step = (): Effect.Effect<void> =>
      Effect.suspend(() => {
        // Not one more ring access once the open period ended: the peer may have freed the pages.
        if (!this.writable) return Effect.void
        this.in.mask()
        const status = this.drain()
        if (status === "stop") return Effect.void
        if (status !== "more") this.in.discardCopy()
        const flush0 = this.metrics.due() ? this.metrics.flush : Effect.void
        const flush = this.rejected.length === 0 ? flush0 : Effect.zipRight(
          Effect.forkDaemon(Effect.forEach(this.rejected.splice(0), (packet) => this.autoComplete(packet), { discard: true })),
          flush0
        )
        if (status === "more") return Effect.zipRight(flush, Effect.zipRight(Effect.yieldNow(), Effect.suspend(step)))
        if (status === "idle" && this.endpoint.polled !== true) {
          const more = this.in.unmask()
          if (typeof more !== "boolean") {
            this.failCorrupt(more)
            return flush
          }
          if (more) return Effect.zipRight(flush, Effect.suspend(step))
        }
        return Effect.zipRight(flush, Effect.zipRight(this.wake.wait, Effect.suspend(step)))
      })
    return step()
  })

  /**
   * Takes the next delivered packet as a scoped resource. The wait is interruptible; the hand-over is
   * one synchronous step inside the acquisition, so a packet is never lost between the two.
   */
  readonly take: Effect.Effect<IncomingPacketNs.IncomingPacket, ReceiveError, Scope.Scope> = Effect.suspend(() => {
    return Effect.acquireRelease(
      Effect.sync(() => this.handOut()),
      (packet) => (packet === undefined ? Effect.void : this.autoComplete(packet))
    ).pipe(
      Effect.flatMap((packet): Effect.Effect<IncomingPacketNs.IncomingPacket, ReceiveError, Scope.Scope> => {
        if (packet !== undefined) return Effect.succeed(packet)
        if (this.terminal !== undefined) return Effect.fail(this.terminal)
        if (this.current === "Closing" || this.current === "Closed") {
          return Effect.fail(new ChannelClosed({ reason: "LocalClose" }))
        }
        return Effect.zipRight(this.packetWaiters.waitUntil(this.packetReady), this.take)
      })
    )
  })

  /**
   * The incoming packets as a stream of chunks: one pull hands over every packet queued by a drain of
   * the ring. The packets of a chunk are the consumer's until it pulls the next chunk (or the stream
   * ends); then any still pending is completed with the failure payload.
   */
  get packets(): Stream.Stream<IncomingPacketNs.IncomingPacket, ReceiveError> {
    return Stream.suspend(() => {
      let previous: Array<PacketHandle> = []
      const settlePrevious = Effect.sync(() => {
        const chunk = previous
        previous = []
        let forced = false
        for (let i = 0; i < chunk.length; i++) {
          if (chunk[i]!.state === "pending") {
            this.autoCompleteNow(chunk[i]!)
            forced = true
          }
        }
        // The completions wait in the outbox if the ring is full: queued, never lost.
        if (forced) this.flushOutbox()
      })
      const next: Effect.Effect<Chunk.Chunk<IncomingPacketNs.IncomingPacket>, ReceiveError> = Effect.suspend(() => {
        const batch = this.handOutBatch(this.queue.length)
        if (batch.length > 0) {
          previous = batch
          return Effect.succeed(Chunk.unsafeFromArray<IncomingPacketNs.IncomingPacket>(batch))
        }
        return Effect.zipRight(this.waitForPacket, next)
      })
      const pull = Effect.zipRight(settlePrevious, next).pipe(
        Effect.mapError((error) =>
          error._tag === "ChannelClosed" && error.reason === "LocalClose" ? Option.none() : Option.some(error)
        )
      )
      return Stream.repeatEffectChunkOption(pull).pipe(Stream.ensuring(settlePrevious))
    })
  }

  /**
   * The per-packet form: one pull per packet, each packet the consumer's until it pulls the next one.
   * Costs a Stream pull (and a one-element chunk) per packet — several times `packets`' cost.
   */
  get packetsOneByOne(): Stream.Stream<IncomingPacketNs.IncomingPacket, ReceiveError> {
    return Stream.suspend(() => {
      let previous: PacketHandle | undefined
      const settlePrevious = Effect.suspend(() => {
        const packet = previous
        previous = undefined
        return packet === undefined ? Effect.void : this.autoComplete(packet)
      })
      const next: Effect.Effect<PacketHandle, ReceiveError> = Effect.suspend(() => {
        const packet = this.handOut()
        if (packet !== undefined) {
          previous = packet
          return Effect.succeed(packet)
        }
        return Effect.zipRight(this.waitForPacket, next)
      })
      const pull = Effect.zipRight(settlePrevious, next).pipe(
        Effect.mapError((error) =>
          error._tag === "ChannelClosed" && error.reason === "LocalClose" ? Option.none() : Option.some(error)
        )
      )
      return Stream.repeatEffectOption(pull).pipe(Stream.ensuring(settlePrevious))
    })
  }

  /** Waits (interruptibly) until a packet is queued; fails once the open period has ended. */
  private readonly waitForPacket: Effect.Effect<void, ReceiveError> = Effect.suspend(() => {
    if (this.delivering && this.queue.length > 0) return Effect.void
    if (this.terminal !== undefined) return Effect.fail(this.terminal)
    if (this.current === "Closing" || this.current === "Closed") {
      return Effect.fail(new ChannelClosed({ reason: "LocalClose" }))
    }
    return Effect.zipRight(this.packetWaiters.waitUntil(this.packetReady), this.waitForPacket)
  })

  /**
   * Hands a consumer its share of the queued packets (at most `max`), all at once: a batch costs one
   * wake-up, not one per packet. What is left wakes the next waiting consumer.
   */
  private handOutBatch(max: number): Array<PacketHandle> {
    if (!this.delivering || this.queue.length === 0) return []
    const batch = this.queue.splice(0, Math.max(1, Math.min(max, this.queue.length)))
    const holder = currentFiber()
    for (let i = 0; i < batch.length; i++) batch[i]!.holder = holder
    if (this.queue.length > 0) this.packetWaiters.wakeOne()
    return batch
  }

  /**
   * Ends a packet from its handler's result. Returns undefined when that took no Effect (the usual
   * case: the completion is in the ring or the packet needed none), else what is left to run — a
   * failure to report, or a wait for room in the ring.
   */
  private settle(packet: PacketHandle, exit: Exit.Exit<Uint8Array | void, unknown>): Effect.Effect<void> | undefined {
    if (Exit.isFailure(exit)) {
      if (Exit.isInterrupted(exit)) {
        this.counters.handlerFailures++
        return this.autoComplete(packet)
      }
      return this.handlerFailed(packet, exit.cause)
    }
    // Completed by the handler itself: its result is ignored (a second completion would be refused).
    if (packet.state !== "pending") return undefined
    const result = exit.value instanceof Uint8Array ? exit.value : EMPTY
    // A result that cannot be sent (too large) still ends the packet: with the failure payload.
    if (result.length > this.config.maxPacketSize) {
      return this.handlerFailed(packet, Cause.fail(new PacketTooLarge({ size: result.length, max: this.config.maxPacketSize })))
    }
    return this.completeNow(packet, result, "completed") ? this.waitWritten(packet) : undefined
  }

  /**
   * Runs the handler on queued packets in this worker's fiber, claiming them one by one (a synchronous
   * step, no fiber hop) until the queue is empty. A handler that returns an `Exit` (`Effect.succeed`,
   * `Effect.void`, `Effect.fail`) is settled inline, without the interpreter, so a drained batch costs
   * one wake-up. Before a handler that has to run, one idle worker is woken for what is still queued.
   * One guard for the whole run: whatever ends it (an interruption, a drain timeout), the packet in
   * hand, if still pending, is completed with the failure payload.
   */
  private handleBatch<E, R>(
    handler: (packet: IncomingPacketNs.IncomingPacket) => Effect.Effect<Uint8Array | void, E, R>,
    scoped: boolean,
    pooled: boolean
  ): Effect.Effect<void, never, R> {
    return Effect.uninterruptibleMask((restore) =>
      Effect.suspend(() => {
        let current: PacketHandle | undefined
        const self = currentFiber()
        const loop = (): Effect.Effect<void, never, R> => {
          for (;;) {
            const packet = this.claim(self)
            if (packet === undefined) return Effect.void
            current = packet
            let effect: Effect.Effect<Uint8Array | void, E, R>
            try {
              effect = handler(packet)
            } catch (thrown) {
              effect = Exit.die(thrown)
            }
            if (Exit.isExit(effect) && !scoped) {
              const rest = this.settle(packet, effect as Exit.Exit<Uint8Array | void, unknown>)
              if (rest !== undefined) return Effect.zipRight(rest, Effect.suspend(loop))
              continue
            }
            // This handler may take a while: an idle worker takes over what is queued behind it.
            if (pooled && this.queue.length > 0) this.packetWaiters.wakeOne()
            const run = scoped ? Effect.scoped(effect as Effect.Effect<Uint8Array | void, E, R | Scope.Scope>) : effect
            return Effect.flatMap(Effect.exit(restore(run)), (exit) => {
              const rest = this.settle(packet, exit) ?? Effect.void
              // restore(void): an interruption of this worker stops here; the guard ends the packet in hand.
              return Effect.zipRight(rest, Effect.zipRight(restore(Effect.void), Effect.suspend(loop)))
            }) as Effect.Effect<void, never, R>
          }
        }
        return Effect.ensuring(
          loop(),
          Effect.sync(() => {
            if (current !== undefined && current.state === "pending") {
              this.autoCompleteNow(current)
              this.flushOutbox()
            }
          })
        )
      })
    )
  }

  readonly serve = <E, R>(
    handler: (packet: IncomingPacketNs.IncomingPacket) => Effect.Effect<Uint8Array | void, E, R>,
    options?: { readonly concurrency?: number | undefined }
  ): Effect.Effect<void, ReceiveError, R> => this.servePool(handler, false, options)

  readonly serveScoped = <E, R>(
    handler: (packet: IncomingPacketNs.IncomingPacket) => Effect.Effect<Uint8Array | void, E, R | Scope.Scope>,
    options?: { readonly concurrency?: number | undefined }
  ): Effect.Effect<void, ReceiveError, Exclude<R, Scope.Scope>> =>
    this.servePool(handler, true, options) as Effect.Effect<void, ReceiveError, Exclude<R, Scope.Scope>>

  private servePool<E, R>(
    handler: (packet: IncomingPacketNs.IncomingPacket) => Effect.Effect<Uint8Array | void, E, R>,
    scoped: boolean,
    options?: { readonly concurrency?: number | undefined }
  ): Effect.Effect<void, ReceiveError, R> {
    return Effect.suspend(() => {
      // A fixed set of workers (default: the quota, at most 64), fed by batch: no fiber per packet.
      const workers = Math.max(1, Math.min(options?.concurrency ?? Math.min(this.quota, 64), 1024))
      // A worker serves the queue until it is empty, and wakes another before a handler that has to run.
      const batch = Effect.suspend(() => this.handleBatch(handler, scoped, workers > 1))
      const worker = Effect.forever(Effect.zipRight(this.waitForPacket, batch))
      const fibers = new Set<Fiber.RuntimeFiber<never, ReceiveError>>()
      let stopping = false
      // A worker interrupted by a drain timeout (its handler hung) is replaced while the channel is open.
      const runWorker: Effect.Effect<void, ReceiveError, R> = Effect.gen(this, function*() {
        const fiber = yield* Effect.forkDaemon(worker)
        fibers.add(fiber)
        this.handlerFibers.add(fiber)
        const exit = yield* Fiber.await(fiber)
        fibers.delete(fiber)
        this.handlerFibers.delete(fiber)
        if (Exit.isSuccess(exit)) return
        // A local close ends this worker only: the others may still be finishing their packets.
        const failure = Cause.failureOption(exit.cause)
        if (Option.isSome(failure) && failure.value._tag === "ChannelClosed" && failure.value.reason === "LocalClose") return
        const open = this.closeReason === undefined && (this.current === "Active" || this.current === "Paused")
        if (Cause.isInterruptedOnly(exit.cause) && !stopping && open) return yield* runWorker
        return yield* Effect.failCause(exit.cause)
      })
      return Effect.all(Array.from({ length: workers }, () => runWorker), { concurrency: "unbounded", discard: true }).pipe(
        Effect.catchAll((error) =>
          error._tag === "ChannelClosed" && error.reason === "LocalClose" ? Effect.void : Effect.fail(error)
        ),
        Effect.catchAllCause((cause) => Cause.isInterruptedOnly(cause) ? Effect.void : Effect.failCause(cause)),
        Effect.ensuring(Effect.suspend(() => {
          stopping = true
          for (const fiber of fibers) this.handlerFibers.delete(fiber)
          // Bounded: a worker may be the fiber interrupting serve (a handler closing the serve's scope).
          return interruptBounded(fibers)
        }))
      )
    })
  }

  // ----- completing --------------------------------------------------------------------------

  private release(packet: PacketHandle): void {
    if (packet.views !== undefined) this.views.revoke(packet.views)
    if (!this.live.delete(packet)) return
    this.outstanding--
    this.endpoint.counters.outstandingPackets = this.outstanding
    this.outstandingChanged.notifyAll()
    // The ring is looked at again when the reader stopped at the quota (or a pause), and when the last packet out
    // comes back (the ring is then looked at once more, in a microtask): once per batch, not per packet.
    if (this.readerBlocked || this.outstanding === 0) {
      this.readerBlocked = false
      this.scheduleDrain()
    }
  }

  completePacket(
    packet: PacketHandle,
    payload: Uint8Array,
    disposition: "completed" | "autoCompleted"
  ): Effect.Effect<void, PacketAlreadyCompleted | ChannelClosed | PacketTooLarge> {
    return Effect.suspend((): Effect.Effect<void, PacketAlreadyCompleted | ChannelClosed | PacketTooLarge> => {
      if (packet.state !== "pending") {
        return Effect.fail(new PacketAlreadyCompleted({ transactionId: packet.packet.transactionId }))
      }
      if (payload.length > this.config.maxPacketSize) {
        return Effect.fail(new PacketTooLarge({ size: payload.length, max: this.config.maxPacketSize }))
      }
      return this.completeNow(packet, payload, disposition) ? this.waitWritten(packet) : Effect.void
    })
  }

  /**
   * Completes a pending packet synchronously: its completion (a copy of `payload`) goes into the outbox
   * and is written at once when the ring has room. Returns true when it still waits for room.
   */
  private completeNow(packet: PacketHandle, payload: Uint8Array, disposition: "completed" | "autoCompleted"): boolean {
    packet.state = disposition
    if (disposition === "autoCompleted") this.counters.autoCompleted++
    if (!packet.completionRequested) {
      this.release(packet)
      return false
    }
    if (!this.writable) {
      this.dropCompletion(packet, `the open period ended (${this.closeReason ?? "rings released"})`)
      return false
    }
    const completion: P.CompletionPacket = {
      _tag: "Completion",
      transactionId: packet.packet.transactionId,
      payload: payload.length === 0 ? EMPTY : payload.slice()
    }
    this.outbox.push({ packet, completion })
    this.flushOutbox()
    if (!this.live.has(packet)) return false
    // A drain waiting for packets in consumers' hands: this one has left them.
    this.outstandingChanged.notifyAll()
    return true
  }

  /**
   * Waits until a queued completion is in the ring — interruptibly even inside a completion guard: an
   * interruption leaves it queued, not lost, and no close may wait on a peer that stopped reading.
   */
  private waitWritten(packet: PacketHandle): Effect.Effect<void> {
    const wait: Effect.Effect<void> = Effect.suspend(() => {
      const seen = this.outboxChanged.current
      if (!this.live.has(packet)) return Effect.void
      return Effect.zipRight(this.outboxChanged.waitAfter(seen), wait)
    })
    return Effect.interruptible(wait)
  }

  /**
   * A handler failed (or returned a result that cannot be sent): the packet is completed with
   * `failureCompletion`, and because the requester cannot tell that from a reply, the failure is
   * reported on `events` and logged at warning level.
   */
  private handlerFailed(packet: PacketHandle, cause: Cause.Cause<unknown>): Effect.Effect<void> {
    return Effect.suspend(() => {
      this.counters.handlerFailures++
      const failure = Cause.squash(cause)
      const reason = failure instanceof Error ? failure.message : String(failure)
      const error = new HandlerFailed({
        reason,
        transactionId: packet.packet.completionRequested ? packet.packet.transactionId : undefined,
        failureCompleted: packet.state === "pending"
      })
      this.report({ _tag: "HandlerFailed", error })
      return Effect.zipRight(
        this.autoComplete(packet),
        Effect.logWarning(`vmbus: ${error.message}`, cause).pipe(Effect.annotateLogs(this.spanAttributes))
      )
    })
  }

  autoComplete(packet: PacketHandle): Effect.Effect<void> {
    return Effect.suspend(() => {
      if (packet.state !== "pending") return Effect.void
      return this.completePacket(packet, this.config.failureCompletion, "autoCompleted").pipe(Effect.ignore)
    })
  }

  failPacket(packet: PacketHandle, reason: string): Effect.Effect<void, PacketAlreadyCompleted> {
    return Effect.suspend(() => {
      if (packet.state !== "pending") {
        return Effect.fail(new PacketAlreadyCompleted({ transactionId: packet.packet.transactionId }))
      }
      packet.state = "failed"
      const error = new MalformedPacket({ reason: `packet failed by the receiver: ${reason}` })
      this.report({ _tag: "PacketFailed", error })
      // C3: the incoming queue stops; the channel must be closed and reopened.
      this.delivering = false
      if (this.terminal === undefined) this.terminal = error
      this.release(packet)
      this.packetWaiters.wakeAll()
      return Effect.void
    })
  }

  // ----- quota, pause, start -----------------------------------------------------------------

  readonly setTransactionQuota = (quota: number): Effect.Effect<void, InvalidParameter> =>
    Effect.suspend(() => {
      if (!Number.isSafeInteger(quota) || quota <= 0) {
        return Effect.fail(new InvalidParameter({ field: "transactionQuota", reason: "must be a positive integer", value: quota }))
      }
      this.quota = quota
      // C12: raising the quota resumes delivery at once.
      this.wake.ring()
      return Effect.void
    })

  /**
   * Waits until no delivered packet is in a consumer's hands — closing: and no completion is still
   * queued — up to the drain timeout; then interrupts the handlers (waiting a short grace at most) and
   * forces the rest. Packets held by the fiber running the pause or close are not waited for: it cannot
   * complete them while it waits (a handler closing its own channel).
   */
  private drainOutstanding(closing: boolean): Effect.Effect<void> {
    return Effect.suspend(() => {
      const self = actingFiber()
      // Closing: packets read but not handed out are completed with the failure payload. Pausing keeps
      // them for after start; only packets in a consumer's hands are waited for.
      if (closing) {
        for (const packet of this.queue.splice(0)) this.autoCompleteNow(packet)
        this.flushOutbox()
      }
      const busy = (): boolean => {
        if (closing && this.outbox.length > 0) return true
        for (const packet of this.live) {
          if (packet.state === "pending" && packet.holder !== undefined && packet.holder !== self && !this.closeJoiners.has(packet.holder)) return true
        }
        return false
      }
      const waitAll: Effect.Effect<void> = Effect.suspend(() => {
        const seen = this.outstandingChanged.current
        if (!busy()) return Effect.void
        return Effect.zipRight(this.outstandingChanged.waitAfter(seen), waitAll)
      })
      // Interruptible: the close runs as a finalizer, and the timeout must be able to stop the wait.
      return Effect.timeout(Effect.interruptible(waitAll), Duration.millis(this.config.drainTimeoutMillis)).pipe(
        Effect.matchEffect({
          // C15: interrupt hung handlers (their packets auto-complete), then force the rest.
          onFailure: () =>
            Effect.zipRight(
              interruptBounded(this.handlerFibers),
              Effect.sync(() => this.forceCompleteAll(closing ? undefined : self))
            ),
          // Closing: what the closing fiber itself holds is completed now.
          onSuccess: () => (closing ? Effect.sync(() => this.forceCompleteAll(undefined)) : Effect.void)
        })
      )
    })
  }

  /** Completes a pending packet with the failure payload at once; the completion waits in the outbox. */
  private autoCompleteNow(packet: PacketHandle): void {
    if (packet.state !== "pending") return
    packet.state = "autoCompleted"
    this.counters.autoCompleted++
    if (!packet.completionRequested) {
      this.release(packet)
    } else if (!this.writable) {
      this.dropCompletion(packet, `the open period ended (${this.closeReason ?? "rings released"})`)
    } else {
      this.outbox.push({
        packet,
        completion: { _tag: "Completion", transactionId: packet.packet.transactionId, payload: this.config.failureCompletion }
      })
    }
  }

  /**
   * Packets still pending after the drain timeout (held by code outside `serve`, or by the closing
   * fiber itself): completed now with the failure payload, so neither the quota nor the peer stays
   * blocked. A later `complete` by their holder gets `PacketAlreadyCompleted`. A pause spares what its
   * own fiber holds (`except`): that consumer goes on after the pause returns.
   */
  private forceCompleteAll(except: Fiber.RuntimeFiber<unknown, unknown> | undefined): void {
    const queued = new Set(this.queue)
    for (const packet of Array.from(this.live)) {
      if (packet.state !== "pending" || queued.has(packet)) continue
      if (except !== undefined && packet.holder === except) continue
      this.autoCompleteNow(packet)
    }
    this.flushOutbox()
  }

  readonly pause: Effect.Effect<void, InvalidState> = Effect.suspend(() => {
    if (this.current !== "Active") {
      return Effect.fail(new InvalidState({ operation: "pause", expected: "Active", actual: this.current }))
    }
    this.delivering = false
    return this.setState("Paused").pipe(
      Effect.zipRight(Effect.sync(() => this.spaceChanged.notifyAll())),
      Effect.zipRight(this.runHook("onSuspend", () => this.hooks.onSuspend)),
      Effect.zipRight(this.drainOutstanding(false)),
      Effect.zipRight(Effect.sync(() => this.failPending("LocalClose")))
    )
  })

  readonly start: Effect.Effect<void, InvalidState> = Effect.suspend(() => {
    if (this.current !== "Paused") {
      return Effect.fail(new InvalidState({ operation: "start", expected: "Paused", actual: this.current }))
    }
    return this.setState("Active").pipe(
      Effect.zipRight(this.runHook("onStarted", () => this.hooks.onStarted?.({ send: this.send }))),
      Effect.zipRight(Effect.sync(() => {
        // C3: after `fail` the queue stays stopped for every consumer until the channel is reopened.
        this.delivering = this.terminal === undefined
        this.packetWaiters.wakeAll()
        this.wake.ring()
      })),
      Effect.zipRight(this.runHook("onPostStarted", () => this.hooks.onPostStarted?.(this)))
    )
  })

  /**
   * Pause: the waiting requests fail; their ids stay reserved and their buffers pinned, because the
   * peer may still hold the packets — a late completion frees them silently.
   */
  private failPending(reason: CloseReason): void {
    this.transactions.abandonAll(reason)
  }

  // ----- external data, GPADLs, transfer page sets -------------------------------------------

  /** Registered sets; `view` dies at unregistration (or with the open period), ending every packet view of it. */
  private readonly transferPageSets = new Map<number, { readonly source: ExternalSource; readonly view: View }>()

  readonly registerTransferPageSet = (id: number, buffer: ExternalSource): Effect.Effect<void, InvalidParameter, Scope.Scope> =>
    Effect.acquireRelease(
      Effect.suspend(() => {
        if (!Number.isInteger(id) || id < 0 || id > 0xffff) {
          return Effect.fail(new InvalidParameter({ field: "transferPageSetId", reason: "must be a u16", value: id }))
        }
        if (this.transferPageSets.has(id)) {
          return Effect.fail(new InvalidParameter({ field: "transferPageSetId", reason: "already registered", value: id }))
        }
        // A guest buffer backing the set stays allocated while registered.
        const memory = this.endpoint.memory
        if (isGuestBuffer(buffer) && memory !== undefined && !memory.isLive(buffer)) {
          return Effect.fail(released("buffer", buffer))
        }
        const registration = { source: buffer, view: this.views.make() }
        this.transferPageSets.set(id, registration)
        return Effect.succeed({ registration, unpin: isGuestBuffer(buffer) && memory !== undefined ? memory.pin(buffer) : undefined })
      }),
      ({ registration, unpin }) =>
        Effect.sync(() => {
          if (this.transferPageSets.get(id) === registration) this.transferPageSets.delete(id)
          // Views first: no packet reads the buffer once its pin may be gone.
          this.views.revoke(registration.view)
          unpin?.()
        })
    ).pipe(Effect.asVoid)

  readonly createGpadl: OpenedChannel["createGpadl"] = (range, options) =>
    Effect.suspend((): ReturnType<OpenedChannel["createGpadl"]> => {
      const create = this.endpoint.createGpadl
      if (create === undefined) {
        return Effect.fail(new Unsupported({ capability: "createGpadl", reason: `not available on a ${this.role} endpoint of this transport` }))
      }
      return create(range, options)
    })

  readonly mapGpadl: OpenedChannel["mapGpadl"] = (handle, options) =>
    Effect.suspend((): ReturnType<OpenedChannel["mapGpadl"]> => {
      const map = this.endpoint.mapGpadl
      if (map === undefined) {
        return Effect.fail(new Unsupported({ capability: "mapGpadl", reason: `not available on a ${this.role} endpoint of this transport` }))
      }
      // A mapping belongs to this open period: after it, the relid may already name the next one's GPADLs.
      if (this.closeReason !== undefined) return Effect.fail(new ChannelClosed({ reason: this.closeReason }))
      return map(handle, options)
    })

  /** Why the external data of a just-read packet is unacceptable, or undefined. */
  private checkExternal(packet: PacketNs.Packet): MalformedPacket | undefined {
    if (packet._tag === "GpaDirect") {
      const problem = P.validateGpaRanges(packet.ranges)
      if (problem !== undefined) return problem
      if (packet.ranges.length > this.config.maxExternalPages) {
        return new MalformedPacket({ reason: "too many GPA ranges", field: "range_cnt", value: packet.ranges.length })
      }
      let pages = 0
      const memory = this.endpoint.memory
      for (let i = 0; i < packet.ranges.length; i++) {
        const range = packet.ranges[i]!
        pages += range.pfns.length
        if (memory === undefined) continue
        for (const pfn of range.pfns) {
          if (!memory.isAllocated(pfn)) {
            return new MalformedPacket({ reason: "GPA range names a page outside guest memory", field: `gpa_range[${i}]`, value: pfn })
          }
        }
      }
      if (pages > this.config.maxExternalPages) {
        return new MalformedPacket({ reason: "external data larger than maxExternalPages", field: "pfn_array", value: pages })
      }
      return undefined
    }
    if (packet._tag === "TransferPages") {
      const set = this.transferPageSets.get(packet.transferPageSetId)
      if (set === undefined) {
        return new MalformedPacket({ reason: "unknown transfer page set", field: "xfer_pageset_id", value: packet.transferPageSetId })
      }
      const size = set.source.byteLength
      for (let i = 0; i < packet.ranges.length; i++) {
        const range = packet.ranges[i]!
        if (range.byteOffset + range.byteCount > size) {
          return new MalformedPacket({ reason: "transfer range outside the transfer page set", field: `ranges[${i}]`, value: range.byteOffset })
        }
      }
    }
    return undefined
  }

  /** Views of a packet's external data, usable only while the packet is pending. */
  externalData(handle: PacketHandle): Effect.Effect<ReadonlyArray<IncomingPacketNs.ExternalBuffer>, ExternalDataUnavailable> {
    return Effect.suspend(() => {
      if (handle.state !== "pending") {
        return Effect.fail(new ExternalDataUnavailable({ reason: "the packet is completed" }))
      }
      if (this.closeReason !== undefined) {
        return Effect.fail(new ExternalDataUnavailable({ reason: "the channel's open period ended" }))
      }
      const packet = handle.packet
      if (packet._tag !== "GpaDirect" && packet._tag !== "TransferPages") {
        return Effect.fail(new ExternalDataUnavailable({ reason: "the packet carries no external data" }))
      }
      // One view per packet, owned by the channel: checked at every access, revoked at release or when
      // the open period ends (the peer may free the pages then).
      const view = handle.views ??= this.views.make()
      const gone = () =>
        Either.left(
          new ExternalDataUnavailable({
            reason: handle.state !== "pending" ? "the packet is completed" : "the channel's open period ended"
          })
        )
      const outside = (offset: number, length: number, size: number) =>
        !Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > size
      if (packet._tag === "GpaDirect") {
        const memory = this.endpoint.memory
        if (memory === undefined) return Effect.fail(new ExternalDataUnavailable({ reason: "the transport gives no access to guest memory" }))
        return Effect.succeed(packet.ranges.map((range): IncomingPacketNs.ExternalBuffer => ({
          byteLength: range.byteCount,
          read: (offset = 0, length = range.byteCount - offset) => {
            if (handle.state !== "pending" || !view.live) return gone()
            if (outside(offset, length, range.byteCount)) return Either.left(new InvalidMemoryRange({ reason: "outside the range", offset, length }))
            return memory.readSync(range.pfns, range.byteOffset + offset, length)
          },
          write: (offset, data) => {
            if (handle.state !== "pending" || !view.live) return gone()
            if (outside(offset, data.length, range.byteCount)) {
              return Either.left(new InvalidMemoryRange({ reason: "outside the range", offset, length: data.length }))
            }
            return memory.writeSync(range.pfns, range.byteOffset + offset, data)
          }
        })))
      }
      {
        const registration = this.transferPageSets.get(packet.transferPageSetId)
        if (registration === undefined || !registration.view.live) {
          return Effect.fail(new ExternalDataUnavailable({ reason: "transfer page set no longer registered" }))
        }
        const set = registration.source
        const unregistered = () => Either.left(new ExternalDataUnavailable({ reason: "transfer page set no longer registered" }))
        const readSet = (offset: number, length: number): Either.Either<Uint8Array, InvalidMemoryRange | GpadlUnavailable> =>
          isGuestBuffer(set) ? Either.right(set.bytes.slice(offset, offset + length)) : set.read(offset, length)
        const writeSet = (
          offset: number,
          data: Uint8Array
        ): Either.Either<void, InvalidMemoryRange | GpadlUnavailable | GpadlWriteMapOfReadOnly> => {
          if (isGuestBuffer(set)) {
            set.bytes.set(data, offset)
            return Either.right(undefined)
          }
          return set.write(offset, data)
        }
        return Effect.succeed(packet.ranges.map((range): IncomingPacketNs.ExternalBuffer => ({
          byteLength: range.byteCount,
          read: (offset = 0, length = range.byteCount - offset) => {
            if (handle.state !== "pending" || !view.live) return gone()
            if (!registration.view.live) return unregistered()
            if (outside(offset, length, range.byteCount)) return Either.left(new InvalidMemoryRange({ reason: "outside the range", offset, length }))
            return readSet(range.byteOffset + offset, length)
          },
          write: (offset, data) => {
            if (handle.state !== "pending" || !view.live) return gone()
            if (!registration.view.live) return unregistered()
            if (outside(offset, data.length, range.byteCount)) {
              return Either.left(new InvalidMemoryRange({ reason: "outside the range", offset, length: data.length }))
            }
            return writeSet(range.byteOffset + offset, data)
          }
        })))
      }
    })
  }

  readonly stats: Effect.Effect<ChannelStats> = Effect.sync(() => ({
    ...this.counters,
    requestsOutstanding: this.transactions.size,
    packetsOutstanding: this.outstanding
  }))

  // ----- open and close ----------------------------------------------------------------------

  /** Opened → Started → receive loop → PostStarted. */
  run(scope: Scope.CloseableScope): Effect.Effect<void, unknown> {
    return Effect.gen(this, function*() {
      this.runtime = yield* Effect.runtime<never>()
      this.openScope = scope
      this.endpoint.onPeerClose((reason) => {
        this.endOpenPeriod(reason, new ChannelClosed({ reason }))
        // KMCL: a peer close or rescind runs Suspend and Closed without waiting for the local disable.
        this.closeInBackground()
      })
      this.endpoint.onSignal(this.onPeerSignal)
      if (this.hooks.onOpened) yield* this.hooks.onOpened({ childRelid: this.childRelid, identity: this.identity })
      if (this.hooks.onStarted) yield* this.hooks.onStarted({ send: this.send })
      // A peer close or rescind while the hooks ran: the open fails, it does not return a closed channel.
      if (this.closeReason !== undefined) return yield* new ChannelClosed({ reason: this.closeReason })
      yield* this.setState("Active")
      this.reachedActive = true
      this.delivering = true
      // A defect in the loop (a bug, never peer data) must not leave the channel silently deaf.
      yield* Effect.forkIn(
        this.receiveLoop.pipe(
          Effect.catchAllDefect((defect) =>
            Effect.zipRight(
              Effect.logError("vmbus: receive loop died", defect),
              Effect.sync(() =>
                this.failCorrupt(new RingCorrupt({ reason: `receive loop defect: ${String(defect)}`, field: "internal" }))
              )
            )
          )
        ),
        scope
      )
      if (this.config.metricsFlushMillis > 0) yield* Effect.forkIn(this.metrics.timer(this.config.metricsFlushMillis), scope)
      if (this.hooks.onPostStarted) yield* this.hooks.onPostStarted(this)
      this.openFinished = true
      // Corrupted while onPostStarted ran: the channel-level close ran then, the rest runs now.
      if (this.closeReason === "Corrupt") this.closeAllInBackground()
    })
  }

  /** The open period's scope (endpoint, rings, the close): closed by the channel itself on corruption. */
  private openScope: Scope.CloseableScope | undefined = undefined
  private openFinished = false
  private selfCloseStarted = false
  private readonly selfCloseDone = Deferred.unsafeMake<void>(FiberId.none)

  /**
   * A corrupt ring runs the whole close at once — channel close, then CLOSECHANNEL (client) or rescind
   * (server) and GPADL teardown — so the healthy peer sees `ChannelClosed` instead of waiting for this
   * side's owner to close its scope. Before the open has returned, only the channel-level close runs.
   */
  private closeAllInBackground(): void {
    if (this.runtime === undefined || this.openScope === undefined || !this.openFinished) {
      this.closeInBackground()
      return
    }
    if (this.selfCloseStarted) return
    this.selfCloseStarted = true
    const scope = this.openScope
    Runtime.runFork(this.runtime)(Effect.ensuring(Scope.close(scope, Exit.void), Deferred.done(this.selfCloseDone, Exit.void)))
  }

  /** The owner's scope ends only after a close the channel started itself has finished. */
  readonly awaitSelfClose: Effect.Effect<void> = Effect.suspend(() =>
    this.selfCloseStarted ? this.joinClose(Deferred.await(this.selfCloseDone)) : Effect.void
  )

  /** The runtime the channel was opened in (its clock, logger, services), for closes started by the peer. */
  private runtime: Runtime.Runtime<never> | undefined = undefined

  private closeInBackground(): void {
    if (this.runtime !== undefined) Runtime.runFork(this.runtime)(this.close())
  }

  private closeStarted = false
  private readonly closeDone = Deferred.unsafeMake<void>(FiberId.none)
  private reachedActive = false

  /**
   * Suspend → drain → fail pending → Closed. Never fails. Idempotent: a second caller (the scope's
   * release after a peer close) waits for the first.
   */
  close(): Effect.Effect<void> {
    return Effect.suspend(() => {
      if (this.closeStarted) return this.joinClose(Deferred.await(this.closeDone))
      this.closeStarted = true
      return Effect.ensuring(this.closeOnce(), Deferred.done(this.closeDone, Exit.void))
    })
  }

  /**
   * Fibers waiting for a close already under way (e.g. a handler closing its channel while a peer
   * close runs): the drain does not wait for what they hold, since they wait for the drain.
   */
  private readonly closeJoiners = new Set<Fiber.RuntimeFiber<unknown, unknown>>()

  private joinClose(wait: Effect.Effect<void>): Effect.Effect<void> {
    return Effect.suspend(() => {
      const joiner = actingFiber()
      if (joiner === undefined || this.closeJoiners.has(joiner)) return wait
      this.closeJoiners.add(joiner)
      this.outstandingChanged.notifyAll()
      return Effect.ensuring(wait, Effect.sync(() => this.closeJoiners.delete(joiner)))
    })
  }

  private closeOnce(): Effect.Effect<void> {
    return Effect.gen(this, function*() {
      if (this.current === "Closed") return
      const wasRunning = this.current === "Active"
      this.delivering = false
      yield* this.setState("Closing")
      this.packetWaiters.wakeAll()
      this.spaceChanged.notifyAll()
      if (wasRunning) yield* this.runHook("onSuspend", () => this.hooks.onSuspend)
      yield* this.drainOutstanding(true)
      this.endOpenPeriod("LocalClose", new ChannelClosed({ reason: "LocalClose" }))
      yield* this.metrics.flush
      yield* this.setState("Closed")
      if (this.reachedActive) yield* this.runHook("onClosed", () => this.hooks.onClosed?.(this.closeReason ?? "LocalClose"))
    }).pipe(Effect.withSpan("vmbus.channel.close", { attributes: this.spanAttributes }))
  }
}

// ---------------------------------------------------------------------------------------------
// Constructors
// ---------------------------------------------------------------------------------------------

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

const ringFits = (config: ChannelConfig, pages: number, field: string): InvalidParameter | undefined => {
  const dataSize = (pages - 1) * L.PAGE_SIZE
  const largest = L.DESCRIPTOR_SIZE + L.align8Safe(config.maxPacketSize) + L.TRAILER_SIZE
  if (largest < dataSize) return undefined
  return new InvalidParameter({
    field,
    reason: `a ring of ${pages} pages cannot hold a packet of maxPacketSize ${config.maxPacketSize} (needs 16 + roundUp8(size) + 8 < data size)`,
    value: pages
  })
}

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

export const open = <E = never>(
  input: ChannelConfigInput,
  hooks: Hooks<E> = {}
): Effect.Effect<OpenedChannel, E | OpenError, Scope.Scope | Transport.Transport> =>
  Effect.gen(function*() {
    const config = yield* decodeConfig(input)
    const transport = yield* Transport.Transport
    // A transport that chooses ring sizes itself is checked against the rings it gives (below).
    if (config.role === "client" && transport.capabilities.ringGeometry) {
      const problem = ringFits(config, config.outgoingRingPages, "outgoingRingPages") ??
        ringFits(config, config.incomingRingPages, "incomingRingPages")
      if (problem !== undefined) return yield* problem
    }
    const outer = yield* Effect.scope
    // Everything of this open period lives in its own scope, closed at once if the open fails.
    const scope = yield* Scope.fork(outer, ExecutionStrategy.sequential)
    // The close runs to its end even if the fiber closing the outer scope is interrupted half-way (a
    // raw Scope.close is interruptible, and an abandoned close leaves the channel and its offer open for
    // good): it runs in a fiber of its own that the closer awaits. Added after the fork, so it runs first.
    // The daemon acts for the closer: a handler closing its own channel is not waited for (defect 7).
    yield* Scope.addFinalizerExit(outer, (exit) =>
      Effect.uninterruptible(Effect.suspend(() =>
        Effect.flatMap(
          Effect.forkDaemon(actingFor(actingFiber(), Scope.close(scope, exit))),
          Fiber.await
        )
      )))
    const requestedGeometry = input.role === "client" && ("outgoingRingPages" in input || "incomingRingPages" in input)
    const channel = yield* openIn(config, transport, scope, hooks, requestedGeometry).pipe(
      Scope.extend(scope),
      Effect.onError((cause) => Scope.close(scope, Exit.failCause(cause)))
    )
    // Runs before the open period's scope closes (finalizers run in reverse order).
    yield* Scope.addFinalizer(outer, channel.awaitSelfClose)
    return channel as OpenedChannel
  }).pipe(Effect.withSpan("vmbus.channel.open", {
    attributes: {
      "vmbus.interface_type": input.interfaceType,
      "vmbus.role": input.role,
      ...(input.interfaceInstance === undefined ? {} : { "vmbus.interface_instance": input.interfaceInstance })
    }
  }))

const openIn = <E>(
  config: ChannelConfig,
  transport: Transport.TransportShape,
  scope: Scope.CloseableScope,
  hooks: Hooks<E>,
  requestedGeometry: boolean
): Effect.Effect<ChannelImpl, E | OpenError, Scope.Scope> =>
  Effect.gen(function*() {
    // Capabilities the transport lacks are typed errors up front, never silently ignored (B1, C16).
    if (config.role === "server" && !transport.capabilities.serverRole) {
      return yield* new Unsupported({ capability: "serverRole", reason: `the ${transport.name} transport cannot offer channels` })
    }
    if (config.role === "client" && !transport.capabilities.ringGeometry && requestedGeometry) {
      return yield* new Unsupported({ capability: "ringGeometry", reason: `the ${transport.name} transport chooses ring sizes itself` })
    }
    const timeout = Duration.millis(config.openTimeoutMillis)
    const timedOut = () =>
      new OpenTimeout({
        timeoutMillis: config.openTimeoutMillis,
        interfaceType: config.interfaceType,
        interfaceInstance: config.interfaceInstance,
        role: config.role
      })
    // Added before the endpoint, so it runs after the transport's close (CLOSECHANNEL or rescind, GPADL
    // teardown): only then can the host side no longer reach what ended requests pinned.
    const owner: { channel?: ChannelImpl } = {}
    yield* Effect.addFinalizer(() => Effect.sync(() => owner.channel?.releaseEndedTransactions()))
    const endpoint: Transport.Endpoint = config.role === "client"
      ? yield* transport.open({
        interfaceType: config.interfaceType,
        interfaceInstance: config.interfaceInstance,
        outgoingRingPages: config.outgoingRingPages,
        incomingRingPages: config.incomingRingPages
      }).pipe(Effect.timeoutFail({ duration: timeout, onTimeout: timedOut }))
      : yield* Effect.flatMap(
        transport.offer({ interfaceType: config.interfaceType, interfaceInstance: config.interfaceInstance }),
        (offer) => offer.accept
      ).pipe(Effect.timeoutFail({ duration: timeout, onTimeout: timedOut }))
    if (endpoint.ringsValid?.() === false) return yield* new ChannelClosed({ reason: "PeerClose" })
    yield* Effect.annotateCurrentSpan(spanAttributes(endpoint))
    const incomingDataSize = endpoint.incoming.byteLength - L.CONTROL_PAGE_SIZE
    const maxPacketLength = packetBudget(config)
    const out = Ring.OutgoingRing.attach(endpoint.outgoing)
    if (!(out instanceof Ring.OutgoingRing)) {
      return yield* (out._tag === "RingCorrupt" ? out : Effect.fail(out))
    }
    const incoming = Ring.IncomingRing.attach(endpoint.incoming, { maxPacketLength: Math.min(maxPacketLength, incomingDataSize) })
    if (!(incoming instanceof Ring.IncomingRing)) {
      return yield* (incoming._tag === "RingCorrupt" ? incoming : Effect.fail(incoming))
    }
    if (config.role === "server" || !transport.capabilities.ringGeometry) {
      const problem = ringFits(config, out.dataSize / L.PAGE_SIZE + 1, "maxPacketSize")
      if (problem !== undefined) return yield* problem
    }
    const closed = yield* Deferred.make<CloseReason>()
    const stateRef = yield* SubscriptionRef.make<ChannelState>("Opening")
    const hub = yield* PubSub.sliding<ChannelEvent>(256)
    const lock = yield* Effect.makeSemaphore(1)
    const channel = new ChannelImpl(config, endpoint, hooks as Hooks<unknown>, closed, stateRef, hub, lock, out, incoming)
    owner.channel = channel
    // The close runs before the transport releases the endpoint (finalizers run in reverse order).
    yield* Effect.addFinalizer(() => channel.close())
    yield* (channel.run(scope) as Effect.Effect<void, E>)
    return channel
  })


// What every room of a channel shares: its rings, counters and configuration, the lifecycle state every
// side reads (state, delivering, the terminal error, the close reason), the queue of delivered packets
// with its quota, and the rooms themselves (each reaches the others through the core). The rooms:
// ./outgoing.ts (writes, ring-full waits, the completion outbox), ./incoming.ts (drains, delivery,
// quota, release), ./delivery.ts (take, packets, serve), ./requests.ts (requests and their ids),
// ./externalData.ts (external data, GPADLs), ./lifecycle.ts (open, pause, close); composed by ./channel.ts.
import type * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"
import type * as PubSub from "effect/PubSub"
import * as Runtime from "effect/Runtime"
import * as SubscriptionRef from "effect/SubscriptionRef"
import type * as PacketNs from "../Packet.js"
import type * as Ring from "../Ring.js"
import type * as Transport from "../Transport.js"
import { CallbackFailed, type ChannelClosed, type CloseReason, type MalformedPacket, type RingCorrupt } from "../VmbusError.js"
import type { ChannelConfig, ChannelEvent, ChannelState, OpenedChannel } from "./channelConfig.js"
import { ChannelMetrics, spanAttributes } from "./channelMetrics.js"
import type { Delivery } from "./delivery.js"
import type { ExternalData } from "./externalData.js"
import type { Incoming, PacketHandle } from "./incoming.js"
import type { Lifecycle } from "./lifecycle.js"
import { Doorbell, Notifier, WaitQueue } from "./notifier.js"
import type { Outgoing } from "./outgoing.js"
import type { Requests } from "./requests.js"
import { TransactionTable } from "./transactions.js"
import { Views } from "./views.js"
import { LiveList } from "./liveList.js"

// Metrics and span attributes: ./channelMetrics.ts (flushed every 256 events, on a time bound, and at close)

export type Terminal = ChannelClosed | RingCorrupt | MalformedPacket

/** The channel's counters: plain fields, so counting costs an increment (see ./channelMetrics.ts). */
export class Counters {
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

export const EMPTY = new Uint8Array(0)

/** Every packet kind but completions: what the receive side delivers. */
export type DataPacket = Exclude<PacketNs.Packet, PacketNs.CompletionPacket>

/** The state of one channel that its rooms share. */
export class ChannelCore {
  readonly role: "client" | "server"
  readonly identity: Transport.OfferIdentity
  readonly childRelid: number
  readonly out: Ring.OutgoingRing
  readonly in: Ring.IncomingRing
  readonly counters = new Counters()
  readonly metrics: ChannelMetrics
  readonly spanAttributes: Record<string, unknown>
  readonly tags: ReadonlyArray<readonly [string, string]>
  readonly transactions: TransactionTable
  readonly views: Views

  // lifecycle (written by the lifecycle room, and by `fail`; read by every room)
  current: ChannelState = "Opening"
  delivering = false
  terminal: Terminal | undefined = undefined
  closeReason: CloseReason | undefined = undefined
  /** The runtime the channel was opened in (its clock, logger, services), for closes started by the peer. */
  runtime: Runtime.Runtime<never> | undefined = undefined

  // delivered packets (queued by the incoming room, handed out by delivery, released once completed)
  readonly wake = new Doorbell()
  readonly queue: Array<PacketHandle> = []
  /** Delivered packets not yet released (pending, or completing). */
  readonly live = new LiveList<PacketHandle>()
  readonly packetWaiters = new WaitQueue()
  readonly packetReady = (): boolean =>
    (this.delivering && this.queue.length > 0) || this.terminal !== undefined || this.current === "Closing" ||
    this.current === "Closed"
  outstanding = 0
  readonly outstandingChanged = new Notifier()
  quota: number
  readonly handlerFibers = new Set<Fiber.RuntimeFiber<unknown, unknown>>()

  // the rooms, set once by the channel's constructor
  outgoing!: Outgoing
  incoming!: Incoming
  delivery!: Delivery
  requests!: Requests
  external!: ExternalData
  lifecycle!: Lifecycle
  /** The public face (given to `onPostStarted`). */
  channel!: OpenedChannel

  constructor(
    readonly config: ChannelConfig,
    readonly endpoint: Transport.Endpoint,
    readonly closedDeferred: Deferred.Deferred<CloseReason>,
    readonly stateRef: SubscriptionRef.SubscriptionRef<ChannelState>,
    readonly eventHub: PubSub.PubSub<ChannelEvent>,
    out: Ring.OutgoingRing,
    incoming: Ring.IncomingRing
  ) {
    this.role = endpoint.role
    this.identity = endpoint.identity
    this.childRelid = endpoint.childRelid
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

  setState(state: ChannelState): Effect.Effect<void> {
    return Effect.suspend(() => {
      this.current = state
      return SubscriptionRef.set(this.stateRef, state)
    })
  }

  report(event: ChannelEvent): void {
    this.eventHub.unsafeOffer(event)
  }

  /** Runs a synchronous user callback from library code: what it throws is reported, never rethrown. */
  runCallback(name: string, callback: () => void): void {
    try {
      callback()
    } catch (thrown) {
      this.report({ _tag: "CallbackFailed", error: new CallbackFailed({ callback: name, cause: thrown }) })
      if (this.runtime !== undefined) Runtime.runFork(this.runtime)(Effect.logWarning(`vmbus: ${name} threw`, thrown))
    }
  }

  signalPeer(): void {
    this.counters.signalsSent++
    this.endpoint.signal()
  }

  /** The rings may be touched only during the open period, and only while the transport maps them. */
  get writable(): boolean {
    return this.closeReason === undefined && (this.endpoint.ringsValid?.() ?? true)
  }
}

// The KMCL model over a transport endpoint: lifecycle, transactions, exactly-once completion, quota,
// flow control. Ring work is synchronous and batched; Effect wraps whole packets or batches.
// This module composes the channel's rooms over their shared core (./channelCore.ts) and opens it; the
// configuration and public shapes live in ./channelConfig.ts.
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as PubSub from "effect/PubSub"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as SubscriptionRef from "effect/SubscriptionRef"
import * as Ring from "../Ring.js"
import * as Transport from "../Transport.js"
import {
  ChannelClosed,
  type CloseReason,
  InvalidParameter,
  OpenTimeout,
  Unsupported
} from "../VmbusError.js"
import { spanAttributes } from "./channelMetrics.js"
import * as L from "./layout.js"
import { actingFiber, actingFor } from "./bounded.js"
import {
  type ChannelConfig,
  type ChannelConfigInput,
  type ChannelEvent,
  type ChannelState,
  type ChannelStats,
  decodeConfig,
  type Hooks,
  type OpenedChannel,
  type OpenError,
  packetBudget
} from "./channelConfig.js"
import { ChannelCore } from "./channelCore.js"
import { Delivery } from "./delivery.js"
import { ExternalData } from "./externalData.js"
import { Incoming } from "./incoming.js"
import { Lifecycle } from "./lifecycle.js"
import { Outgoing } from "./outgoing.js"
import { Requests } from "./requests.js"

export * from "./channelConfig.js"

/**
 * An open channel: its rooms over one shared core. Every public member is the room's own (bound once,
 * here), so calling through the channel costs nothing extra.
 */
export class ChannelImpl implements OpenedChannel {
  readonly role: "client" | "server"
  readonly identity: Transport.OfferIdentity
  readonly childRelid: number
  private readonly core: ChannelCore
  private readonly lifecycle: Lifecycle

  readonly send: OpenedChannel["send"]
  readonly sendBatch: OpenedChannel["sendBatch"]
  readonly sendPacket: OpenedChannel["sendPacket"]
  readonly request: OpenedChannel["request"]
  readonly take: OpenedChannel["take"]
  readonly serve: OpenedChannel["serve"]
  readonly serveScoped: OpenedChannel["serveScoped"]
  readonly pause: OpenedChannel["pause"]
  readonly start: OpenedChannel["start"]
  readonly setTransactionQuota: OpenedChannel["setTransactionQuota"]
  readonly createGpadl: OpenedChannel["createGpadl"]
  readonly mapGpadl: OpenedChannel["mapGpadl"]
  readonly registerTransferPageSet: OpenedChannel["registerTransferPageSet"]
  /** The owner's scope ends only after a close the channel started itself has finished. */
  readonly awaitSelfClose: Effect.Effect<void>
  /** Runs the owner's close on behalf of `closer` (see Lifecycle.closingFor). */
  readonly closingFor: <A>(closer: Fiber.RuntimeFiber<unknown, unknown>, close: Effect.Effect<A>) => Effect.Effect<A>

  constructor(
    readonly config: ChannelConfig,
    endpoint: Transport.Endpoint,
    hooks: Hooks<unknown>,
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
    const core = new ChannelCore(config, endpoint, closedDeferred, stateRef, eventHub, out, incoming)
    this.core = core
    core.channel = this
    core.outgoing = new Outgoing(core, writerLock)
    core.incoming = new Incoming(core)
    core.delivery = new Delivery(core)
    core.requests = new Requests(core)
    core.external = new ExternalData(core)
    core.lifecycle = this.lifecycle = new Lifecycle(core, hooks)
    this.send = core.outgoing.send
    this.sendBatch = core.outgoing.sendBatch
    this.sendPacket = core.outgoing.sendPacket
    this.request = core.requests.request
    this.take = core.delivery.take
    this.serve = core.delivery.serve
    this.serveScoped = core.delivery.serveScoped
    this.pause = core.lifecycle.pause
    this.start = core.lifecycle.start
    this.setTransactionQuota = core.incoming.setTransactionQuota
    this.createGpadl = core.external.createGpadl
    this.mapGpadl = core.external.mapGpadl
    this.registerTransferPageSet = core.external.registerTransferPageSet
    this.awaitSelfClose = core.lifecycle.awaitSelfClose
    this.closingFor = core.lifecycle.closingFor
  }

  readonly state: Effect.Effect<ChannelState> = Effect.sync(() => this.core.current)

  get stateChanges(): Stream.Stream<ChannelState> {
    return this.core.stateRef.changes
  }

  readonly closed: Effect.Effect<CloseReason> = Effect.suspend(() => Deferred.await(this.core.closedDeferred))

  get events(): Stream.Stream<ChannelEvent> {
    return Stream.unwrapScoped(Effect.map(PubSub.subscribe(this.core.eventHub), (queue) => Stream.fromQueue(queue)))
  }

  get packets(): OpenedChannel["packets"] {
    return this.core.delivery.packets
  }

  get packetsOneByOne(): OpenedChannel["packetsOneByOne"] {
    return this.core.delivery.packetsOneByOne
  }

  readonly stats: Effect.Effect<ChannelStats> = Effect.sync(() => ({
    ...this.core.counters,
    requestsOutstanding: this.core.transactions.size,
    packetsOutstanding: this.core.outstanding
  }))

  /** Opened → Started → receive loop → PostStarted. */
  run(scope: Scope.CloseableScope): Effect.Effect<void, unknown> {
    return this.lifecycle.run(scope)
  }

  /** Suspend → drain → fail pending → Closed. Never fails; idempotent. */
  close(): Effect.Effect<void> {
    return this.lifecycle.close()
  }

  /**
   * The host side can no longer reach this endpoint's guest memory (the transport closed it): what
   * requests of the ended open period pinned is released now.
   */
  releaseEndedTransactions(): void {
    this.lifecycle.releaseEndedTransactions()
  }
}

// ---------------------------------------------------------------------------------------------
// Constructors
// ---------------------------------------------------------------------------------------------

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
    // A close the channel started itself (corruption) is joined here too, in the same uninterruptible
    // wait: `Scope.close` of the scope it is closing returns at once, and a closer interrupted in a wait
    // of its own would skip this finalizer and return with the offer or endpoint still open (F10).
    const opened: { channel?: ChannelImpl } = {}
    // While it runs, the closer is known to the channel as one: a serve that ends meanwhile does not
    // interrupt a handler closing its own channel (it goes on once its close returns).
    yield* Scope.addFinalizerExit(outer, (exit) =>
      Effect.uninterruptible(Effect.suspend(() => {
        const closer = actingFiber()
        const run = Effect.flatMap(
          Effect.forkDaemon(actingFor(
            closer,
            Effect.zipRight(Scope.close(scope, exit), Effect.suspend(() => opened.channel?.awaitSelfClose ?? Effect.void))
          )),
          Fiber.await
        )
        return closer === undefined || opened.channel === undefined ? run : opened.channel.closingFor(closer, run)
      })))
    const requestedGeometry = input.role === "client" && ("outgoingRingPages" in input || "incomingRingPages" in input)
    const channel = yield* openIn(config, transport, scope, hooks, requestedGeometry).pipe(
      Scope.extend(scope),
      Effect.onError((cause) => Scope.close(scope, Exit.failCause(cause)))
    )
    opened.channel = channel
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


// The incoming side of a channel: the peer's signal, the receive loop and its drains of the incoming ring
// (completions settle requests; data packets are delivered within the transaction quota), the queue of
// delivered packets and its hand-outs, and the release of a packet once it is done (freeing its quota slot).
import * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import type * as IncomingPacketNs from "../IncomingPacket.js"
import { TypeId as IncomingPacketTypeId } from "../IncomingPacket.js"
import type * as Ring from "../Ring.js"
import type * as Transport from "../Transport.js"
import {
  type ExternalDataUnavailable,
  InvalidParameter,
  MalformedPacket,
  PacketAlreadyCompleted,
  RingCorrupt
} from "../VmbusError.js"
import { currentFiber } from "./bounded.js"
import type { LiveLinks } from "./liveList.js"
import type { ChannelConfig } from "./channelConfig.js"
import { type ChannelCore, type Counters, type DataPacket, EMPTY } from "./channelCore.js"
import * as P from "./packet.js"
import type { View } from "./views.js"

/**
 * One plain object per delivered packet: its methods live on the prototype and its Effects are built
 * only when asked for, so a packet nobody inspects costs its fields alone.
 */
export class PacketHandle implements IncomingPacketNs.IncomingPacket {
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
  // links of the channel's list of live packets (./liveList.ts)
  livePrev: LiveLinks | undefined = undefined
  liveNext: LiveLinks | undefined = undefined
  isLive = false

  constructor(
    readonly core: ChannelCore,
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
    return this.core.outgoing.completePacket(this, payload ?? EMPTY, "completed")
  }

  fail(reason: string) {
    return this.core.incoming.failPacket(this, reason)
  }

  get disposition(): Effect.Effect<IncomingPacketNs.Disposition> {
    return Effect.sync(() => this.state)
  }

  get externalData(): Effect.Effect<ReadonlyArray<IncomingPacketNs.ExternalBuffer>, ExternalDataUnavailable> {
    return Effect.suspend(() => this.core.external.externalData(this))
  }
}
Object.defineProperty(PacketHandle.prototype, IncomingPacketTypeId, { value: IncomingPacketTypeId })

/** Drains, delivery, the packet queue and the quota of one channel. */
export class Incoming {
  /** Packets whose external data failed validation, waiting to be completed with failure. */
  private readonly rejected: Array<PacketHandle> = []
  private readonly config: ChannelConfig
  private readonly endpoint: Transport.Endpoint
  private readonly counters: Counters
  private readonly in: Ring.IncomingRing

  constructor(private readonly core: ChannelCore) {
    this.config = core.config
    this.endpoint = core.endpoint
    this.counters = core.counters
    this.in = core.in
  }

  // ----- the queue of delivered packets ------------------------------------------------------

  /** `serve`'s claim on the next queued packet: like `handOut`, without waking anyone. */
  claim(holder: Fiber.RuntimeFiber<unknown, unknown> | undefined): PacketHandle | undefined {
    if (!this.core.delivering) return undefined
    const packet = this.core.queue.shift()
    if (packet !== undefined) packet.holder = holder
    return packet
  }

  /** The next queued packet, unless delivery is paused (queued packets then wait for start). */
  handOut(): PacketHandle | undefined {
    // Who holds it: a pause or close run by that fiber cannot wait for it.
    const packet = this.claim(currentFiber())
    // Only a hand-over passes the wake-up on: a waiter woken while delivery is paused must not wake
    // the next one, or the waiters would wake each other forever.
    if (packet !== undefined && this.core.queue.length > 0) this.core.packetWaiters.wakeOne()
    return packet
  }

  // ----- reading the incoming ring -----------------------------------------------------------

  /** Runs on every signal from the peer: new data, or space freed in our outgoing ring. */
  readonly onPeerSignal = (): void => {
    this.counters.signalsReceived++
    if (this.core.outgoing.outbox.length > 0) this.core.outgoing.flushOutbox()
    this.core.outgoing.spaceChanged.notifyAll()
    if (this.core.transactions.size > 0) this.readCompletions()
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
      if (!this.core.writable) return
      this.in.mask()
      const status = this.drain()
      if (status === "stop") return
      if (status !== "idle" || this.rejected.length > 0 || this.core.metrics.due()) break
      this.in.discardCopy()
      if (this.endpoint.polled === true) return
      const more = this.in.unmask()
      if (typeof more !== "boolean") {
        this.core.lifecycle.failCorrupt(more)
        return
      }
      if (!more) return
    }
    this.core.wake.ring()
  }

  /**
   * Reads the completions at the head of the incoming ring here, in the signal itself: a request is
   * resumed without waiting for the receive loop's fiber (a round trip costs two hops, not four). Stops
   * at the first data packet (delivery stays the loop's, in order) and leaves anything malformed to the
   * loop, which reports it. Not while a drain runs: a transport may signal synchronously from inside one.
   */
  private readCompletions(): void {
    if (this.draining || !this.core.writable) return
    this.draining = true
    try {
      let read = false
      for (let budget = this.config.readBatchLimit; budget > 0; budget--) {
        const head = this.in.peek()
        if (head === undefined || head._tag !== "Completion") break
        this.in.read()
        read = true
        this.core.requests.handleCompletion(head)
        if (this.core.closeReason !== undefined) return
      }
      if (read && this.in.commit()) this.core.signalPeer()
    } finally {
      this.draining = false
    }
  }

  private deliver(packet: DataPacket): void {
    this.counters.packetsReceived++
    this.counters.bytesReceived += packet.payload.length
    this.core.outstanding++
    this.endpoint.counters.outstandingPackets = this.core.outstanding
    const handle = new PacketHandle(this.core, packet)
    this.core.live.add(handle)
    const invalid = this.core.external.checkExternal(packet)
    if (invalid !== undefined) {
      // Not delivered: completed with the failure payload by the receive loop.
      handle.invalid = invalid
      this.core.report({ _tag: "InvalidExternalData", error: invalid })
      this.rejected.push(handle)
      return
    }
    this.core.queue.push(handle)
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
    if (!this.core.writable) return "stop"
    let budget = this.config.readBatchLimit
    let status: "idle" | "blocked" | "more" = "idle"
    for (;;) {
      if (budget-- === 0) {
        status = "more"
        break
      }
      const canDeliver = this.core.delivering && this.core.outstanding < this.core.quota
      const result = canDeliver ? this.in.read() : this.in.peek()
      if (result === undefined) break
      if (result._tag === "RingCorrupt" || result._tag === "BufferTooSmall") {
        if (this.in.commit()) this.core.signalPeer()
        const error = result._tag === "RingCorrupt" ? result : new RingCorrupt({
          reason: "packet larger than the channel's maximum packet size",
          field: "len8",
          value: result.required
        })
        this.core.lifecycle.failCorrupt(error)
        return "stop"
      }
      if (result._tag === "Completion") {
        if (!canDeliver) this.in.read()
        this.core.requests.handleCompletion(result)
        if (this.core.closeReason !== undefined) return "stop"
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
    if (this.in.commit()) this.core.signalPeer()
    // One wake-up per drained batch: the consumer woken wakes the next if it leaves packets queued.
    if (this.core.queue.length > 0) this.core.packetWaiters.wakeOne()
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
      if (this.in.commit()) this.core.signalPeer()
      this.core.lifecycle.failCorrupt(new RingCorrupt({ reason, field, value }))
      return true
    }
    this.counters.unknownPackets++
    this.core.report({ _tag: "UnknownPacket", error: new MalformedPacket({ reason: `${reason}, skipped`, field, value }) })
    return false
  }

  readonly receiveLoop: Effect.Effect<void> = Effect.suspend(() => {
    const step = (): Effect.Effect<void> =>
      Effect.suspend(() => {
        // Not one more ring access once the open period ended: the peer may have freed the pages.
        if (!this.core.writable) return Effect.void
        this.in.mask()
        const status = this.drain()
        if (status === "stop") return Effect.void
        if (status !== "more") this.in.discardCopy()
        const flush0 = this.core.metrics.due() ? this.core.metrics.flush : Effect.void
        const flush = this.rejected.length === 0 ? flush0 : Effect.zipRight(
          Effect.forkDaemon(Effect.forEach(this.rejected.splice(0), (packet) => this.core.outgoing.autoComplete(packet), { discard: true })),
          flush0
        )
        if (status === "more") return Effect.zipRight(flush, Effect.zipRight(Effect.yieldNow(), Effect.suspend(step)))
        if (status === "idle" && this.endpoint.polled !== true) {
          const more = this.in.unmask()
          if (typeof more !== "boolean") {
            this.core.lifecycle.failCorrupt(more)
            return flush
          }
          if (more) return Effect.zipRight(flush, Effect.suspend(step))
        }
        return Effect.zipRight(flush, Effect.zipRight(this.core.wake.wait, Effect.suspend(step)))
      })
    return step()
  })

  // ----- handing out batches ----------------------------------------------------------------

  /** Hands a consumer every queued packet at once (a chunk of `packets`): one wake-up per batch. */
  handOutAll(): Array<PacketHandle> {
    if (!this.core.delivering || this.core.queue.length === 0) return []
    const batch = this.core.queue.splice(0)
    const holder = currentFiber()
    for (let i = 0; i < batch.length; i++) batch[i]!.holder = holder
    return batch
  }

  // ----- releasing (a packet's quota slot freed) ----------------------------------------------

  /** A packet is done (completed, or its completion written or dropped): its quota slot is free again. */
  release(packet: PacketHandle): void {
    if (packet.views !== undefined) this.core.views.revoke(packet.views)
    if (!this.core.live.delete(packet)) return
    this.core.outstanding--
    this.endpoint.counters.outstandingPackets = this.core.outstanding
    this.core.outstandingChanged.notifyAll()
    // The ring is looked at again when the reader stopped at the quota (or a pause), and when the last
    // packet out comes back (in a microtask, see drainSoon): once per batch, not once per packet.
    if (this.readerBlocked || this.core.outstanding === 0) {
      this.readerBlocked = false
      this.scheduleDrain()
    }
  }

  failPacket(packet: PacketHandle, reason: string): Effect.Effect<void, PacketAlreadyCompleted> {
    return Effect.suspend(() => {
      if (packet.state !== "pending") {
        return Effect.fail(new PacketAlreadyCompleted({ transactionId: packet.packet.transactionId }))
      }
      packet.state = "failed"
      const error = new MalformedPacket({ reason: `packet failed by the receiver: ${reason}` })
      this.core.report({ _tag: "PacketFailed", error })
      // C3: the incoming queue stops; the channel must be closed and reopened.
      this.core.delivering = false
      if (this.core.terminal === undefined) this.core.terminal = error
      this.release(packet)
      this.core.packetWaiters.wakeAll()
      return Effect.void
    })
  }

  // ----- quota -------------------------------------------------------------------------------

  readonly setTransactionQuota = (quota: number): Effect.Effect<void, InvalidParameter> =>
    Effect.suspend(() => {
      if (!Number.isSafeInteger(quota) || quota <= 0) {
        return Effect.fail(new InvalidParameter({ field: "transactionQuota", reason: "must be a positive integer", value: quota }))
      }
      this.core.quota = quota
      // C12: raising the quota resumes delivery at once.
      this.core.wake.ring()
      return Effect.void
    })
}

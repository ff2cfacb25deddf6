// The outgoing side of a channel: packets written to the outgoing ring (send, sendPacket, sendBatch and
// the writes of requests), waits for room in a full ring (the pending_send_sz protocol), and the outbox
// of completions owed to the peer — where a completion is written (flushOutbox) or dropped.
import * as Effect from "effect/Effect"
import type * as PacketNs from "../Packet.js"
import type * as Ring from "../Ring.js"
import type * as Transport from "../Transport.js"
import {
  ChannelClosed,
  CompletionDropped,
  InvalidState,
  PacketAlreadyCompleted,
  PacketTooLarge,
  type RingCorrupt,
  RingFull
} from "../VmbusError.js"
import { type ChannelConfig, packetBudget, type SendError, type SendOptions } from "./channelConfig.js"
import { type ChannelCore, type Counters, EMPTY } from "./channelCore.js"
import type { PacketHandle } from "./incoming.js"
import { Notifier } from "./notifier.js"
import * as P from "./packet.js"
import { TOO_LARGE, WRITTEN, type WriteStatus } from "./ring.js"

/** Writes, ring-full waits and the completion outbox of one channel. */
export class Outgoing {
  /** Rung when room may have appeared in the outgoing ring (a peer signal), or a writer must look again. */
  readonly spaceChanged = new Notifier()
  /**
   * Completions owed to the peer, in order. Once a packet is completed its completion is queued here
   * and written as soon as the ring has room — whatever happens to the fiber that completed it — so a
   * completion is sent exactly once and no completing fiber holds the close up.
   */
  readonly outbox: Array<{ readonly packet: PacketHandle; readonly completion: P.CompletionPacket }> = []
  private readonly outboxChanged = new Notifier()
  /** Writers waiting for room (in `slowWrite`): a new write queues behind them. */
  waitingWriters = 0
  private readonly config: ChannelConfig
  private readonly endpoint: Transport.Endpoint
  private readonly counters: Counters
  private readonly out: Ring.OutgoingRing

  constructor(
    private readonly core: ChannelCore,
    private readonly writerLock: Effect.Semaphore
  ) {
    this.config = core.config
    this.endpoint = core.endpoint
    this.counters = core.counters
    this.out = core.out
  }

  // ----- the completion outbox ---------------------------------------------------------------

  /** Writes queued completions while the ring has room; asks for a signal when it has not. */
  flushOutbox(): void {
    while (this.outbox.length > 0) {
      const { completion, packet } = this.outbox[0]!
      if (!this.core.writable) {
        // The peer is gone (or the period ended): nothing to send, release locally.
        this.outbox.shift()
        this.dropCompletion(packet, `the open period ended (${this.core.closeReason ?? "rings released"}) before the ring had room`)
        continue
      }
      const result = this.out.writeStatus(completion)
      if (result === WRITTEN) {
        this.outbox.shift()
        this.counters.packetsSent++
        this.counters.completionsSent++
        if (this.out.commit()) this.core.signalPeer()
        this.core.incoming.release(packet)
        continue
      }
      if (typeof result !== "number") {
        this.core.lifecycle.failCorrupt(result)
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
      if (typeof fits !== "boolean") this.core.lifecycle.failCorrupt(fits)
      break
    }
    this.outboxChanged.notifyAll()
    this.maybeClearSpaceRequest()
  }

  /** A completion that will never be written: counted, reported, and its packet released. */
  private dropCompletion(packet: PacketHandle, reason: string): void {
    this.counters.completionsDropped++
    this.core.report({ _tag: "CompletionDropped", error: new CompletionDropped({ transactionId: packet.packet.transactionId, reason }) })
    this.core.incoming.release(packet)
  }

  /** `requestSpace`, except on a polled endpoint: no host signal is wanted there, the next poll re-checks. */
  private askForSpace(size: number): boolean | RingCorrupt {
    if (this.endpoint.polled !== true) return this.out.requestSpace(size)
    const free = this.out.freeBytes()
    return typeof free === "number" ? free > size : free
  }

  /** pending_send_sz is withdrawn only when no writer and no queued completion still needs space. */
  private maybeClearSpaceRequest(): void {
    if (this.waitingWriters === 0 && this.outbox.length === 0 && this.core.writable) this.out.clearSpaceRequest()
  }

  // ----- writing -----------------------------------------------------------------------------

  writeNow(packet: P.Packet): WriteStatus | RingCorrupt {
    const result = this.out.writeStatus(packet)
    if (result !== WRITTEN) return result
    this.counters.packetsSent++
    this.counters.bytesSent += packet.payload.length
    if (this.out.commit()) this.core.signalPeer()
    return WRITTEN
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
      if (!this.core.writable) return Effect.fail(new ChannelClosed({ reason: this.core.closeReason ?? "PeerClose" }))
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
      this.core.lifecycle.failCorrupt(result)
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
        this.core.lifecycle.failCorrupt(fits)
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

  checkSendable(operation: string): InvalidState | ChannelClosed | undefined {
    if (this.core.closeReason !== undefined) return new ChannelClosed({ reason: this.core.closeReason })
    if (!this.core.writable) return new ChannelClosed({ reason: "PeerClose" })
    if (this.core.current === "Active" || this.core.current === "Opening") return undefined
    if (this.core.current === "Closing" || this.core.current === "Closed") return new ChannelClosed({ reason: "LocalClose" })
    return new InvalidState({ operation, expected: "Active", actual: this.core.current })
  }

  /**
   * What a receiver configured alike would refuse is refused here, before it is sent: more external
   * pages than maxExternalPages (it would fail the packet), more bytes than its packet budget (it would
   * end the channel as Corrupt).
   */
  checkReceivable(packet: P.Packet): PacketTooLarge | undefined {
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

  checkPayload(length: number): PacketTooLarge | undefined {
    return length > this.config.maxPacketSize ? new PacketTooLarge({ size: length, max: this.config.maxPacketSize }) : undefined
  }

  readonly send = (payload: Uint8Array, options?: SendOptions): Effect.Effect<void, SendError> =>
    Effect.suspend((): Effect.Effect<void, SendError> => {
      const problem = this.checkSendable("send") ?? this.checkPayload(payload.length)
      if (problem !== undefined) return Effect.fail(problem)
      const packet: P.InBandPacket = { _tag: "InBand", transactionId: 0n, completionRequested: false, payload }
      // Fast path: nothing queued before it and room in the ring — written here, no second Effect.
      if (this.waitingWriters === 0 && this.outbox.length === 0) {
        const outcome = this.tryWrite(packet, undefined)
        if (outcome !== "full") return outcome
      }
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
              this.core.lifecycle.failCorrupt(result)
              return Effect.fail(result)
            }
            break
          }
          this.counters.packetsSent++
          this.counters.bytesSent += payloads[index]!.length
        }
        if (this.out.commit()) this.core.signalPeer()
      }
      if (index === payloads.length) return Effect.void
      // C6: the caller may reuse its buffers once the call is made, so copy what still waits.
      const rest = payloads.slice(index).map((payload) => payload.slice())
      return Effect.forEach(rest, (payload) => this.send(payload, options), { discard: true })
    })

  // ----- completing (the outbox is where a completion is written) ------------------------------

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
   * Completes a pending packet synchronously: its completion is written at once when nothing is queued
   * and the ring has room; otherwise a copy of `payload` waits in the outbox. Returns true when it still
   * waits for room.
   */
  completeNow(packet: PacketHandle, payload: Uint8Array, disposition: "completed" | "autoCompleted"): boolean {
    packet.state = disposition
    if (disposition === "autoCompleted") this.counters.autoCompleted++
    if (!packet.completionRequested) {
      this.core.incoming.release(packet)
      return false
    }
    if (!this.core.writable) {
      this.dropCompletion(packet, `the open period ended (${this.core.closeReason ?? "rings released"})`)
      return false
    }
    // Nothing queued before it: written straight from the caller's bytes, no copy, no outbox entry.
    if (this.outbox.length === 0) {
      const direct: P.CompletionPacket = { _tag: "Completion", transactionId: packet.packet.transactionId, payload }
      const result = this.out.writeStatus(direct)
      if (result === WRITTEN) {
        this.counters.packetsSent++
        this.counters.completionsSent++
        if (this.out.commit()) this.core.signalPeer()
        this.core.incoming.release(packet)
        return false
      }
    }
    // It must wait (or the write failed: flushOutbox reports why): a copy, the caller may reuse its buffer.
    const completion: P.CompletionPacket = {
      _tag: "Completion",
      transactionId: packet.packet.transactionId,
      payload: payload.length === 0 ? EMPTY : payload.slice()
    }
    this.outbox.push({ packet, completion })
    this.flushOutbox()
    if (!this.core.live.has(packet)) return false
    // A drain waiting for packets in consumers' hands: this one has left them.
    this.core.outstandingChanged.notifyAll()
    return true
  }

  /**
   * Waits until a queued completion is in the ring — interruptibly even inside a completion guard: an
   * interruption leaves it queued, not lost, and no close may wait on a peer that stopped reading.
   */
  waitWritten(packet: PacketHandle): Effect.Effect<void> {
    const wait: Effect.Effect<void> = Effect.suspend(() => {
      const seen = this.outboxChanged.current
      if (!this.core.live.has(packet)) return Effect.void
      return Effect.zipRight(this.outboxChanged.waitAfter(seen), wait)
    })
    return Effect.interruptible(wait)
  }

  autoComplete(packet: PacketHandle): Effect.Effect<void> {
    return Effect.suspend(() => {
      if (packet.state !== "pending") return Effect.void
      return this.completePacket(packet, this.config.failureCompletion, "autoCompleted").pipe(Effect.ignore)
    })
  }

  /** Completes a pending packet with the failure payload at once; the completion waits in the outbox. */
  autoCompleteNow(packet: PacketHandle): void {
    if (packet.state !== "pending") return
    packet.state = "autoCompleted"
    this.counters.autoCompleted++
    if (!packet.completionRequested) {
      this.core.incoming.release(packet)
    } else if (!this.core.writable) {
      this.dropCompletion(packet, `the open period ended (${this.core.closeReason ?? "rings released"})`)
    } else {
      this.outbox.push({
        packet,
        completion: { _tag: "Completion", transactionId: packet.packet.transactionId, payload: this.config.failureCompletion }
      })
    }
  }
}

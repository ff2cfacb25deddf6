// Requests (packets that want a completion) and their completions: an id is reserved in the transaction
// table (./transactions.ts) when a request is sent and freed when its completion arrives (handleCompletion),
// when it never reached the ring, or when its open period ended (see the lifecycle).
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import type { GuestBuffer } from "../GuestMemory.js"
import type * as PacketNs from "../Packet.js"
import type * as Ring from "../Ring.js"
import type * as Transport from "../Transport.js"
import {
  Cancelled,
  InvalidParameter,
  MalformedPacket,
  PacketTooLarge,
  RingFull,
  TooManyTransactions,
  Unsupported
} from "../VmbusError.js"
import type { ChannelConfig, ExternalRange, RequestError, RequestOptions } from "./channelConfig.js"
import type { ChannelCore, Counters } from "./channelCore.js"
import { isGuestBuffer, released } from "./externalData.js"
import * as P from "./packet.js"
import { TOO_LARGE, WRITTEN } from "./ring.js"

const NO_PINS: Array<() => void> = []

/** The packet a request sends (transaction id 0 until one is reserved), or why it cannot be sent. */
const requestPacket = (
  payload: Uint8Array,
  options: RequestOptions | undefined
): P.InBandPacket | P.GpaDirectPacket | P.TransferPagesPacket | InvalidParameter | PacketTooLarge => {
  // The common case (in-band, no options): one object, nothing else allocated.
  if (options === undefined) return { _tag: "InBand", transactionId: 0n, completionRequested: true, payload }
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

/** request and handleCompletion of one channel. */
export class Requests {
  private readonly config: ChannelConfig
  private readonly endpoint: Transport.Endpoint
  private readonly counters: Counters
  private readonly out: Ring.OutgoingRing

  constructor(private readonly core: ChannelCore) {
    this.config = core.config
    this.endpoint = core.endpoint
    this.counters = core.counters
    this.out = core.out
  }

  // ----- sending a request (an id reserved) -------------------------------------------------

  readonly request = (payload: Uint8Array, options?: RequestOptions): Effect.Effect<Uint8Array, RequestError> => {
    // KMCL: a zero timeout means "do not queue if the ring is full" (RingFull), not an instant Cancelled.
    const zeroTimeout = options?.timeout !== undefined && Duration.toMillis(Duration.decode(options.timeout)) === 0
    const ifFull = zeroTimeout ? "fail" : options?.ifFull ?? "wait"
    const run = Effect.suspend((): Effect.Effect<Uint8Array, RequestError> => {
      const problem = this.core.outgoing.checkSendable("request") ?? this.core.outgoing.checkPayload(payload.length)
      if (problem !== undefined) return Effect.fail(problem)
      const shape = requestPacket(payload, options)
      if (shape instanceof InvalidParameter || shape instanceof PacketTooLarge) return Effect.fail(shape)
      if (shape._tag === "GpaDirect" && this.endpoint.gpaDirect === false) {
        return Effect.fail(new Unsupported({ capability: "externalData", reason: "the transport cannot name guest physical pages" }))
      }
      const tooLarge = this.core.outgoing.checkReceivable(shape)
      if (tooLarge !== undefined) return Effect.fail(tooLarge)
      const external = options?.external
      const pins = external === undefined || external.length === 0 ? NO_PINS : this.pinExternal(external)
      if (!Array.isArray(pins)) return Effect.fail(pins)
      const userSettled = options?.onSettled
      const startedAt = performance.now()
      // The table owns the pins from here: released once, when the id is freed.
      const transaction = this.core.transactions.reserve(() => {
        // Freed by its completion (see handleCompletion): one round trip for the latency histogram.
        if (this.completing) this.core.metrics.recordLatency(performance.now() - startedAt)
        for (const unpin of pins) unpin()
        // Runs in the receive loop or a close: a throw must stop neither.
        if (userSettled !== undefined) this.core.runCallback("onSettled", userSettled)
      })
      if (transaction instanceof TooManyTransactions) {
        for (const unpin of pins) unpin()
        return Effect.fail(transaction)
      }
      // `shape` was built for this request alone: its id is set in place rather than copied.
      ;(shape as { transactionId: bigint }).transactionId = transaction.id
      const packet: P.Packet = shape
      // Fast path: room in the ring, nobody queued before us — written now, synchronously (no point
      // where an interruption could fall between the write and the wait).
      if (this.core.writable && this.core.outgoing.waitingWriters === 0) {
        if (this.core.outgoing.outbox.length > 0) this.core.outgoing.flushOutbox()
        const result = this.core.outgoing.writeNow(packet)
        if (result === WRITTEN) return this.core.transactions.await(transaction)
        if (typeof result !== "number") {
          this.core.transactions.cancel(transaction)
          this.core.lifecycle.failCorrupt(result)
          return Effect.fail(result)
        }
        if (result === TOO_LARGE) {
          this.core.transactions.cancel(transaction)
          return Effect.fail(this.out.tooLarge(packet))
        }
        if (ifFull === "fail") {
          this.core.transactions.cancel(transaction)
          const free = this.out.freeBytes()
          return Effect.fail(new RingFull({ required: P.ringSize(packet), available: typeof free === "number" ? free : 0 }))
        }
      }
      const written = { done: false }
      return Effect.uninterruptibleMask((restore) =>
        Effect.onExit(restore(this.core.outgoing.writePacket(packet, ifFull, written)), (exit) =>
          Effect.sync(() => {
            // Not in the ring: nothing will complete it and no host saw its pages, so free it now.
            if (Exit.isFailure(exit) && !written.done) this.core.transactions.cancel(transaction)
          })).pipe(
            // Interruption of this wait stops only the wait: the id stays reserved until it completes (C8).
            Effect.zipRight(restore(this.core.transactions.await(transaction)))
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
      attributes: this.core.spanAttributes,
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

  // ----- its completion (the id freed) ------------------------------------------------------

  /** True while a completion frees its transaction (the request's latency is recorded then). */
  private completing = false

  handleCompletion(packet: PacketNs.CompletionPacket): void {
    this.counters.completionsReceived++
    const id = packet.transactionId
    this.completing = true
    const outcome = this.core.transactions.complete(id, packet.payload)
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
      this.core.report({ _tag: duplicate ? "DuplicateCompletion" : "UnknownCompletion", error })
      if (this.config.strictCompletions) {
        this.core.lifecycle.endOpenPeriod("Corrupt", error)
        this.core.lifecycle.closeAllInBackground()
      }
    }
  }
}

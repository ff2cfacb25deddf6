// Handing delivered packets to consumers: `take` (one scoped packet), the `packets` streams, and `serve`
// (a pool of workers running a handler on batches of packets, settling each from its handler's result).
import * as Cause from "effect/Cause"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import type * as IncomingPacketNs from "../IncomingPacket.js"
import { ChannelClosed, HandlerFailed, PacketTooLarge } from "../VmbusError.js"
import { currentFiber, interruptBounded } from "./bounded.js"
import type { ChannelConfig, ReceiveError } from "./channelConfig.js"
import { type ChannelCore, type Counters, EMPTY } from "./channelCore.js"
import type { PacketHandle } from "./incoming.js"

/** take, packets and serve of one channel. */
export class Delivery {
  private readonly config: ChannelConfig
  private readonly counters: Counters

  constructor(private readonly core: ChannelCore) {
    this.config = core.config
    this.counters = core.counters
  }

  // ----- one packet at a time, or a stream of them -------------------------------------------

  /**
   * Takes the next delivered packet as a scoped resource. The wait is interruptible; the hand-over is
   * one synchronous step inside the acquisition, so a packet is never lost between the two.
   */
  readonly take: Effect.Effect<IncomingPacketNs.IncomingPacket, ReceiveError, Scope.Scope> = Effect.suspend(() => {
    return Effect.acquireRelease(
      Effect.sync(() => this.core.incoming.handOut()),
      (packet) => (packet === undefined ? Effect.void : this.core.outgoing.autoComplete(packet))
    ).pipe(
      Effect.flatMap((packet): Effect.Effect<IncomingPacketNs.IncomingPacket, ReceiveError, Scope.Scope> => {
        if (packet !== undefined) return Effect.succeed(packet)
        if (this.core.terminal !== undefined) return Effect.fail(this.core.terminal)
        if (this.core.current === "Closing" || this.core.current === "Closed") {
          return Effect.fail(new ChannelClosed({ reason: "LocalClose" }))
        }
        return Effect.zipRight(this.core.packetWaiters.waitUntil(this.core.packetReady), this.take)
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
            this.core.outgoing.autoCompleteNow(chunk[i]!)
            forced = true
          }
        }
        // The completions wait in the outbox if the ring is full: queued, never lost.
        if (forced) this.core.outgoing.flushOutbox()
      })
      const next: Effect.Effect<Chunk.Chunk<IncomingPacketNs.IncomingPacket>, ReceiveError> = Effect.suspend(() => {
        const batch = this.core.incoming.handOutAll()
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
        return packet === undefined ? Effect.void : this.core.outgoing.autoComplete(packet)
      })
      const next: Effect.Effect<PacketHandle, ReceiveError> = Effect.suspend(() => {
        const packet = this.core.incoming.handOut()
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
    if (this.core.delivering && this.core.queue.length > 0) return Effect.void
    if (this.core.terminal !== undefined) return Effect.fail(this.core.terminal)
    if (this.core.current === "Closing" || this.core.current === "Closed") {
      return Effect.fail(new ChannelClosed({ reason: "LocalClose" }))
    }
    return Effect.zipRight(this.core.packetWaiters.waitUntil(this.core.packetReady), this.waitForPacket)
  })

  // ----- serve ------------------------------------------------------------------------------

  /**
   * Ends a packet from its handler's result. Returns undefined when that took no Effect (the usual
   * case: the completion is in the ring or the packet needed none), else what is left to run — a
   * failure to report, or a wait for room in the ring.
   */
  private settle(packet: PacketHandle, exit: Exit.Exit<Uint8Array | void, unknown>): Effect.Effect<void> | undefined {
    if (Exit.isFailure(exit)) {
      if (Exit.isInterrupted(exit)) {
        this.counters.handlerFailures++
        return this.core.outgoing.autoComplete(packet)
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
    return this.core.outgoing.completeNow(packet, result, "completed") ? this.core.outgoing.waitWritten(packet) : undefined
  }

  /**
   * One worker of `serve`: a loop in its own fiber that claims queued packets one by one (a synchronous
   * step, no fiber hop) and waits, interruptibly, only when the queue is empty. A handler that returns
   * an `Exit` (`Effect.succeed`, `Effect.void`, `Effect.fail`) is settled inline, without the
   * interpreter, so a drained batch costs one wake-up. A handler that has to run and suspends has a
   * waiting consumer woken for what is still queued. One guard for the worker's whole life: whatever ends it (an
   * interruption, a drain timeout, the end of the channel), the packet in hand, if still pending, is
   * completed with the failure payload.
   */
  private worker<E, R>(
    handler: (packet: IncomingPacketNs.IncomingPacket) => Effect.Effect<Uint8Array | void, E, R>,
    scoped: boolean
  ): Effect.Effect<never, ReceiveError, R> {
    return Effect.uninterruptibleMask((restore) =>
      Effect.suspend(() => {
        let current: PacketHandle | undefined
        const self = currentFiber()
        // Set while a handler's Effect runs. The idle worker is woken from a microtask, which runs only
        // once this fiber has yielded: a handler that finishes synchronously wakes nobody, one that
        // suspends hands what is queued behind it to another worker.
        let inHandler = false
        let wakeScheduled = false
        const wakeIfSuspended = (): void => {
          wakeScheduled = false
          if (inHandler && this.core.delivering && this.core.queue.length > 0) this.core.packetWaiters.wakeOne()
        }
        const loop = (): Effect.Effect<never, ReceiveError, R> => {
          for (;;) {
            const packet = this.core.incoming.claim(self)
            if (packet === undefined) return waitThenLoop
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
            // This handler may take a while: if it suspends, what is queued goes to a waiting consumer
            // (another worker, or a take/packets consumer of the same channel — even with one worker).
            if (!wakeScheduled && this.core.queue.length > 0 && this.core.packetWaiters.size > 0) {
              wakeScheduled = true
              queueMicrotask(wakeIfSuspended)
            }
            inHandler = true
            const run = scoped ? Effect.scoped(effect as Effect.Effect<Uint8Array | void, E, R | Scope.Scope>) : effect
            return Effect.flatMap(Effect.exit(restore(run)), (exit) => {
              inHandler = false
              const rest = this.settle(packet, exit)
              return rest === undefined ? next : Effect.zipRight(rest, next)
            }) as Effect.Effect<never, ReceiveError, R>
          }
        }
        const waitThenLoop: Effect.Effect<never, ReceiveError, R> = Effect.zipRight(restore(this.waitForPacket), Effect.suspend(loop))
        // After a handler that ran: restore(void) lets an interruption of this worker stop it there (the
        // guard ends the packet in hand), then the loop goes on. Built once per worker, not per packet.
        const next: Effect.Effect<never, ReceiveError, R> = Effect.zipRight(restore(Effect.void), Effect.suspend(loop))
        return Effect.ensuring(
          loop(),
          Effect.sync(() => {
            if (current !== undefined && current.state === "pending") {
              this.core.outgoing.autoCompleteNow(current)
              this.core.outgoing.flushOutbox()
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
      // A fixed set of persistent workers (default: the quota, at most 64): no fiber per packet.
      const workers = Math.max(1, Math.min(options?.concurrency ?? Math.min(this.core.quota, 64), 1024))
      // A worker serves the queue until it is empty, and wakes a waiting consumer when a handler suspends.
      const worker = this.worker(handler, scoped)
      const fibers = new Set<Fiber.RuntimeFiber<never, ReceiveError>>()
      let stopping = false
      // A worker interrupted by a drain timeout (its handler hung) is replaced while the channel is open.
      const runWorker: Effect.Effect<void, ReceiveError, R> = Effect.gen(this, function*() {
        const fiber = yield* Effect.forkDaemon(worker)
        fibers.add(fiber)
        this.core.handlerFibers.add(fiber)
        const exit = yield* Fiber.await(fiber)
        fibers.delete(fiber)
        this.core.handlerFibers.delete(fiber)
        if (Exit.isSuccess(exit)) return
        // A local close ends this worker only: the others may still be finishing their packets.
        const failure = Cause.failureOption(exit.cause)
        if (Option.isSome(failure) && failure.value._tag === "ChannelClosed" && failure.value.reason === "LocalClose") return
        const open = this.core.closeReason === undefined && (this.core.current === "Active" || this.core.current === "Paused")
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
          for (const fiber of fibers) this.core.handlerFibers.delete(fiber)
          // Bounded: a worker may be the fiber interrupting serve (a handler closing the serve's scope).
          // A worker whose handler waits for the channel's close is not interrupted: it goes on (and
          // ends) once the close returns, rather than being cut off right after its close call.
          return interruptBounded(fibers, undefined, (fiber) => this.core.lifecycle.isCloseJoiner(fiber))
        }))
      )
    })
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
      this.core.report({ _tag: "HandlerFailed", error })
      return Effect.zipRight(
        this.core.outgoing.autoComplete(packet),
        Effect.logWarning(`vmbus: ${error.message}`, cause).pipe(Effect.annotateLogs(this.core.spanAttributes))
      )
    })
  }
}

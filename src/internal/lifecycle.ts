// The lifecycle of a channel: open (hooks, the receive loop), pause and start, the end of the open period
// (peer close, rescind, corruption), and close — with the drain of packets still in consumers' hands.
import * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as Fiber from "effect/Fiber"
import * as FiberId from "effect/FiberId"
import * as Runtime from "effect/Runtime"
import * as Scope from "effect/Scope"
import type * as Ring from "../Ring.js"
import type * as Transport from "../Transport.js"
import { CallbackFailed, ChannelClosed, type CloseReason, InvalidState, RingCorrupt } from "../VmbusError.js"
import { actingFiber, interruptBounded } from "./bounded.js"
import type { ChannelConfig, Hooks } from "./channelConfig.js"
import type { ChannelCore, Terminal } from "./channelCore.js"
import * as L from "./layout.js"

/** Open, hooks, pause, start and close of one channel. */
export class Lifecycle {
  private readonly config: ChannelConfig
  private readonly endpoint: Transport.Endpoint
  private readonly in: Ring.IncomingRing

  constructor(
    private readonly core: ChannelCore,
    private readonly hooks: Hooks<unknown>
  ) {
    this.config = core.config
    this.endpoint = core.endpoint
    this.in = core.in
  }

  // ----- hooks -------------------------------------------------------------------------------

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
          Effect.sync(() => this.core.report({ _tag: "CallbackFailed", error: new CallbackFailed({ callback: name, cause: Cause.squash(cause) }) })),
          Effect.logWarning(`vmbus: lifecycle hook ${name} failed`, cause)
        )
    )
  }

  // ----- the end of the open period (peer close, rescind, corruption) -------------------------

  /** The peer closed or rescinded the channel, or our ring reader found corruption. */
  endOpenPeriod(reason: CloseReason, error: Terminal): void {
    if (this.core.closeReason !== undefined) return
    this.core.closeReason = reason
    this.core.terminal = error
    this.core.delivering = false
    Deferred.unsafeDone(this.core.closedDeferred, Exit.succeed(reason))
    // Completions already in the ring settle their requests; the rest fail now (C1). What they pinned
    // stays until the host side can no longer reach it (`releaseEndedTransactions`).
    if (reason !== "Corrupt") this.drainCompletionsAtEnd()
    this.core.transactions.endPeriod(reason)
    // Every view of guest memory this channel handed out dies with the open period.
    this.core.views.revokeAll()
    this.core.outgoing.spaceChanged.notifyAll()
    this.core.packetWaiters.wakeAll()
    this.core.outgoing.flushOutbox()
    this.core.outstandingChanged.notifyAll()
    this.core.wake.ring()
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
      if (result._tag === "Completion") this.core.requests.handleCompletion(result)
    }
  }

  /**
   * The host side can no longer reach this endpoint's guest memory (the transport closed it): what
   * requests of the ended open period pinned is released now.
   */
  releaseEndedTransactions(): void {
    this.core.transactions.releaseEnded()
  }

  /** A corrupt ring: reported, the open period ended, and the whole close run. */
  failCorrupt(error: RingCorrupt): void {
    this.core.report({ _tag: "RingCorrupt", error })
    this.endOpenPeriod("Corrupt", error)
    this.closeAllInBackground()
  }

  // ----- pause, start, and the drain of packets in consumers' hands ---------------------------

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
        for (const packet of this.core.queue.splice(0)) this.core.outgoing.autoCompleteNow(packet)
        this.core.outgoing.flushOutbox()
      }
      const busy = (): boolean => {
        if (closing && this.core.outgoing.outbox.length > 0) return true
        for (const packet of this.core.live.toArray()) {
          if (packet.state === "pending" && packet.holder !== undefined && packet.holder !== self && !this.closeJoiners.has(packet.holder)) return true
        }
        return false
      }
      const waitAll: Effect.Effect<void> = Effect.suspend(() => {
        const seen = this.core.outstandingChanged.current
        if (!busy()) return Effect.void
        return Effect.zipRight(this.core.outstandingChanged.waitAfter(seen), waitAll)
      })
      // Interruptible: the close runs as a finalizer, and the timeout must be able to stop the wait.
      return Effect.timeout(Effect.interruptible(waitAll), Duration.millis(this.config.drainTimeoutMillis)).pipe(
        Effect.matchEffect({
          // C15: interrupt hung handlers (their packets auto-complete), then force the rest. Not a
          // handler waiting for this very close (a joiner): it cannot end before the close does, and
          // waiting the grace for it would only delay the close and leave the handler interrupted.
          onFailure: () =>
            Effect.zipRight(
              interruptBounded(Array.from(this.core.handlerFibers).filter((fiber) => !this.isCloseJoiner(fiber))),
              Effect.sync(() => this.forceCompleteAll(closing ? undefined : self))
            ),
          // Closing: what the closing fiber itself holds is completed now.
          onSuccess: () => (closing ? Effect.sync(() => this.forceCompleteAll(undefined)) : Effect.void)
        })
      )
    })
  }

  /**
   * Packets still pending after the drain timeout (held by code outside `serve`, or by the closing
   * fiber itself): completed now with the failure payload, so neither the quota nor the peer stays
   * blocked. A later `complete` by their holder gets `PacketAlreadyCompleted`. A pause spares what its
   * own fiber holds (`except`): that consumer goes on after the pause returns.
   */
  private forceCompleteAll(except: Fiber.RuntimeFiber<unknown, unknown> | undefined): void {
    const queued = new Set(this.core.queue)
    for (const packet of this.core.live.toArray()) {
      if (packet.state !== "pending" || queued.has(packet)) continue
      if (except !== undefined && packet.holder === except) continue
      this.core.outgoing.autoCompleteNow(packet)
    }
    this.core.outgoing.flushOutbox()
  }

  readonly pause: Effect.Effect<void, InvalidState> = Effect.suspend(() => {
    if (this.core.current !== "Active") {
      return Effect.fail(new InvalidState({ operation: "pause", expected: "Active", actual: this.core.current }))
    }
    this.core.delivering = false
    return this.core.setState("Paused").pipe(
      Effect.zipRight(Effect.sync(() => this.core.outgoing.spaceChanged.notifyAll())),
      Effect.zipRight(this.runHook("onSuspend", () => this.hooks.onSuspend)),
      Effect.zipRight(this.drainOutstanding(false)),
      Effect.zipRight(Effect.sync(() => this.failPending("LocalClose")))
    )
  })

  readonly start: Effect.Effect<void, InvalidState> = Effect.suspend(() => {
    if (this.core.current !== "Paused") {
      return Effect.fail(new InvalidState({ operation: "start", expected: "Paused", actual: this.core.current }))
    }
    return this.core.setState("Active").pipe(
      Effect.zipRight(this.runHook("onStarted", () => this.hooks.onStarted?.({ send: this.core.outgoing.send }))),
      Effect.zipRight(Effect.sync(() => {
        // C3: after `fail` the queue stays stopped for every consumer until the channel is reopened.
        this.core.delivering = this.core.terminal === undefined
        this.core.packetWaiters.wakeAll()
        this.core.wake.ring()
      })),
      Effect.zipRight(this.runHook("onPostStarted", () => this.hooks.onPostStarted?.(this.core.channel)))
    )
  })

  /**
   * Pause: the waiting requests fail; their ids stay reserved and their buffers pinned, because the
   * peer may still hold the packets — a late completion frees them silently.
   */
  private failPending(reason: CloseReason): void {
    this.core.transactions.abandonAll(reason)
  }

  // ----- open and close ----------------------------------------------------------------------

  /** Opened → Started → receive loop → PostStarted. */
  run(scope: Scope.CloseableScope): Effect.Effect<void, unknown> {
    return Effect.gen(this, function*() {
      this.core.runtime = yield* Effect.runtime<never>()
      this.openScope = scope
      this.endpoint.onPeerClose((reason) => {
        this.endOpenPeriod(reason, new ChannelClosed({ reason }))
        // KMCL: a peer close or rescind runs Suspend and Closed without waiting for the local disable.
        this.closeInBackground()
      })
      this.endpoint.onSignal(this.core.incoming.onPeerSignal)
      if (this.hooks.onOpened) yield* this.hooks.onOpened({ childRelid: this.core.childRelid, identity: this.core.identity })
      if (this.hooks.onStarted) yield* this.hooks.onStarted({ send: this.core.outgoing.send })
      // A peer close or rescind while the hooks ran: the open fails, it does not return a closed channel.
      if (this.core.closeReason !== undefined) return yield* new ChannelClosed({ reason: this.core.closeReason })
      yield* this.core.setState("Active")
      this.reachedActive = true
      this.core.delivering = true
      // A defect in the loop (a bug, never peer data) must not leave the channel silently deaf.
      yield* Effect.forkIn(
        this.core.incoming.receiveLoop.pipe(
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
      if (this.config.metricsFlushMillis > 0) yield* Effect.forkIn(this.core.metrics.timer(this.config.metricsFlushMillis), scope)
      if (this.hooks.onPostStarted) yield* this.hooks.onPostStarted(this.core.channel)
      this.openFinished = true
      // Corrupted while onPostStarted ran: the channel-level close ran then, the rest runs now.
      if (this.core.closeReason === "Corrupt") this.closeAllInBackground()
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
  closeAllInBackground(): void {
    if (this.core.runtime === undefined || this.openScope === undefined || !this.openFinished) {
      this.closeInBackground()
      return
    }
    if (this.selfCloseStarted) return
    this.selfCloseStarted = true
    const scope = this.openScope
    Runtime.runFork(this.core.runtime)(Effect.ensuring(Scope.close(scope, Exit.void), Deferred.done(this.selfCloseDone, Exit.void)))
  }

  /**
   * The owner's scope ends only after a close the channel started itself has finished. Run inside the
   * owner's uninterruptible close daemon (channel.ts): an interrupted closer must not return early (F10).
   */
  readonly awaitSelfClose: Effect.Effect<void> = Effect.suspend(() =>
    this.selfCloseStarted ? this.joinClose(Deferred.await(this.selfCloseDone)) : Effect.void
  )

  private closeInBackground(): void {
    if (this.core.runtime !== undefined) Runtime.runFork(this.core.runtime)(this.close())
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

  /** Fibers running the owner's close of this channel (its scope's finalizer), for as long as it runs. */
  private readonly closers = new Set<Fiber.RuntimeFiber<unknown, unknown>>()

  /** Runs `close` (the owner's close of this channel) on behalf of `closer`, who is known as one meanwhile. */
  readonly closingFor = <A>(closer: Fiber.RuntimeFiber<unknown, unknown>, close: Effect.Effect<A>): Effect.Effect<A> =>
    Effect.suspend(() => {
      if (this.closers.has(closer)) return close
      this.closers.add(closer)
      return Effect.ensuring(close, Effect.sync(() => this.closers.delete(closer)))
    })

  /**
   * True while `fiber` (a handler's, say) closes this channel or waits for its close: it ends when the
   * close does, so it is not interrupted for the close's sake.
   */
  isCloseJoiner(fiber: Fiber.RuntimeFiber<unknown, unknown>): boolean {
    return this.closeJoiners.has(fiber) || this.closers.has(fiber)
  }

  private joinClose(wait: Effect.Effect<void>): Effect.Effect<void> {
    return Effect.suspend(() => {
      const joiner = actingFiber()
      if (joiner === undefined || this.closeJoiners.has(joiner)) return wait
      this.closeJoiners.add(joiner)
      this.core.outstandingChanged.notifyAll()
      return Effect.ensuring(wait, Effect.sync(() => this.closeJoiners.delete(joiner)))
    })
  }

  private closeOnce(): Effect.Effect<void> {
    return Effect.gen(this, function*() {
      if (this.core.current === "Closed") return
      const wasRunning = this.core.current === "Active"
      this.core.delivering = false
      yield* this.core.setState("Closing")
      this.core.packetWaiters.wakeAll()
      this.core.outgoing.spaceChanged.notifyAll()
      if (wasRunning) yield* this.runHook("onSuspend", () => this.hooks.onSuspend)
      yield* this.drainOutstanding(true)
      this.endOpenPeriod("LocalClose", new ChannelClosed({ reason: "LocalClose" }))
      yield* this.core.metrics.flush
      yield* this.core.setState("Closed")
      if (this.reachedActive) yield* this.runHook("onClosed", () => this.hooks.onClosed?.(this.core.closeReason ?? "LocalClose"))
    }).pipe(Effect.withSpan("vmbus.channel.close", { attributes: this.core.spanAttributes }))
  }
}

// A transport wrapper that injects faults: signals dropped, duplicated, delayed, reordered or spurious;
// control messages delayed (in order), withheld or corrupted; readers stalled; a peer rescinded or
// killed and ring bytes corrupted at a chosen step. Every random decision comes from a seeded
// generator per fault site, so the n-th decision of a site is the same on every run with that seed.
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Runtime from "effect/Runtime"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import * as ChannelMessage from "../ChannelMessage.js"
import type * as Transport from "../Transport.js"
import type { CloseReason } from "../VmbusError.js"
import * as L from "./layout.js"

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

const Probability = Schema.Number.pipe(Schema.between(0, 1, { message: () => "a probability is between 0 and 1" }))
const Millis = Schema.NonNegative

export const SignalFaults = Schema.Struct({
  drop: Schema.optionalWith(Probability, { default: () => 0 }),
  duplicate: Schema.optionalWith(Probability, { default: () => 0 }),
  delay: Schema.optionalWith(Probability, { default: () => 0 }),
  reorder: Schema.optionalWith(Probability, { default: () => 0 }),
  maxDelayMillis: Schema.optionalWith(Millis, { default: () => 2 }),
  spuriousEveryMillis: Schema.optional(Schema.Number.pipe(Schema.positive()))
})

export const MessageFaults = Schema.Struct({
  delay: Schema.optionalWith(Probability, { default: () => 0 }),
  maxDelayMillis: Schema.optionalWith(Millis, { default: () => 2 }),
  corrupt: Schema.optionalWith(Probability, { default: () => 0 }),
  corruptDirection: Schema.optionalWith(Schema.Literal("toHost", "toGuest", "both"), { default: () => "toGuest" as const }),
  corruptOnly: Schema.optional(Schema.Array(Schema.String)),
  hold: Schema.optionalWith(Schema.Array(Schema.String), { default: () => [] }),
  holdMillis: Schema.optional(Millis)
})

export const ReaderFaults = Schema.Struct({
  stall: Schema.optionalWith(Probability, { default: () => 0 }),
  maxStallMillis: Schema.optionalWith(Millis, { default: () => 5 })
})

export const ScheduledFault = Schema.Struct({
  atStep: Schema.Int.pipe(Schema.nonNegative()),
  fault: Schema.Literal("rescind", "killClient", "killServer", "corruptClientToServer", "corruptServerToClient")
})

export const FaultConfig = Schema.Struct({
  seed: Schema.optionalWith(Schema.Int, { default: () => 0 }),
  signals: Schema.optionalWith(SignalFaults, { default: () => Schema.decodeSync(SignalFaults)({}) }),
  messages: Schema.optionalWith(MessageFaults, { default: () => Schema.decodeSync(MessageFaults)({}) }),
  readers: Schema.optionalWith(ReaderFaults, { default: () => Schema.decodeSync(ReaderFaults)({}) }),
  schedule: Schema.optionalWith(Schema.Array(ScheduledFault), { default: () => [] })
})
export type FaultConfig = typeof FaultConfig.Type
export type FaultConfigInput = typeof FaultConfig.Encoded

export type Fault =
  | "signalDropped"
  | "signalDuplicated"
  | "signalDelayed"
  | "signalReordered"
  | "signalSpurious"
  | "messageDelayed"
  | "messageHeld"
  | "messageReleased"
  | "messageCorrupted"
  | "readerStalled"
  | "rescind"
  | "killClient"
  | "killServer"
  | "ringCorrupted"

export interface FaultLogEntry {
  /** The transport event (step) the fault was injected at. */
  readonly step: number
  /** What was injected. */
  readonly fault: Fault
  /** The channel it hit, when known. */
  readonly childRelid?: number | undefined
  /** A short description of what exactly happened. */
  readonly detail?: string | undefined
}

export type FaultStats = { readonly steps: number } & { readonly [K in Fault]: number }

// ---------------------------------------------------------------------------------------------
// Seeded randomness: one stream per fault site
// ---------------------------------------------------------------------------------------------

/** mulberry32 over a 32-bit state. */
export const prng = (seed: number): (() => number) => {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const siteSeed = (seed: number, site: number): number => Math.imul(seed ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(site + 1, 0xc2b2ae35)

// ---------------------------------------------------------------------------------------------
// The injector
// ---------------------------------------------------------------------------------------------

type Side = "client" | "server"

/** One wrapped endpoint: its inner endpoint and what the fault layer needs to reach it. */
interface Wrapped {
  readonly inner: Transport.Endpoint
  readonly endpoint: Transport.Endpoint
  /** Runs the channel's signal callback (a signal from the peer), unless the endpoint is dead. */
  readonly wake: () => void
  /** Tells the channel its peer is gone (once). */
  readonly peerClose: (reason: CloseReason) => void
  dead: boolean
  stalled: boolean
  missed: boolean
}

interface Entry {
  readonly childRelid: number
  client: Wrapped | undefined
  server: Wrapped | undefined
  clientScope: Scope.CloseableScope | undefined
  offerScope: Scope.CloseableScope | undefined
}

const LOG_LIMIT = 2000

export class Injector {
  readonly config: FaultConfig
  enabled = true
  private stepCount = 0
  private readonly counts = new Map<Fault, number>()
  private readonly entries = new Map<number, Entry>()
  private readonly rngSignal: () => number
  private readonly rngMessage: () => number
  private readonly rngReader: () => number
  private readonly rngTarget: () => number
  private readonly timers = new Set<ReturnType<typeof setTimeout>>()
  private spurious: ReturnType<typeof setInterval> | undefined = undefined
  private readonly reordered: Array<() => void> = []
  private readonly holdTags: Set<string>
  private readonly held: Array<{ readonly tag: string; readonly deliver: () => void }> = []
  private readonly delayed = { toHost: [] as Array<() => void>, toGuest: [] as Array<() => void> }
  private readonly delayRunning = { toHost: false, toGuest: false }
  private readonly actions = new Set<Fiber.RuntimeFiber<unknown, unknown>>()
  readonly log: Array<FaultLogEntry> = []

  constructor(config: FaultConfig, private readonly runtime: Runtime.Runtime<never>) {
    this.config = config
    this.rngSignal = prng(siteSeed(config.seed, 0))
    this.rngMessage = prng(siteSeed(config.seed, 1))
    this.rngReader = prng(siteSeed(config.seed, 2))
    this.rngTarget = prng(siteSeed(config.seed, 3))
    this.holdTags = new Set(config.messages.hold)
    const every = config.signals.spuriousEveryMillis
    if (every !== undefined) {
      this.spurious = setInterval(() => this.spuriousSignals(), every)
    }
  }

  // ----- bookkeeping -------------------------------------------------------------------------

  private record(fault: Fault, childRelid?: number, detail?: string): void {
    this.counts.set(fault, (this.counts.get(fault) ?? 0) + 1)
    if (this.log.length >= LOG_LIMIT) this.log.shift()
    this.log.push({ step: this.stepCount, fault, childRelid, detail })
  }

  stats(): FaultStats {
    const faults: ReadonlyArray<Fault> = [
      "signalDropped", "signalDuplicated", "signalDelayed", "signalReordered", "signalSpurious", "messageDelayed",
      "messageHeld", "messageReleased", "messageCorrupted", "readerStalled", "rescind", "killClient", "killServer",
      "ringCorrupted"
    ]
    const out: Record<string, number> = { steps: this.stepCount }
    for (const fault of faults) out[fault] = this.counts.get(fault) ?? 0
    return out as FaultStats
  }

  get step(): number {
    return this.stepCount
  }

  /** One transport event happened: count it and run the faults scheduled for this step. */
  private tick(): void {
    const step = ++this.stepCount
    for (const scheduled of this.config.schedule) {
      if (scheduled.atStep !== step) continue
      switch (scheduled.fault) {
        case "rescind":
          this.fork(this.rescind(undefined))
          break
        case "killClient":
          this.fork(this.kill("client", undefined))
          break
        case "killServer":
          this.fork(this.kill("server", undefined))
          break
        case "corruptClientToServer":
          this.corruptRing("clientToServer", undefined)
          break
        case "corruptServerToClient":
          this.corruptRing("serverToClient", undefined)
          break
      }
    }
  }

  private later(millis: number, run: () => void): void {
    const timer = setTimeout(() => {
      this.timers.delete(timer)
      run()
    }, millis)
    this.timers.add(timer)
  }

  /** Runs an action from a callback; the finalizer waits for it, so no fiber outlives the layer. */
  private fork(effect: Effect.Effect<unknown>): void {
    const fiber = Runtime.runFork(this.runtime)(effect)
    this.actions.add(fiber)
    fiber.addObserver(() => this.actions.delete(fiber))
  }

  /** The entry an action targets: the one named, or the most recent live one. */
  private target(childRelid: number | undefined): Entry | undefined {
    if (childRelid !== undefined) return this.entries.get(childRelid)
    let last: Entry | undefined
    for (const entry of this.entries.values()) last = entry
    return last
  }

  liveChannels(): ReadonlyArray<number> {
    return Array.from(this.entries.values()).filter((e) => e.client !== undefined || e.server !== undefined).map((e) =>
      e.childRelid
    )
  }

  private entry(childRelid: number): Entry {
    let entry = this.entries.get(childRelid)
    if (entry === undefined) {
      entry = { childRelid, client: undefined, server: undefined, clientScope: undefined, offerScope: undefined }
      this.entries.set(childRelid, entry)
    }
    return entry
  }

  private forget(entry: Entry): void {
    if (entry.client === undefined && entry.offerScope === undefined) this.entries.delete(entry.childRelid)
  }

  // ----- signals -----------------------------------------------------------------------------

  private signalThrough(from: Wrapped): void {
    if (from.dead) return
    this.tick()
    const deliver = () => {
      if (!from.dead) from.inner.signal()
    }
    if (!this.enabled) return this.passSignal(deliver)
    const f = this.config.signals
    const r = this.rngSignal()
    const relid = from.inner.childRelid
    if (r < f.drop) return this.record("signalDropped", relid)
    if (r < f.drop + f.duplicate) {
      this.record("signalDuplicated", relid)
      this.passSignal(deliver)
      return deliver()
    }
    if (r < f.drop + f.duplicate + f.delay) {
      this.record("signalDelayed", relid)
      return this.later(this.rngSignal() * f.maxDelayMillis, deliver)
    }
    if (r < f.drop + f.duplicate + f.delay + f.reorder) {
      // Held back until the next signal has gone through (or the longest delay, if none comes).
      this.record("signalReordered", relid)
      let done = false
      const once = () => {
        if (done) return
        done = true
        deliver()
      }
      this.reordered.push(once)
      return this.later(f.maxDelayMillis, once)
    }
    this.passSignal(deliver)
  }

  private passSignal(deliver: () => void): void {
    deliver()
    const behind = this.reordered.splice(0)
    for (const run of behind) run()
  }

  private spuriousSignals(): void {
    if (!this.enabled) return
    for (const entry of this.entries.values()) {
      for (const wrapped of [entry.client, entry.server]) {
        if (wrapped === undefined || wrapped.dead) continue
        this.record("signalSpurious", entry.childRelid)
        wrapped.wake()
      }
    }
  }

  // ----- readers -----------------------------------------------------------------------------

  private receive(wrapped: Wrapped, callback: () => void): void {
    if (wrapped.dead) return
    if (wrapped.stalled) {
      wrapped.missed = true
      return
    }
    const f = this.config.readers
    if (this.enabled && f.stall > 0 && this.rngReader() < f.stall) {
      this.stall(wrapped, this.rngReader() * f.maxStallMillis)
      wrapped.missed = true
      return
    }
    callback()
  }

  private stall(wrapped: Wrapped, millis: number): void {
    wrapped.stalled = true
    this.record("readerStalled", wrapped.inner.childRelid, `${wrapped.inner.role} ${millis.toFixed(2)} ms`)
    this.later(millis, () => {
      wrapped.stalled = false
      if (wrapped.missed) {
        wrapped.missed = false
        wrapped.wake()
      }
    })
  }

  stallReader(side: Side, millis: number, childRelid: number | undefined): boolean {
    const wrapped = this.target(childRelid)?.[side]
    if (wrapped === undefined || wrapped.dead) return false
    this.stall(wrapped, millis)
    return true
  }

  // ----- endpoints ---------------------------------------------------------------------------

  wrap(inner: Transport.Endpoint): Wrapped {
    let callback: (() => void) | undefined
    let missedEarly = false
    let closeCallback: ((reason: CloseReason) => void) | undefined
    let closedWith: CloseReason | undefined
    const wrapped: Wrapped = {
      inner,
      dead: false,
      stalled: false,
      missed: false,
      wake: () => {
        if (wrapped.dead) return
        if (callback === undefined) missedEarly = true
        else callback()
      },
      peerClose: (reason) => {
        if (closedWith !== undefined) return
        closedWith = reason
        closeCallback?.(reason)
      },
      endpoint: {
        ...inner,
        signal: () => this.signalThrough(wrapped),
        onSignal: (cb) => {
          callback = cb
          inner.onSignal(() => this.receive(wrapped, () => callback?.()))
          if (missedEarly) {
            missedEarly = false
            cb()
          }
        },
        onPeerClose: (cb) => {
          closeCallback = cb
          if (closedWith !== undefined) cb(closedWith)
          else inner.onPeerClose((reason) => wrapped.peerClose(reason))
        }
      }
    }
    return wrapped
  }

  offer(inner: Transport.TransportShape, identity: Transport.OfferIdentity) {
    return Effect.gen(this, function*() {
      const parent = yield* Effect.scope
      const scope = yield* Scope.fork(parent, ExecutionStrategy.sequential)
      const offer = yield* inner.offer(identity).pipe(
        Scope.extend(scope),
        Effect.onError(() => Scope.close(scope, Exit.void))
      )
      const entry = this.entry(offer.childRelid)
      entry.offerScope = scope
      yield* Scope.addFinalizer(scope, Effect.sync(() => {
        if (entry.server !== undefined) entry.server.dead = true
        entry.server = undefined
        entry.offerScope = undefined
        this.forget(entry)
      }))
      const accept = Effect.map(offer.accept, (endpoint) => {
        const wrapped = this.wrap(endpoint)
        entry.server = wrapped
        return wrapped.endpoint
      })
      return { ...offer, accept } satisfies Transport.Offer
    })
  }

  open<E>(open: Effect.Effect<Transport.Endpoint, E, Scope.Scope>) {
    return Effect.gen(this, function*() {
      const parent = yield* Effect.scope
      const scope = yield* Scope.fork(parent, ExecutionStrategy.sequential)
      const inner = yield* open.pipe(Scope.extend(scope), Effect.onError(() => Scope.close(scope, Exit.void)))
      const entry = this.entry(inner.childRelid)
      const wrapped = this.wrap(inner)
      entry.client = wrapped
      entry.clientScope = scope
      yield* Scope.addFinalizer(scope, Effect.sync(() => {
        wrapped.dead = true
        if (entry.client === wrapped) {
          entry.client = undefined
          entry.clientScope = undefined
        }
        this.forget(entry)
      }))
      return wrapped.endpoint
    })
  }

  // ----- peer faults -------------------------------------------------------------------------

  /** The host withdraws the offer (its scope closes): both sides see the rescind as on Hyper-V. */
  rescind(childRelid: number | undefined): Effect.Effect<boolean> {
    return Effect.suspend(() => {
      const entry = this.target(childRelid)
      const scope = entry?.offerScope
      if (entry === undefined || scope === undefined) return Effect.succeed(false)
      this.record("rescind", entry.childRelid)
      return Effect.as(Scope.close(scope, Exit.void), true)
    })
  }

  /**
   * One side dies: its own channel is told the peer is gone (so it stops touching the rings), then its
   * transport resources close at once, without the channel's orderly close — the other side sees a
   * close (a dead guest) or a rescind (a dead host).
   */
  kill(side: Side, childRelid: number | undefined): Effect.Effect<boolean> {
    return Effect.suspend(() => {
      const entry = this.target(childRelid)
      const wrapped = entry?.[side]
      const scope = side === "client" ? entry?.clientScope : entry?.offerScope
      if (entry === undefined || wrapped === undefined || scope === undefined || wrapped.dead) return Effect.succeed(false)
      this.record(side === "client" ? "killClient" : "killServer", entry.childRelid)
      wrapped.peerClose("PeerClose")
      wrapped.dead = true
      return Effect.as(Scope.close(scope, Exit.void), true)
    })
  }

  /**
   * Corrupts a ring of a live channel: the descriptor of the next unread packet gets an impossible
   * length, or — when nothing is unread — the write index a misaligned value. The reader is woken.
   */
  corruptRing(ring: "clientToServer" | "serverToClient", childRelid: number | undefined): boolean {
    const entry = this.target(childRelid)
    const client = entry?.client
    if (entry === undefined || client === undefined || client.dead) return false
    const bytes = ring === "clientToServer" ? client.inner.outgoing : client.inner.incoming
    const control = new Uint32Array(bytes.buffer, bytes.byteOffset, 32)
    const data = bytes.subarray(L.CONTROL_PAGE_SIZE)
    const w = Atomics.load(control, L.WRITE_INDEX_WORD)
    const r = Atomics.load(control, L.READ_INDEX_WORD)
    if (w !== r && r + 6 <= data.length) {
      data[r + 4] = 0xff
      data[r + 5] = 0xff
      this.record("ringCorrupted", entry.childRelid, `${ring} descriptor at ${r}`)
    } else {
      Atomics.store(control, L.WRITE_INDEX_WORD, (w + 4) % data.length)
      this.record("ringCorrupted", entry.childRelid, `${ring} write index ${w}`)
    }
    const reader = ring === "clientToServer" ? entry.server : client
    reader?.wake()
    return true
  }

  pickTarget(): number | undefined {
    const live = this.liveChannels()
    if (live.length === 0) return undefined
    return live[Math.floor(this.rngTarget() * live.length)]
  }

  // ----- control messages --------------------------------------------------------------------

  readonly intercept: Transport.MessageInterceptor = (message, deliver) => {
    this.tick()
    const decoded = ChannelMessage.decode(message.bytes)
    const tag = Either.isRight(decoded) ? decoded.right._tag : "Malformed"
    let bytes = message.bytes
    if (this.holdTags.has(tag)) {
      this.record("messageHeld", undefined, tag)
      const release = () => deliver(bytes)
      this.held.push({ tag, deliver: release })
      const after = this.config.messages.holdMillis
      if (after !== undefined) {
        this.later(after, () => {
          const i = this.held.findIndex((h) => h.deliver === release)
          if (i < 0) return
          this.held.splice(i, 1)
          this.record("messageReleased", undefined, tag)
          release()
        })
      }
      return
    }
    const f = this.config.messages
    const corruptible = (f.corruptDirection === "both" || f.corruptDirection === message.direction) &&
      (f.corruptOnly === undefined || f.corruptOnly.includes(tag))
    if (this.enabled && f.corrupt > 0 && corruptible) {
      if (this.rngMessage() < f.corrupt) {
        bytes = bytes.slice()
        const at = Math.floor(this.rngMessage() * bytes.length)
        bytes[at] = bytes[at]! ^ (1 + Math.floor(this.rngMessage() * 255))
        this.record("messageCorrupted", undefined, `${tag} byte ${at}`)
      }
    }
    const queue = this.delayed[message.direction]
    const send = () => deliver(bytes)
    // Delays keep the order of a direction: a message behind a delayed one waits for it.
    if (queue.length > 0 || (this.enabled && f.delay > 0 && this.rngMessage() < f.delay)) {
      this.record("messageDelayed", undefined, tag)
      queue.push(send)
      this.runDelayed(message.direction)
      return
    }
    send()
  }

  private runDelayed(direction: "toHost" | "toGuest"): void {
    if (this.delayRunning[direction]) return
    this.delayRunning[direction] = true
    this.later(this.rngMessage() * this.config.messages.maxDelayMillis, () => {
      this.delayRunning[direction] = false
      const next = this.delayed[direction].shift()
      next?.()
      if (this.delayed[direction].length > 0) this.runDelayed(direction)
    })
  }

  holdMessages(tags: ReadonlyArray<string>): void {
    for (const tag of tags) this.holdTags.add(tag)
  }

  /** Stops holding and delivers every held message, in the order they were held. */
  releaseMessages(): number {
    this.holdTags.clear()
    const held = this.held.splice(0)
    for (const message of held) {
      this.record("messageReleased", undefined, message.tag)
      message.deliver()
    }
    return held.length
  }

  heldMessages(): ReadonlyArray<string> {
    return this.held.map((h) => h.tag)
  }

  // ----- shutdown ----------------------------------------------------------------------------

  /** Faults off, held and delayed messages delivered, timers cleared, running actions awaited. */
  readonly shutdown: Effect.Effect<void> = Effect.suspend(() => {
    this.enabled = false
    if (this.spurious !== undefined) clearInterval(this.spurious)
    this.releaseMessages()
    for (const direction of ["toHost", "toGuest"] as const) {
      for (const send of this.delayed[direction].splice(0)) send()
    }
    for (const run of this.reordered.splice(0)) run()
    for (const timer of this.timers) clearTimeout(timer)
    this.timers.clear()
    return Fiber.awaitAll(Array.from(this.actions))
  })
}

// Random scenarios for the simulation suite: one seed gives one scenario, the same on every run.
import type * as FaultInjectingTransport from "../../../src/FaultInjectingTransport.js"

/** mulberry32: small, fast, good enough to pick scenarios. */
export class Rng {
  private state: number
  constructor(seed: number) {
    this.state = (seed ^ 0x5bd1e995) >>> 0
  }
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0
    let t = this.state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  int(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1))
  }
  chance(p: number): boolean {
    return this.next() < p
  }
  pick<A>(items: ReadonlyArray<A>): A {
    return items[Math.floor(this.next() * items.length)]!
  }
}

export const OUTCOMES = ["success", "fail", "defect", "interrupt", "never", "completeTwice", "failPacket", "closeFromHandler"] as const
export type Outcome = typeof OUTCOMES[number]

export const ACTIONS = [
  "pauseClient",
  "pauseServer",
  "closeClient",
  "closeServer",
  "rescind",
  "killClient",
  "killServer",
  "corruptRing",
  "stallServerReader",
  "holdGpadlCreated"
] as const
export type Action = typeof ACTIONS[number]

export type RequestKind = "inband" | "external" | "gpadl"
export type Consumer = "serve" | "take" | "packets"

/**
 * Features a run can leave out (`--exclude`), e.g. while the fix for a known defect is not merged yet.
 * Every outcome, action, request kind and consumer style is one; so are the fault families.
 */
export type Feature =
  | Outcome
  | Action
  | RequestKind
  | Consumer
  | "signalFaults"
  | "messageFaults"
  | "readerStalls"
  | "serverSends"
  | "smallRings"
  | "timeouts"
  /** `closeFromHandler` under a `serve` consumer only (defect 7). */
  | "closeFromServeHandler"
  /** Pauses and closes while a request with external data is pending (defect 1). */
  | "externalWithLifecycle"

export interface RequestPlan {
  readonly index: number
  readonly delayMillis: number
  readonly kind: RequestKind
  readonly outcome: Outcome
  readonly handlerMillis: number
  readonly timeoutMillis: number | undefined
  /** External data: close the buffer's own scope right after the request is written (the transaction pins it). */
  readonly releaseBufferEarly: boolean
  readonly size: number
}

export interface ActionPlan {
  readonly atMillis: number
  readonly action: Action
  readonly millis: number
}

export interface Scenario {
  readonly seed: number
  readonly consumer: Consumer
  readonly workers: number
  readonly server: {
    readonly drainTimeoutMillis: number
    readonly transactionQuota: number
  }
  readonly client: {
    readonly outgoingRingPages: number
    readonly incomingRingPages: number
    readonly transactionQuota: number
  }
  readonly faults: FaultInjectingTransport.FaultConfigInput
  readonly requests: ReadonlyArray<RequestPlan>
  readonly actions: ReadonlyArray<ActionPlan>
  readonly serverSends: number
  readonly closeOrder: "clientFirst" | "serverFirst" | "together"
}

export interface GenerateOptions {
  readonly exclude?: ReadonlySet<Feature> | undefined
  readonly maxRequests?: number | undefined
}

export const generate = (seed: number, options: GenerateOptions = {}): Scenario => {
  const rng = new Rng(seed)
  const excluded = options.exclude ?? new Set<Feature>()
  const allowed = <A extends Feature>(items: ReadonlyArray<A>): ReadonlyArray<A> => items.filter((i) => !excluded.has(i))
  const consumers = allowed<Consumer>(["serve", "take", "packets"])
  const consumer: Consumer = rng.pick(consumers.length > 0 ? consumers : ["serve" as const])
  const small = !excluded.has("smallRings") && rng.chance(0.3)
  let outcomes = allowed(OUTCOMES)
  if (consumer === "serve" && excluded.has("closeFromServeHandler")) outcomes = outcomes.filter((o) => o !== "closeFromHandler")
  if (outcomes.length === 0) outcomes = ["success"]
  const kinds = allowed<RequestKind>(["inband", "external", "gpadl"])
  const weightedOutcome = (): Outcome => {
    // Mostly ordinary outcomes; the disruptive ones rarely, so most requests see a live channel.
    const r = rng.next()
    const common: ReadonlyArray<Outcome> = outcomes.filter((o) =>
      o === "success" || o === "fail" || o === "defect" || o === "completeTwice"
    )
    const rare = outcomes.filter((o) => !common.includes(o))
    if (rare.length === 0 || (common.length > 0 && r < 0.9)) return rng.pick(common.length > 0 ? common : rare)
    if (rng.chance(0.5)) {
      const soft = rare.filter((o) => o === "interrupt" || o === "never")
      if (soft.length > 0) return rng.pick(soft)
    }
    return rng.pick(rare)
  }
  const count = rng.int(1, options.maxRequests ?? 24)
  const requests: Array<RequestPlan> = []
  for (let index = 0; index < count; index++) {
    requests.push({
      index,
      delayMillis: rng.chance(0.5) ? 0 : rng.int(0, 20),
      kind: kinds.length === 0 ? "inband" : rng.chance(0.6) ? "inband" : rng.pick(kinds),
      outcome: weightedOutcome(),
      handlerMillis: rng.chance(0.6) ? 0 : rng.int(0, 15),
      timeoutMillis: !excluded.has("timeouts") && rng.chance(0.2) ? rng.int(1, 40) : undefined,
      releaseBufferEarly: rng.chance(0.5),
      size: rng.pick([8, 16, 64, 256, small ? 900 : 2000])
    })
  }
  const actions: Array<ActionPlan> = []
  const possible = allowed(ACTIONS)
  const actionCount = possible.length === 0 ? 0 : rng.pick([0, 0, 1, 1, 2, 3])
  for (let i = 0; i < actionCount; i++) {
    actions.push({ atMillis: rng.int(0, 40), action: rng.pick(possible), millis: rng.int(1, 30) })
  }
  const hasExternalLifecycle = actions.some((a) => a.action !== "corruptRing" && a.action !== "stallServerReader" && a.action !== "holdGpadlCreated")
  const finalRequests = excluded.has("externalWithLifecycle") && hasExternalLifecycle
    ? requests.map((r) => (r.kind === "external" ? { ...r, kind: "inband" as const } : r))
    : requests
  const faults: FaultInjectingTransport.FaultConfigInput = {
    seed,
    signals: !excluded.has("signalFaults") && rng.chance(0.7)
      ? {
        drop: rng.pick([0, 0.05, 0.3]),
        duplicate: rng.pick([0, 0.1, 0.3]),
        delay: rng.pick([0, 0.1, 0.3]),
        reorder: rng.pick([0, 0.1]),
        maxDelayMillis: rng.pick([0, 1, 3]),
        spuriousEveryMillis: rng.pick([1, 2, 5])
      }
      : { spuriousEveryMillis: 5 },
    messages: !excluded.has("messageFaults") && rng.chance(0.5)
      ? { delay: rng.pick([0.1, 0.5]), maxDelayMillis: rng.pick([1, 3]) }
      : {},
    readers: !excluded.has("readerStalls") && rng.chance(0.3) ? { stall: rng.pick([0.05, 0.2]), maxStallMillis: rng.pick([1, 5]) } : {}
  }
  return {
    seed,
    consumer,
    workers: rng.int(1, 4),
    server: { drainTimeoutMillis: rng.pick([5, 20, 60]), transactionQuota: rng.pick([1, 2, 8, 64]) },
    client: {
      outgoingRingPages: small ? 2 : rng.pick([4, 16]),
      incomingRingPages: small ? 2 : rng.pick([4, 16]),
      transactionQuota: rng.pick([1, 4, 64])
    },
    faults,
    requests: finalRequests,
    actions,
    serverSends: excluded.has("serverSends") ? 0 : rng.pick([0, 0, 3, 20]),
    closeOrder: rng.pick(["clientFirst", "serverFirst", "together"] as const)
  }
}

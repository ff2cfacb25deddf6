// Doorbell words of the shared-memory transport and how a thread waits for them. A doorbell is an
// Int32 word: the ringer does `Atomics.add` + `Atomics.notify`; the receiver's `Watcher` runs the
// endpoint's signal callback once per change it sees (rings between two looks coalesce, none is lost:
// it always waits on the last value it saw). How it waits for the next change is the `WaitOptions`:
// - by default `Atomics.waitAsync` (the event loop stays free; a wake-up costs tens of µs);
// - `spinMicros`: after the work of a wake-up, poll the word for a while first (adaptive, see `Watcher.spin`);
// - `blockMillis` (worker threads): a `Blocker` parks the whole thread in `Atomics.wait` on a summary word
//   that every ringer of this direction bumps while the flag word says a thread blocks on it.
// The buffer holds two words per channel slot (`[2 * slot]` to host, `[2 * slot + 1]` to guest) and
// four more at the end: the summary word of each direction, then the "blocking" flag of each direction.
import { isMainThread } from "node:worker_threads"
import { InvalidParameter } from "../VmbusError.js"

/** How a thread waits for its doorbells (see the public `SharedMemoryTransport.WaitOptions`). */
export interface WaitOptions {
  readonly spinMicros?: number | undefined
  readonly blockMillis?: number | undefined
}

/** `WaitOptions` validated, defaults applied. */
export interface WaitConfig {
  readonly spinMicros: number
  readonly blockMillis: number
}

export const MAX_SPIN_MICROS = 1000
export const MAX_BLOCK_MILLIS = 50
/** A timed-out spin halves the budget; below this it is 0 (park at once). */
const MIN_SPIN_MICROS = 1
/** With the budget at 0, one spin at the full budget every this many parks: the peer may have got faster. */
const PROBE_AFTER_PARKS = 64
/** The first `Atomics.wait` after a wake-up; idle rounds double it up to `blockMillis`. */
const FIRST_BLOCK_MILLIS = 1

/** Words past the channel slots: summary to host, summary to guest, host blocks, guest blocks. */
export const EXTRA_WORDS = 4

export type Direction = 0 | 1
export const TO_HOST: Direction = 0
export const TO_GUEST: Direction = 1

export const doorbellBytes = (maxChannels: number): number => 4 * (2 * maxChannels + EXTRA_WORDS)
export const slotCount = (words: Int32Array): number => Math.max(0, (words.length - EXTRA_WORDS) >> 1)
export const channelWord = (slot: number, direction: Direction): number => 2 * slot + direction
const summaryWord = (words: Int32Array, direction: Direction): number => words.length - EXTRA_WORDS + direction
const flagWord = (words: Int32Array, direction: Direction): number => words.length - EXTRA_WORDS + 2 + direction

/** Validated options, or the first bad field. */
export const validateWaitOptions = (options: WaitOptions | undefined): InvalidParameter | WaitConfig => {
  const spinMicros = options?.spinMicros ?? 0
  const blockMillis = options?.blockMillis ?? 0
  if (typeof spinMicros !== "number" || !Number.isFinite(spinMicros) || spinMicros < 0 || spinMicros > MAX_SPIN_MICROS) {
    return new InvalidParameter({ field: "spinMicros", reason: `must be a number in 0..${MAX_SPIN_MICROS}`, value: spinMicros })
  }
  if (typeof blockMillis !== "number" || !Number.isFinite(blockMillis) || blockMillis < 0 || blockMillis > MAX_BLOCK_MILLIS) {
    return new InvalidParameter({ field: "blockMillis", reason: `must be a number in 0..${MAX_BLOCK_MILLIS}`, value: blockMillis })
  }
  if (blockMillis > 0 && isMainThread) {
    return new InvalidParameter({
      field: "blockMillis",
      reason: "Atomics.wait blocks the thread: allowed in a worker thread only, not on the main thread",
      value: blockMillis
    })
  }
  return { spinMicros, blockMillis }
}

type WaitAsync = (
  array: Int32Array,
  index: number,
  value: number
) => { readonly async: false; readonly value: "not-equal" | "timed-out" } | {
  readonly async: true
  readonly value: Promise<"ok" | "timed-out">
}

// ES2024 (Node ≥ 16); not in the ES2022 lib this project compiles against.
const waitAsync: WaitAsync = (Atomics as unknown as { readonly waitAsync: WaitAsync }).waitAsync

/** Rings the doorbell `slot` in `direction`; bumps the direction's summary word if its thread blocks on it. */
export const ring = (words: Int32Array, slot: number, direction: Direction): void => {
  const index = channelWord(slot, direction)
  Atomics.add(words, index, 1)
  Atomics.notify(words, index)
  // Sequentially consistent: either this load sees the flag, or the blocker's look at the channel words
  // (after it set the flag) sees the add above.
  if (Atomics.load(words, flagWord(words, direction)) !== 0) {
    const summary = summaryWord(words, direction)
    Atomics.add(words, summary, 1)
    Atomics.notify(words, summary)
  }
}

/** One side's way of waiting, shared by the watchers of the doorbells rung towards it. */
export class Waiter {
  private blocker: Blocker | undefined = undefined
  constructor(
    readonly words: Int32Array,
    readonly direction: Direction,
    readonly options: WaitConfig
  ) {}

  watch(slot: number, seen: number, callback: () => void): Watcher {
    return new Watcher(this, channelWord(slot, this.direction), seen, callback)
  }

  /** Blocking mode: `watcher` has nothing to do until its word changes. */
  park(watcher: Watcher): void {
    this.blocker ??= new Blocker(this.words, this.direction, this.options.blockMillis)
    this.blocker.park(watcher)
  }

  unpark(watcher: Watcher): void {
    this.blocker?.unpark(watcher)
  }
}

/**
 * Watches one doorbell word: runs `callback` once per wake-up that saw the word change since the last
 * value observed (starting from `seen`). `stop` ends the loop and wakes the pending wait so it settles.
 */
export class Watcher {
  private stopped = false
  private started = false
  /** Current spin budget (µs): adapted between 0 and `spinMicros`. */
  private budget: number
  private probing = false
  private parksAtZero = 0
  private immediate: ReturnType<typeof setImmediate> | undefined = undefined

  constructor(
    private readonly waiter: Waiter,
    private readonly index: number,
    private seen: number,
    private readonly callback: () => void
  ) {
    this.budget = waiter.options.spinMicros
  }

  start(): void {
    if (this.started) return
    this.started = true
    this.loop()
  }

  stop(): void {
    if (this.stopped) return
    this.stopped = true
    if (this.immediate !== undefined) clearImmediate(this.immediate)
    this.immediate = undefined
    this.waiter.unpark(this)
    Atomics.notify(this.waiter.words, this.index)
  }

  /** The word moved since the callback last ran. */
  changed(): boolean {
    return Atomics.load(this.waiter.words, this.index) !== this.seen
  }

  readonly loop = (): void => {
    const words = this.waiter.words
    while (!this.stopped) {
      const current = Atomics.load(words, this.index)
      if (current !== this.seen) {
        this.seen = current
        try {
          this.callback()
        } catch {
          // A throwing callback must not stop the signals of this channel (nor reject an unhandled promise).
        }
        if (this.waiter.options.spinMicros > 0 && !this.stopped) {
          // Not here: first the microtasks and fibers this wake-up resumed run (they answer the peer).
          this.immediate = setImmediate(this.spin)
          return
        }
        continue
      }
      if (this.waiter.options.blockMillis > 0) return this.waiter.park(this)
      const result = waitAsync(words, this.index, current)
      if (result.async) {
        result.value.then(this.loop, this.loop)
        return
      }
    }
  }

  /**
   * Polls the word for up to the budget before parking. A spin that finds a ring doubles the budget (up
   * to `spinMicros`); one that times out halves it (to 0 below 1 µs, then one probe at the full budget
   * every 64 parks, given up at its first time-out): on a busy machine spinning only steals the peer's core.
   */
  private readonly spin = (): void => {
    this.immediate = undefined
    if (this.stopped) return
    const words = this.waiter.words
    const index = this.index
    const seen = this.seen
    if (this.budget === 0 && ++this.parksAtZero >= PROBE_AFTER_PARKS) {
      this.parksAtZero = 0
      this.probing = true
      this.budget = this.waiter.options.spinMicros
    }
    if (this.budget > 0 && Atomics.load(words, index) === seen) {
      const deadline = performance.now() + this.budget / 1000
      let found = false
      do {
        // The clock costs far more than a load: look at the word a few times per reading.
        for (let i = 0; i < 32; i++) {
          if (Atomics.load(words, index) !== seen) {
            found = true
            break
          }
        }
      } while (!found && performance.now() < deadline)
      if (found) {
        this.probing = false
        this.budget = Math.min(this.waiter.options.spinMicros, this.budget * 2)
      } else {
        const half = this.budget / 2
        this.budget = this.probing || half < MIN_SPIN_MICROS ? 0 : half
        this.probing = false
      }
    }
    this.loop()
  }
}

/**
 * Blocking mode of one side: while some of its watchers are parked, the thread blocks in
 * `Atomics.wait` on the direction's summary word, for `FIRST_BLOCK_MILLIS` after a wake-up and up to
 * `blockMillis` while idle, then goes back to the event loop (`setImmediate`) so timers and messages run.
 * The pending immediate also keeps the thread alive while a channel waits.
 */
class Blocker {
  private readonly parked = new Set<Watcher>()
  private immediate: ReturnType<typeof setImmediate> | undefined = undefined
  private timeout = FIRST_BLOCK_MILLIS
  private readonly summary: number
  private readonly flag: number

  constructor(private readonly words: Int32Array, direction: Direction, private readonly blockMillis: number) {
    this.summary = summaryWord(words, direction)
    this.flag = flagWord(words, direction)
  }

  park(watcher: Watcher): void {
    this.parked.add(watcher)
    this.immediate ??= setImmediate(this.round)
  }

  unpark(watcher: Watcher): void {
    this.parked.delete(watcher)
    if (this.parked.size === 0 && this.immediate !== undefined) {
      clearImmediate(this.immediate)
      this.immediate = undefined
    }
  }

  private anyChanged(): boolean {
    for (const watcher of this.parked) if (watcher.changed()) return true
    return false
  }

  private readonly round = (): void => {
    this.immediate = undefined
    if (this.parked.size === 0) return
    Atomics.store(this.words, this.flag, 1)
    const summary = Atomics.load(this.words, this.summary)
    let woke = this.anyChanged()
    if (!woke) woke = Atomics.wait(this.words, this.summary, summary, Math.min(this.timeout, this.blockMillis)) !== "timed-out"
    Atomics.store(this.words, this.flag, 0)
    this.timeout = woke ? FIRST_BLOCK_MILLIS : Math.min(this.blockMillis, this.timeout * 2)
    for (const watcher of this.parked) {
      if (watcher.changed()) {
        this.parked.delete(watcher)
        watcher.loop()
      }
    }
    if (this.parked.size > 0) this.immediate ??= setImmediate(this.round)
  }
}

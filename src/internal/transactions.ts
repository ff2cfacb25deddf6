// The transaction table of one channel: ids (a per-open counter from 1, never reused), the waiter of
// each request and what the request holds (pinned guest memory). One owner: an entry's `free` runs
// exactly once, when its id is freed — its completion arrived, it never reached the ring, or its open
// period ended AND the host side can no longer reach the pages (`releaseEnded`, after the transport's
// close). A pause fails the waiters but keeps the ids: a late completion then frees its entry silently.
// A waiter is a plain resumer (`Effect.async`), no Deferred: settling a request costs one call.
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import { ChannelClosed, type CloseReason, TooManyTransactions } from "../VmbusError.js"

export interface Transaction {
  readonly id: bigint
}

interface Entry extends Transaction {
  /** Releases what the request holds; run once, when the id is freed. */
  readonly free: () => void
  /** The waiter was failed (pause) or left (interrupted): a completion still frees the entry, silently. */
  abandoned: boolean
  /** The outcome, once known (the waiter may come after it). */
  result: Exit.Exit<Uint8Array, ChannelClosed> | undefined
  /** The waiting request's resumer, while it waits. */
  resume: ((effect: Effect.Effect<Uint8Array, ChannelClosed>) => void) | undefined
}

/** Settles an entry's waiter once: the first outcome wins. */
const settle = (entry: Entry, exit: Exit.Exit<Uint8Array, ChannelClosed>): void => {
  if (entry.result !== undefined) return
  entry.result = exit
  const resume = entry.resume
  if (resume !== undefined) {
    entry.resume = undefined
    resume(exit)
  }
}

/** What a completion packet meant to the table. */
export type CompletionOutcome = "settled" | "late" | "duplicate" | "unknown"

export class TransactionTable {
  private nextId = 1n
  private readonly pending = new Map<bigint, Entry>()
  /** Entries of an ended open period: waiters failed, resources kept until the host cannot reach them. */
  private ended: Array<Entry> = []

  constructor(
    private readonly limit: number,
    /** Told the number of ids in use after every change. */
    private readonly changed: (size: number) => void
  ) {}

  /** Ids in use (requests sent, or being sent, whose completion has not arrived). */
  get size(): number {
    return this.pending.size
  }

  /** Entries still holding resources after their open period ended. */
  get endedCount(): number {
    return this.ended.length
  }

  reserve(free: () => void): Transaction | TooManyTransactions {
    if (this.pending.size >= this.limit) return new TooManyTransactions({ limit: this.limit })
    const entry: Entry = { id: this.nextId++, free, abandoned: false, result: undefined, resume: undefined }
    this.pending.set(entry.id, entry)
    this.changed(this.pending.size)
    return entry
  }

  complete(id: bigint, payload: Uint8Array): CompletionOutcome {
    const entry = id === 0n ? undefined : this.pending.get(id)
    if (entry === undefined) return id !== 0n && id < this.nextId ? "duplicate" : "unknown"
    this.pending.delete(id)
    this.changed(this.pending.size)
    if (!entry.abandoned) settle(entry, Exit.succeed(payload))
    entry.free()
    return entry.abandoned ? "late" : "settled"
  }

  /**
   * Waits for the transaction's outcome. An interruption stops only the wait: the id is marked
   * abandoned and stays reserved until its completion arrives or the open period ends (C8).
   */
  await(transaction: Transaction): Effect.Effect<Uint8Array, ChannelClosed> {
    const entry = transaction as Entry
    if (entry.result !== undefined) return entry.result
    return Effect.async<Uint8Array, ChannelClosed>((resume) => {
      if (entry.result !== undefined) return resume(entry.result)
      entry.resume = resume
      return Effect.sync(() => {
        if (entry.resume !== resume) return
        entry.resume = undefined
        entry.abandoned = true
      })
    })
  }

  /** The request never reached the ring: nothing can complete it or reach its pages, so free it now. */
  cancel(transaction: Transaction): void {
    const entry = transaction as Entry
    if (this.pending.get(entry.id) === entry) {
      this.pending.delete(entry.id)
      this.changed(this.pending.size)
    } else {
      const at = this.ended.indexOf(entry)
      if (at < 0) return
      this.ended.splice(at, 1)
    }
    entry.free()
  }

  /** Pause: the waiters fail with `ChannelClosed`; ids and resources stay until the completions arrive. */
  abandonAll(reason: CloseReason): void {
    const failure = new ChannelClosed({ reason })
    for (const entry of this.pending.values()) {
      if (entry.abandoned) continue
      entry.abandoned = true
      settle(entry, Exit.fail(failure))
    }
  }

  /**
   * The open period ended: every waiter fails with `ChannelClosed{ reason }` and no completion can
   * come any more; the resources stay held until `releaseEnded`.
   */
  endPeriod(reason: CloseReason): void {
    const failure = new ChannelClosed({ reason })
    for (const entry of this.pending.values()) {
      if (!entry.abandoned) settle(entry, Exit.fail(failure))
      entry.abandoned = true
      this.ended.push(entry)
    }
    this.pending.clear()
    this.changed(0)
  }

  /** The host side can no longer reach the pages (the transport closed the endpoint): free them. */
  releaseEnded(): void {
    const ended = this.ended
    this.ended = []
    for (const entry of ended) entry.free()
  }
}

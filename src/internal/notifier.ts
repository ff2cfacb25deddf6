// Wake-up primitives shared by the channel and the transports. Synchronous to notify (callable from
// any callback), an Effect to wait. A generation number closes the window between "checked and found
// nothing" and "started waiting": a waiter that saw generation g returns at once if it moved on.
import * as Effect from "effect/Effect"

export class Notifier {
  private generation = 0
  private waiters: Array<(effect: Effect.Effect<void>) => void> = []

  /** The generation to pass to `waitAfter` once the condition was checked and found false. */
  get current(): number {
    return this.generation
  }

  notifyAll(): void {
    this.generation++
    if (this.waiters.length === 0) return
    const waiters = this.waiters
    this.waiters = []
    for (const resume of waiters) resume(Effect.void)
  }

  /** Suspends until `notifyAll` runs after generation `seen` (returns at once if it already has). */
  waitAfter(seen: number): Effect.Effect<void> {
    return Effect.async<void>((resume) => {
      if (this.generation !== seen) {
        resume(Effect.void)
        return
      }
      this.waiters.push(resume)
      return Effect.sync(() => {
        const i = this.waiters.indexOf(resume)
        if (i >= 0) this.waiters.splice(i, 1)
      })
    })
  }
}

/** A latch with one waiter: a ring while nobody waits is remembered until the next wait. */
export class Doorbell {
  private pending = false
  private waiter: ((effect: Effect.Effect<void>) => void) | undefined = undefined

  ring(): void {
    const waiter = this.waiter
    if (waiter !== undefined) {
      this.waiter = undefined
      waiter(Effect.void)
    } else {
      this.pending = true
    }
  }

  readonly wait: Effect.Effect<void> = Effect.async<void>((resume) => {
    if (this.pending) {
      this.pending = false
      resume(Effect.void)
      return
    }
    this.waiter = resume
    return Effect.sync(() => {
      if (this.waiter === resume) this.waiter = undefined
    })
  })
}

/**
 * Waiters woken one at a time (a packet for one worker), or all at once (the channel closed). The
 * readiness check runs inside the registration, so no wake-up falls between check and wait.
 */
export class WaitQueue {
  private waiters: Array<(effect: Effect.Effect<void>) => void> = []

  /** Waiters registered now. */
  get size(): number {
    return this.waiters.length
  }

  wakeOne(): void {
    const resume = this.waiters.shift()
    if (resume !== undefined) resume(Effect.void)
  }

  wakeAll(): void {
    if (this.waiters.length === 0) return
    const waiters = this.waiters
    this.waiters = []
    for (const resume of waiters) resume(Effect.void)
  }

  /**
   * Returns at once if `ready()`; otherwise suspends until woken. A waiter woken by `wakeOne` and then
   * interrupted before it could act hands the wake-up to the next waiter, or what it was woken for
   * would wait for a later wake-up that may never come.
   */
  waitUntil(ready: () => boolean): Effect.Effect<void> {
    return Effect.uninterruptibleMask((restore) => {
      let woken = false
      const wait = Effect.async<void>((resume) => {
        if (ready()) {
          resume(Effect.void)
          return
        }
        const wake = (effect: Effect.Effect<void>): void => {
          woken = true
          resume(effect)
        }
        this.waiters.push(wake)
        return Effect.sync(() => {
          const i = this.waiters.indexOf(wake)
          if (i >= 0) this.waiters.splice(i, 1)
        })
      })
      return Effect.onInterrupt(restore(wait), () =>
        Effect.sync(() => {
          if (woken && ready()) this.wakeOne()
        }))
    })
  }
}

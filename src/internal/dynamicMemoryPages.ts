// Where ballooned pages come from. A balloon response must name pages the guest really set aside;
// `BalloonPages` is that source. Each reservation is one chunk (Linux takes 2 MiB, then 4 KiB pages)
// that can be given back page range by page range; what it still holds is released when it is closed.
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import * as GuestMemory from "../GuestMemory.js"
import type { PageRange } from "./dynamicMemoryMessages.js"
import { rangesOfPfns } from "./dynamicMemoryMessages.js"

export interface Reservation {
  /** The pages set aside, as PFN ranges. */
  readonly ranges: ReadonlyArray<PageRange>
  /** How many pages were set aside. */
  readonly pages: number
  /** Pages still held (not yet given back). */
  readonly held: () => number
  /** The PFNs still held. */
  readonly heldPfns: () => ReadonlyArray<number>
  /** Gives back the held pages inside `range`; returns how many pages that was. Never fails. */
  readonly release: (range: PageRange) => Effect.Effect<number>
  /** Gives back everything still held. Never fails; a second call does nothing. */
  readonly releaseAll: Effect.Effect<void>
}

export interface BalloonPagesShape {
  /** What the pages are (for reports): e.g. "guest-memory" or "process-anonymous". */
  readonly kind: string
  /**
   * Sets aside at most `pages` pages (fewer when memory runs short), or `undefined` when not even one
   * page can be set aside. The caller owns the reservation and must release it.
   */
  readonly reserve: (pages: number) => Effect.Effect<Reservation | undefined>
  /** Pages currently set aside by every live reservation of this source. */
  readonly heldPages: Effect.Effect<number>
}

export class BalloonPages extends Context.Tag("effect-vmbus/DynamicMemory/BalloonPages")<BalloonPages, BalloonPagesShape>() {}

/** Tracks which pages of a set of PFNs are still held; `onEmpty` runs once when none is left. */
export const pageTracker = (pfns: ReadonlyArray<number>, onEmpty: Effect.Effect<void>) => {
  const held = new Set(pfns)
  let done = false
  const finish = Effect.suspend(() => {
    if (done) return Effect.void
    done = true
    held.clear()
    return onEmpty
  })
  return {
    held: () => held.size,
    heldPfns: () => [...held],
    /** Gives back the held pages inside `range`; returns the PFNs that were given back. */
    releasePfns: (range: PageRange): Effect.Effect<ReadonlyArray<number>> =>
      Effect.suspend(() => {
        const released: Array<number> = []
        // Iterate the smaller side: a host range can be huge, a reservation is at most one chunk.
        if (range.pageCount > held.size) {
          for (const pfn of held) {
            if (pfn >= range.startPage && pfn < range.startPage + range.pageCount) released.push(pfn)
          }
          for (const pfn of released) held.delete(pfn)
        } else {
          for (let pfn = range.startPage; pfn < range.startPage + range.pageCount; pfn++) if (held.delete(pfn)) released.push(pfn)
        }
        return held.size === 0 && released.length > 0 ? Effect.as(finish, released) : Effect.succeed(released)
      }),
    releaseAll: finish
  }
}

/**
 * Pages from {@link GuestMemory}: each reservation is one contiguous allocation (at most `chunkPages`,
 * halved down to one page when memory is short). GuestMemory frees whole allocations, so a chunk goes
 * back to the allocator when its last page is given back (or at `releaseAll`).
 */
export const fromGuestMemory = (
  memory: GuestMemory.GuestMemoryShape,
  options: { readonly chunkPages?: number | undefined } = {}
): BalloonPagesShape => {
  const chunkPages = Math.max(1, options.chunkPages ?? 512)
  let heldTotal = 0
  const tryAllocate = (pages: number): Effect.Effect<Reservation | undefined> =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const result = yield* Effect.exit(Scope.extend(memory.allocate(pages), scope))
      if (Exit.isFailure(result)) {
        yield* Scope.close(scope, Exit.void)
        return pages > 1 ? yield* tryAllocate(Math.floor(pages / 2)) : undefined
      }
      const buffer = result.value
      heldTotal += pages
      const tracker = pageTracker(buffer.pfns, Scope.close(scope, Exit.void))
      return {
        ranges: [{ startPage: buffer.firstPfn, pageCount: pages }],
        pages,
        held: tracker.held,
        heldPfns: tracker.heldPfns,
        release: (range) =>
          Effect.map(tracker.releasePfns(range), (released) => {
            heldTotal -= released.length
            return released.length
          }),
        releaseAll: Effect.suspend(() => {
          heldTotal -= tracker.held()
          return tracker.releaseAll
        })
      } satisfies Reservation
    })
  return {
    kind: "guest-memory",
    reserve: (pages) => pages < 1 ? Effect.succeed(undefined) : tryAllocate(Math.min(pages, chunkPages)),
    heldPages: Effect.sync(() => heldTotal)
  }
}

/** {@link fromGuestMemory} on the `GuestMemory` of the environment. */
export const layerGuestMemory = (
  options: { readonly chunkPages?: number | undefined } = {}
): Layer.Layer<BalloonPages, never, GuestMemory.GuestMemory> =>
  Layer.effect(BalloonPages, Effect.map(GuestMemory.GuestMemory, (memory) => fromGuestMemory(memory, options)))

export { rangesOfPfns }

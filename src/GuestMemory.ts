/**
 * Guest memory: 4 KiB pages named by page frame numbers (PFNs), the memory GPADLs describe. The guest
 * side allocates scoped, zeroed, contiguous page runs (`allocate`); the host side reads and writes by
 * PFN list (`read`, `write`) or takes zero-copy views (`pageView`, `contiguousView`). Every host-side
 * access checks that each PFN lies inside guest memory and is currently allocated.
 *
 * `layerMemory` keeps all pages in one `SharedArrayBuffer`, so worker threads can share it.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Predicate from "effect/Predicate"
import type * as Scope from "effect/Scope"
import * as internal from "./internal/guestMemory.js"
import type { InvalidParameter, OutOfMemory } from "./VmbusError.js"

/**
 * Brands `GuestMemoryShape` values (see `isGuestMemory`).
 *
 * @since 0.1.0
 * @category symbols
 */
export const TypeId: internal.TypeId = internal.TypeId

/**
 * @since 0.1.0
 * @category symbols
 */
export type TypeId = internal.TypeId

/**
 * Size of a guest page (a Hyper-V page is always 4 KiB).
 *
 * @since 0.1.0
 * @category constants
 */
export const PAGE_SIZE: number = internal.PAGE_SIZE

/**
 * Default PFN of the first page, so that PFN 0 is never valid.
 *
 * @since 0.1.0
 * @category constants
 */
export const DEFAULT_BASE_PFN: number = internal.DEFAULT_BASE_PFN

/**
 * A scoped allocation of `pages` contiguous pages: `pfns` is the page list a GPADL describes
 * (`firstPfn`, `firstPfn + 1`, …) and `bytes` a view of them. The pages are zeroed on allocation and
 * return to the free pool when the allocating scope closes; do not use `bytes` after that.
 *
 * @since 0.1.0
 * @category models
 */
export interface GuestBuffer extends internal.GuestBuffer {}

/**
 * The guest-memory service.
 *
 * - `allocate(pages)` — a scoped run of zeroed pages; `InvalidParameter` for a count that is not a
 *   positive integer, `OutOfMemory` when no free run is long enough.
 * - `read(pfns, byteOffset, length)` / `write(pfns, byteOffset, data)` — copy out of / into the pages
 *   listed, starting `byteOffset` bytes into the first; `readSync` / `writeSync` are the synchronous
 *   forms. `InvalidMemoryRange` when a PFN is outside guest memory or free, or the range runs past
 *   the list.
 * - `pageView(pfn)` — the 4096 bytes of one allocated page, zero-copy.
 * - `contiguousView(pfns, byteOffset, length)` — a zero-copy view when the PFNs are consecutive (as
 *   for any `GuestBuffer`, and so any ring GPADL).
 * - `pin(buffer)` / `pinRange(pfns)` — keep allocations alive past their scope (a transaction or a
 *   GPADL owns the pin); `isLive(buffer)` — whether the buffer's scope is still open.
 * - `freePages`, `allocatedPages`, `largestFreeRun`, `pinnedBuffers` — statistics, for leak checks.
 *
 * @since 0.1.0
 * @category models
 */
export interface GuestMemoryShape extends internal.GuestMemoryShape {}

/**
 * The guest memory service: pages shared between guest and host, named by page frame numbers.
 * `InMemoryTransport.layer` provides it.
 *
 * @since 0.1.0
 * @category tags
 */
export class GuestMemory extends Context.Tag("effect-vmbus/GuestMemory")<GuestMemory, GuestMemoryShape>() {}

/**
 * Tells whether a value is a guest memory.
 *
 * @since 0.1.0
 * @category refinements
 */
export const isGuestMemory = (u: unknown): u is GuestMemoryShape => Predicate.hasProperty(u, TypeId)

/**
 * Options of `make`: the size of guest memory and its first PFN.
 *
 * @since 0.1.0
 * @category models
 */
export interface MakeOptions {
  /** Number of 4 KiB pages of guest memory. */
  readonly pages: number
  /** PFN of the first page (default `DEFAULT_BASE_PFN`). */
  readonly basePfn?: number | undefined
}

/**
 * Creates in-memory guest memory of `pages` pages over one `SharedArrayBuffer`, PFNs
 * `[basePfn, basePfn + pages)`. `InvalidParameter` for a bad page count or base, `OutOfMemory` when
 * the buffer cannot be allocated.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: (options: MakeOptions) => Effect.Effect<GuestMemoryShape, InvalidParameter | OutOfMemory> =
  internal.make

/**
 * The in-memory `GuestMemory` implementation.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerMemory = (options: MakeOptions): Layer.Layer<GuestMemory, InvalidParameter | OutOfMemory> =>
  Layer.effect(GuestMemory, internal.make(options))

/**
 * Allocates from the `GuestMemory` in context.
 *
 * @since 0.1.0
 * @category accessors
 */
export const allocate = (
  pages: number
): Effect.Effect<GuestBuffer, OutOfMemory | InvalidParameter, GuestMemory | Scope.Scope> =>
  Effect.flatMap(GuestMemory, (memory) => memory.allocate(pages))

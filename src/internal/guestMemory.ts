// Guest memory in 4 KiB pages named by PFNs, over one SharedArrayBuffer. The allocator hands out
// contiguous runs (first fit over a sorted free list that coalesces on release); host-side access
// validates that every PFN is inside guest memory and currently allocated.
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import type * as Scope from "effect/Scope"
import { InvalidMemoryRange, InvalidParameter, OutOfMemory } from "../VmbusError.js"

export const PAGE_SIZE = 4096
export const DEFAULT_BASE_PFN = 0x100
/** PFNs are kept as numbers: 52 bits covers 4 KiB frames of a 64-bit physical address. */
export const MAX_PFN = 0xf_ffff_ffff_ffff

export const TypeId: unique symbol = Symbol.for("effect-vmbus/GuestMemory")
export type TypeId = typeof TypeId

export interface GuestBuffer {
  /** The page frame numbers of the buffer, in order. */
  readonly pfns: ReadonlyArray<number>
  /** The first page frame number (the pages are consecutive). */
  readonly firstPfn: number
  /** Number of 4 KiB pages. */
  readonly pages: number
  /** Length in bytes (`pages × 4096`). */
  readonly byteLength: number
  /** The buffer's bytes, a view on guest memory (no copy). */
  readonly bytes: Uint8Array
}

export interface GuestMemoryShape {
  readonly [TypeId]: TypeId
  /** The PFN of the first page of guest memory. */
  readonly basePfn: number
  /** The number of pages of guest memory. */
  readonly totalPages: number
  /** The memory itself; shared, so other threads can map the same pages. */
  readonly buffer: SharedArrayBuffer
  /**
   * Allocates a scoped run of zeroed consecutive pages, freed when the scope closes (or when the last pin is
   * released).
   */
  readonly allocate: (pages: number) => Effect.Effect<GuestBuffer, OutOfMemory | InvalidParameter, Scope.Scope>
  /** Copies `length` bytes out of the pages listed, starting `byteOffset` bytes into the first. */
  readonly read: (
    pfns: ReadonlyArray<number>,
    byteOffset: number,
    length: number
  ) => Effect.Effect<Uint8Array, InvalidMemoryRange>
  /** Copies `data` into the pages listed, starting `byteOffset` bytes into the first. */
  readonly write: (
    pfns: ReadonlyArray<number>,
    byteOffset: number,
    data: Uint8Array
  ) => Effect.Effect<void, InvalidMemoryRange>
  /** `read`, synchronously. */
  readonly readSync: (
    pfns: ReadonlyArray<number>,
    byteOffset: number,
    length: number
  ) => Either.Either<Uint8Array, InvalidMemoryRange>
  /** `write`, synchronously. */
  readonly writeSync: (
    pfns: ReadonlyArray<number>,
    byteOffset: number,
    data: Uint8Array
  ) => Either.Either<void, InvalidMemoryRange>
  /** The 4096 bytes of one allocated page, zero-copy. */
  readonly pageView: (pfn: number) => Either.Either<Uint8Array, InvalidMemoryRange>
  /** A zero-copy view of a range over consecutive PFNs; `InvalidMemoryRange` otherwise. */
  readonly contiguousView: (
    pfns: ReadonlyArray<number>,
    byteOffset: number,
    length: number
  ) => Either.Either<Uint8Array, InvalidMemoryRange>
  /** Whether a page is allocated. */
  readonly isAllocated: (pfn: number) => boolean
  /** Pages not allocated. */
  readonly freePages: Effect.Effect<number>
  /** Pages allocated. */
  readonly allocatedPages: Effect.Effect<number>
  /** The longest run of free consecutive pages (the largest allocation that can succeed). */
  readonly largestFreeRun: Effect.Effect<number>
  /**
   * Pins an allocation: if its scope closes while pinned, the pages are freed only when the last pin
   * is released. A transaction pins the buffers it carries until its completion arrives. A buffer whose
   * pages were already freed pins nothing (check `isLive` first: it is a caller's error).
   */
  readonly pin: (buffer: GuestBuffer) => () => void
  /** Whether `buffer` is a current allocation of this memory whose scope has not closed. */
  readonly isLive: (buffer: GuestBuffer) => boolean
  /**
   * Pins every live allocation the pages belong to (an explicit range, e.g. a sub-range of a buffer);
   * `InvalidMemoryRange` if a page is outside guest memory, free, or of an allocation already released.
   */
  readonly pinRange: (pfns: ReadonlyArray<number>) => Either.Either<() => void, InvalidMemoryRange>
  /** Allocations currently pinned (for leak checks). */
  readonly pinnedBuffers: Effect.Effect<number>
}

// ---------------------------------------------------------------------------------------------
// Allocator
// ---------------------------------------------------------------------------------------------

interface Run {
  start: number
  length: number
}

/** First-fit page allocator over page indices `[0, total)`; free runs are sorted and never adjacent. */
export class PageAllocator {
  readonly total: number
  readonly #runs: Array<Run>
  readonly #allocated: Uint8Array
  #free: number

  constructor(total: number) {
    this.total = total
    this.#runs = [{ start: 0, length: total }]
    this.#allocated = new Uint8Array(total)
    this.#free = total
  }

  get free(): number {
    return this.#free
  }

  get largestRun(): number {
    let max = 0
    for (const run of this.#runs) if (run.length > max) max = run.length
    return max
  }

  get runCount(): number {
    return this.#runs.length
  }

  isAllocated(index: number): boolean {
    return this.#allocated[index] === 1
  }

  /** Returns the first page index of a run of `pages`, or -1 when no free run is long enough. */
  allocate(pages: number): number {
    const runs = this.#runs
    for (let i = 0; i < runs.length; i++) {
      const run = runs[i]!
      if (run.length < pages) continue
      const start = run.start
      if (run.length === pages) runs.splice(i, 1)
      else {
        run.start += pages
        run.length -= pages
      }
      this.#allocated.fill(1, start, start + pages)
      this.#free -= pages
      return start
    }
    return -1
  }

  release(start: number, pages: number): void {
    const runs = this.#runs
    // first run that starts after the released one
    let lo = 0
    let hi = runs.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (runs[mid]!.start < start) lo = mid + 1
      else hi = mid
    }
    const prev = lo > 0 ? runs[lo - 1]! : undefined
    const next = lo < runs.length ? runs[lo]! : undefined
    const end = start + pages
    const joinsPrev = prev !== undefined && prev.start + prev.length === start
    const joinsNext = next !== undefined && next.start === end
    if (joinsPrev && joinsNext) {
      prev.length += pages + next.length
      runs.splice(lo, 1)
    } else if (joinsPrev) {
      prev.length += pages
    } else if (joinsNext) {
      next.start = start
      next.length += pages
    } else {
      runs.splice(lo, 0, { start, length: pages })
    }
    this.#allocated.fill(0, start, end)
    this.#free += pages
  }
}

// ---------------------------------------------------------------------------------------------
// Service
// ---------------------------------------------------------------------------------------------

export interface MakeOptions {
  readonly pages: number
  readonly basePfn?: number | undefined
}

const rangeError = (
  reason: string,
  fields: { readonly pfn?: number; readonly offset?: number; readonly length?: number } = {}
): Either.Either<never, InvalidMemoryRange> => Either.left(new InvalidMemoryRange({ reason, ...fields }))

export const unsafeMakeWith = (
  buffer: SharedArrayBuffer,
  totalPages: number,
  basePfn: number
): GuestMemoryShape => {
  const allocator = new PageAllocator(totalPages)
  const memory = new Uint8Array(buffer, 0, totalPages * PAGE_SIZE)

  /** Page index of an allocated PFN, or an error. */
  const pageIndex = (pfn: number): number | InvalidMemoryRange => {
    if (typeof pfn !== "number" || !Number.isSafeInteger(pfn)) {
      return new InvalidMemoryRange({ reason: `PFN ${String(pfn)} is not an integer` })
    }
    const index = pfn - basePfn
    if (index < 0 || index >= totalPages) {
      return new InvalidMemoryRange({
        reason: `PFN 0x${pfn.toString(16)} is outside guest memory [0x${basePfn.toString(16)}, 0x${
          (basePfn + totalPages).toString(16)
        })`,
        pfn
      })
    }
    if (!allocator.isAllocated(index)) {
      return new InvalidMemoryRange({ reason: `PFN 0x${pfn.toString(16)} is not allocated`, pfn })
    }
    return index
  }

  /** Validates a range access over a PFN list; returns the page indices. */
  const checkRange = (
    pfns: ReadonlyArray<number>,
    byteOffset: number,
    length: number
  ): Array<number> | InvalidMemoryRange => {
    if (!Number.isSafeInteger(byteOffset) || byteOffset < 0 || !Number.isSafeInteger(length) || length < 0) {
      return new InvalidMemoryRange({
        reason: "offset and length must be non-negative integers",
        offset: byteOffset,
        length
      })
    }
    if (byteOffset + length > pfns.length * PAGE_SIZE) {
      return new InvalidMemoryRange({
        reason: `${length} bytes at offset ${byteOffset} exceed ${pfns.length} pages`,
        offset: byteOffset,
        length
      })
    }
    const indices: Array<number> = new Array(pfns.length)
    for (let i = 0; i < pfns.length; i++) {
      const index = pageIndex(pfns[i]!)
      if (typeof index !== "number") return index
      indices[i] = index
    }
    return indices
  }

  /** Copies between guest pages and `data`; `toGuest` selects the direction. */
  const copy = (indices: ReadonlyArray<number>, byteOffset: number, data: Uint8Array, toGuest: boolean): void => {
    let done = 0
    let page = Math.floor(byteOffset / PAGE_SIZE)
    let within = byteOffset % PAGE_SIZE
    while (done < data.length) {
      const chunk = Math.min(PAGE_SIZE - within, data.length - done)
      const at = indices[page]! * PAGE_SIZE + within
      if (toGuest) memory.set(data.subarray(done, done + chunk), at)
      else data.set(memory.subarray(at, at + chunk), done)
      done += chunk
      page++
      within = 0
    }
  }

  const readSync = (
    pfns: ReadonlyArray<number>,
    byteOffset: number,
    length: number
  ): Either.Either<Uint8Array, InvalidMemoryRange> => {
    const indices = checkRange(pfns, byteOffset, length)
    if (!Array.isArray(indices)) return Either.left(indices)
    const out = new Uint8Array(length)
    copy(indices, byteOffset, out, false)
    return Either.right(out)
  }

  const writeSync = (
    pfns: ReadonlyArray<number>,
    byteOffset: number,
    data: Uint8Array
  ): Either.Either<void, InvalidMemoryRange> => {
    const indices = checkRange(pfns, byteOffset, data.length)
    if (!Array.isArray(indices)) return Either.left(indices)
    copy(indices, byteOffset, data, true)
    return Either.right(undefined)
  }

  const pageView = (pfn: number): Either.Either<Uint8Array, InvalidMemoryRange> => {
    const index = pageIndex(pfn)
    if (typeof index !== "number") return Either.left(index)
    return Either.right(memory.subarray(index * PAGE_SIZE, (index + 1) * PAGE_SIZE))
  }

  const contiguousView = (
    pfns: ReadonlyArray<number>,
    byteOffset: number,
    length: number
  ): Either.Either<Uint8Array, InvalidMemoryRange> => {
    const indices = checkRange(pfns, byteOffset, length)
    if (!Array.isArray(indices)) return Either.left(indices)
    for (let i = 1; i < indices.length; i++) {
      if (indices[i] !== indices[i - 1]! + 1) {
        return rangeError(`PFN 0x${pfns[i]!.toString(16)} does not follow 0x${pfns[i - 1]!.toString(16)}`, {
          pfn: pfns[i]!
        })
      }
    }
    if (indices.length === 0) return Either.right(new Uint8Array(0))
    const at = indices[0]! * PAGE_SIZE + byteOffset
    return Either.right(memory.subarray(at, at + length))
  }

  const acquire = (pages: number): Either.Either<GuestBuffer, OutOfMemory | InvalidParameter> => {
    if (!Number.isSafeInteger(pages) || pages <= 0) {
      return Either.left(new InvalidParameter({ field: "pages", reason: "must be a positive integer", value: pages }))
    }
    const start = pages <= allocator.free ? allocator.allocate(pages) : -1
    if (start < 0) return Either.left(new OutOfMemory({ requestedPages: pages, freePages: allocator.free }))
    const bytes = memory.subarray(start * PAGE_SIZE, (start + pages) * PAGE_SIZE)
    bytes.fill(0)
    const firstPfn = basePfn + start
    const pfns: Array<number> = new Array(pages)
    for (let i = 0; i < pages; i++) pfns[i] = firstPfn + i
    return Either.right({ pfns, firstPfn, pages, byteLength: pages * PAGE_SIZE, bytes })
  }

  // One record per allocation: its pins, and whether its owner's scope already closed. Pages are freed
  // when both hold (scope closed, no pin); `ownerOf` finds the allocation a page belongs to.
  interface Allocation {
    readonly start: number
    readonly buffer: GuestBuffer
    pins: number
    scopeClosed: boolean
  }
  const allocations = new Map<number, Allocation>()
  const ownerOf = new Int32Array(totalPages).fill(-1)
  const free = (record: Allocation): void => {
    allocations.delete(record.start)
    ownerOf.fill(-1, record.start, record.start + record.buffer.pages)
    allocator.release(record.start, record.buffer.pages)
  }
  const recordOf = (buffer: GuestBuffer): Allocation | undefined => {
    const record = allocations.get(buffer.firstPfn - basePfn)
    return record !== undefined && record.buffer === buffer ? record : undefined
  }
  const pinRecords = (records: ReadonlyArray<Allocation>): (() => void) => {
    for (const record of records) record.pins++
    let done = false
    return () => {
      if (done) return
      done = true
      for (const record of records) {
        record.pins--
        if (record.pins === 0 && record.scopeClosed) free(record)
      }
    }
  }
  const noPin = (): void => {}
  const pin = (buffer: GuestBuffer): (() => void) => {
    const record = recordOf(buffer)
    return record === undefined ? noPin : pinRecords([record])
  }
  const pinRange = (pfns: ReadonlyArray<number>): Either.Either<() => void, InvalidMemoryRange> => {
    const records = new Set<Allocation>()
    for (const pfn of pfns) {
      const index = pageIndex(pfn)
      if (typeof index !== "number") return Either.left(index)
      const record = allocations.get(ownerOf[index]!)
      if (record === undefined || record.scopeClosed) {
        return rangeError(`PFN 0x${pfn.toString(16)} belongs to an allocation already released`, { pfn })
      }
      records.add(record)
    }
    return Either.right(pinRecords(Array.from(records)))
  }

  const releasePinned = (buffer: GuestBuffer): Effect.Effect<void> =>
    Effect.sync(() => {
      const record = recordOf(buffer)
      if (record === undefined || record.scopeClosed) return
      record.scopeClosed = true
      if (record.pins === 0) free(record)
    })

  const allocate = (pages: number): Effect.Effect<GuestBuffer, OutOfMemory | InvalidParameter> =>
    Effect.suspend(() => {
      const acquired = acquire(pages)
      if (Either.isRight(acquired)) {
        const buffer = acquired.right
        const start = buffer.firstPfn - basePfn
        allocations.set(start, { start, buffer, pins: 0, scopeClosed: false })
        ownerOf.fill(start, start, start + buffer.pages)
      }
      return acquired
    })

  return {
    [TypeId]: TypeId,
    basePfn,
    totalPages,
    buffer,
    allocate: (pages) => Effect.acquireRelease(allocate(pages), releasePinned),
    pin,
    pinRange,
    isLive: (buffer) => recordOf(buffer)?.scopeClosed === false,
    pinnedBuffers: Effect.sync(() => {
      let n = 0
      for (const record of allocations.values()) if (record.pins > 0) n++
      return n
    }),
    read: (pfns, byteOffset, length) => Effect.suspend(() => readSync(pfns, byteOffset, length)),
    write: (pfns, byteOffset, data) => Effect.suspend(() => writeSync(pfns, byteOffset, data)),
    readSync,
    writeSync,
    pageView,
    contiguousView,
    isAllocated: (pfn) => typeof pageIndex(pfn) === "number",
    freePages: Effect.sync(() => allocator.free),
    allocatedPages: Effect.sync(() => totalPages - allocator.free),
    largestFreeRun: Effect.sync(() => allocator.largestRun)
  }
}

export const make = (options: MakeOptions): Effect.Effect<GuestMemoryShape, InvalidParameter | OutOfMemory> =>
  Effect.suspend((): Effect.Effect<GuestMemoryShape, InvalidParameter | OutOfMemory> => {
    const { pages } = options
    const basePfn = options.basePfn ?? DEFAULT_BASE_PFN
    if (!Number.isSafeInteger(pages) || pages <= 0) {
      return Effect.fail(new InvalidParameter({ field: "pages", reason: "must be a positive integer", value: pages }))
    }
    if (!Number.isSafeInteger(basePfn) || basePfn < 0 || basePfn + pages - 1 > MAX_PFN) {
      return Effect.fail(
        new InvalidParameter({ field: "basePfn", reason: `must be an integer in [0, 2^52 − pages]`, value: basePfn })
      )
    }
    return Effect.try({
      try: () => new SharedArrayBuffer(pages * PAGE_SIZE),
      catch: () => new OutOfMemory({ requestedPages: pages, freePages: 0 })
    }).pipe(Effect.map((buffer) => unsafeMakeWith(buffer, pages, basePfn)))
  })

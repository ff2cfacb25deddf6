// Balloon pages for a user-space guest driver on Linux (e.g. over uio_hv_generic). A process cannot give
// kernel pages away; what it can set aside are pages of its own: an anonymous private mapping, faulted
// in, locked (mlock: never swapped), never touched again; whole 2 MiB chunks are huge pages where the
// kernel has them, so the host gets long ranges. Their
// guest-physical frame numbers come from /proc/self/pagemap (root only: without CAP_SYS_ADMIN the kernel
// reports PFN 0). Giving a page back is munmap. Limits, said plainly: the kernel still counts the pages
// as this process's memory, and compaction may migrate locked pages (vm.compact_unevictable_allowed),
// after which the PFN the host was given no longer belongs to the process; set that sysctl to 0 where
// it matters. koffi is loaded lazily, as by the uio transport.
import * as Effect from "effect/Effect"
import * as fs from "node:fs"
import type * as Scope from "effect/Scope"
import { Unsupported } from "../VmbusError.js"
import { rangesOfPfns } from "./dynamicMemoryMessages.js"
import { type BalloonPagesShape, pageTracker, type Reservation } from "./dynamicMemoryPages.js"

const PAGE = 4096
const PROT_RW = 3
const MAP_PRIVATE = 0x02
const MAP_ANONYMOUS = 0x20
const MADV_HUGEPAGE = 14
const HUGE = 2 * 1024 * 1024
const MAP_FAILED = 0xffff_ffff_ffff_ffffn
const PFN_MASK = (1n << 55n) - 1n
const PRESENT = 1n << 63n

interface Libc {
  readonly mmap: (length: number) => bigint | undefined
  readonly munmap: (address: bigint, length: number) => void
  readonly mlock: (address: bigint, length: number) => number
  readonly madvise: (address: bigint, length: number, advice: number) => void
  readonly errno: () => number
}

interface Koffi {
  readonly load: (path: string) => { func: (signature: string) => (...args: ReadonlyArray<unknown>) => any }
  readonly errno: () => number
}

const bind = (koffi: Koffi): Libc => {
  const libc = koffi.load("libc.so.6")
  const mmap = libc.func("uintptr_t mmap(uintptr_t, size_t, int, int, int, int64_t)")
  const munmap = libc.func("int munmap(uintptr_t, size_t)")
  const mlock = libc.func("int mlock(uintptr_t, size_t)")
  const madvise = libc.func("int madvise(uintptr_t, size_t, int)")
  return {
    mmap: (length) => {
      const address = BigInt(mmap(0, length, PROT_RW, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0))
      return address === MAP_FAILED ? undefined : address
    },
    munmap: (address, length) => void munmap(address, length),
    mlock: (address, length) => Number(mlock(address, length)),
    madvise: (address, length, advice) => void madvise(address, length, advice),
    errno: () => koffi.errno()
  }
}

/** Reads the PFNs of `pages` pages from `address`; `undefined` for a page not present or hidden (PFN 0). */
const readPfns = (pagemap: number, address: bigint, pages: number): Array<number | undefined> => {
  const buffer = Buffer.alloc(8 * pages)
  fs.readSync(pagemap, buffer, 0, buffer.length, (address / BigInt(PAGE)) * 8n)
  const out: Array<number | undefined> = []
  for (let i = 0; i < pages; i++) {
    const entry = buffer.readBigUInt64LE(8 * i)
    const pfn = entry & PFN_MASK
    out.push((entry & PRESENT) !== 0n && pfn !== 0n ? Number(pfn) : undefined)
  }
  return out
}

export interface ProcessPagesOptions {
  /** Pages per mapping (default 512 = 2 MiB, halved when memory is short). */
  readonly chunkPages?: number | undefined
}

/** The process-pages source; `Unsupported` off Linux, without koffi, or when PFNs are hidden or mlock is refused. */
export const makeProcessPages = (
  options: ProcessPagesOptions = {}
): Effect.Effect<BalloonPagesShape, Unsupported, Scope.Scope> =>
  Effect.gen(function*() {
    const unsupported = (reason: string) => new Unsupported({ capability: "processBalloonPages", reason })
    if (process.platform !== "linux") return yield* unsupported(`Linux only (platform ${process.platform})`)
    const libc = yield* Effect.tryPromise({
      try: async () => {
        const module = (await import("koffi")) as unknown as { readonly default?: Koffi } & Koffi
        return bind(module.default ?? module)
      },
      catch: (error) => unsupported(`the optional dependency koffi could not be loaded (${String(error)})`)
    })
    const pagemap = yield* Effect.try({
      try: () => fs.openSync("/proc/self/pagemap", "r"),
      catch: (error) => unsupported(`/proc/self/pagemap cannot be read (${String(error)})`)
    })
    yield* Effect.addFinalizer(() => Effect.sync(() => fs.closeSync(pagemap)))
    const chunkPages = Math.max(1, options.chunkPages ?? 512)
    let heldTotal = 0

    // Chunks of whole 2 MiB are mapped 2 MiB-aligned and advised as huge pages: where the kernel has
    // one free, the chunk is 512 contiguous frames, one range for the host (Linux's balloon likewise
    // takes 2 MiB pages first). Otherwise it is 4 KiB pages, wherever they are.
    const alignedMap = (length: number): bigint | undefined => {
      if (length % HUGE !== 0) return libc.mmap(length)
      const raw = libc.mmap(length + HUGE)
      if (raw === undefined) return undefined
      const aligned = (raw + BigInt(HUGE - 1)) & ~BigInt(HUGE - 1)
      const head = Number(aligned - raw)
      if (head > 0) libc.munmap(raw, head)
      if (HUGE - head > 0) libc.munmap(aligned + BigInt(length), HUGE - head)
      libc.madvise(aligned, length, MADV_HUGEPAGE)
      return aligned
    }

    // One mapping of `pages` pages, locked and with every PFN known, or undefined.
    const map = (pages: number): { address: bigint; pfns: Array<number> } | "hidden" | "unlockable" | undefined => {
      const length = pages * PAGE
      const address = alignedMap(length)
      if (address === undefined) return undefined
      // mlock faults every page in and keeps it resident.
      if (libc.mlock(address, length) !== 0) {
        const errno = libc.errno()
        libc.munmap(address, length)
        return errno === 1 ? "unlockable" : undefined // EPERM: no CAP_IPC_LOCK; else out of memory
      }
      const pfns = readPfns(pagemap, address, pages)
      if (pfns.some((pfn) => pfn === undefined)) {
        libc.munmap(address, length)
        return "hidden"
      }
      return { address, pfns: pfns as Array<number> }
    }

    // Probe once: a process without CAP_SYS_ADMIN or CAP_IPC_LOCK cannot balloon honestly.
    const probe = map(1)
    if (probe === "hidden") return yield* unsupported("/proc/self/pagemap hides PFNs (needs CAP_SYS_ADMIN)")
    if (probe === "unlockable") return yield* unsupported("mlock refused (needs CAP_IPC_LOCK or a higher RLIMIT_MEMLOCK)")
    if (probe === undefined) return yield* unsupported("not even one page can be mapped and locked")
    libc.munmap(probe.address, PAGE)

    const reserve = (pages: number): Reservation | undefined => {
      for (let n = Math.min(pages, chunkPages); n >= 1; n = Math.floor(n / 2)) {
        const mapped = map(n)
        if (mapped === undefined) continue
        if (typeof mapped === "string") return undefined
        const { address, pfns } = mapped
        const addressOf = new Map<number, bigint>()
        pfns.forEach((pfn, i) => addressOf.set(pfn, address + BigInt(i * PAGE)))
        // munmap in runs of consecutive addresses: one call per run, not per page.
        const unmap = (pfnList: ReadonlyArray<number>) => {
          const addresses: Array<bigint> = []
          for (const pfn of pfnList) {
            const at = addressOf.get(pfn)
            if (at !== undefined) {
              addressOf.delete(pfn)
              addresses.push(at)
            }
          }
          addresses.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
          for (let i = 0; i < addresses.length;) {
            let j = i + 1
            while (j < addresses.length && addresses[j] === addresses[j - 1]! + BigInt(PAGE)) j++
            libc.munmap(addresses[i]!, (j - i) * PAGE)
            i = j
          }
        }
        const tracker = pageTracker(pfns, Effect.sync(() => unmap([...addressOf.keys()])))
        heldTotal += n
        return {
          ranges: rangesOfPfns(pfns),
          pages: n,
          held: tracker.held,
          heldPfns: tracker.heldPfns,
          release: (range) =>
            Effect.map(tracker.releasePfns(range), (released) => {
              unmap(released)
              heldTotal -= released.length
              return released.length
            }),
          releaseAll: Effect.suspend(() => {
            heldTotal -= tracker.held()
            return tracker.releaseAll
          })
        }
      }
      return undefined
    }

    return {
      kind: "process-anonymous",
      reserve: (pages) => Effect.sync(() => (pages < 1 ? undefined : reserve(pages))),
      heldPages: Effect.sync(() => heldTotal)
    } satisfies BalloonPagesShape
  })

// The process-pages balloon source (used by a user-space guest driver in a real VM): pages are really
// mapped and locked (VmLck grows), their PFNs are real (distinct, non-zero), and every page is unmapped
// again on release or when the layer's scope closes. Needs Linux, root (pagemap PFNs, mlock) and koffi.
import { describe, it } from "@effect/vitest"
import { assertTrue, strictEqual } from "@effect/vitest/utils"
import { Effect, Exit, Layer, Scope } from "effect"
import * as fs from "node:fs"
import * as DM from "../src/DynamicMemory.js"

const lockedKb = () => Number(/VmLck:\s+(\d+) kB/.exec(fs.readFileSync("/proc/self/status", "utf8"))?.[1] ?? NaN)
const isRoot = process.platform === "linux" && process.getuid?.() === 0

describe("DynamicMemory process pages", () => {
  it.effect.skipIf(!isRoot)("sets aside locked pages with real PFNs and unmaps them on release and at close (needs Linux + root)", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const pages = yield* Layer.buildWithScope(DM.layerProcessPages({ chunkPages: 64 }), scope).pipe(
        Effect.map((context) => context.unsafeMap.get(DM.BalloonPages.key) as DM.BalloonPagesShape)
      )
      const base = lockedKb()
      const first = (yield* pages.reserve(100))!
      const second = (yield* pages.reserve(36))!
      strictEqual(first.pages, 64) // one chunk per reservation
      strictEqual(second.pages, 36)
      strictEqual(lockedKb() - base, 100 * 4)
      const pfns = [...first.heldPfns(), ...second.heldPfns()]
      strictEqual(new Set(pfns).size, 100)
      assertTrue(pfns.every((pfn) => pfn > 0))
      strictEqual(first.ranges.reduce((n, r) => n + r.pageCount, 0), 64)
      // Give back the first 10 pages of the first chunk (by PFN), as an unballoon request would.
      const some = [...first.heldPfns()].sort((a, b) => a - b).slice(0, 10)
      let released = 0
      for (const pfn of some) released += yield* first.release({ startPage: pfn, pageCount: 1 })
      strictEqual(released, 10)
      strictEqual(lockedKb() - base, 90 * 4)
      strictEqual(yield* pages.heldPages, 90)
      yield* first.releaseAll
      strictEqual(lockedKb() - base, 36 * 4)
      // What is left goes when its owner releases it; the layer's scope then closes cleanly.
      yield* second.releaseAll
      strictEqual(lockedKb(), base)
      strictEqual(yield* pages.heldPages, 0)
      yield* Scope.close(scope, Exit.void)
    }))

  it.effect.skipIf(!isRoot)("maps whole 2 MiB chunks 2 MiB-aligned (huge pages where the kernel has them)", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const pages = yield* Layer.buildWithScope(DM.layerProcessPages(), scope).pipe(
        Effect.map((context) => context.unsafeMap.get(DM.BalloonPages.key) as DM.BalloonPagesShape)
      )
      const base = lockedKb()
      const chunk = (yield* pages.reserve(1024))!
      strictEqual(chunk.pages, 512)
      strictEqual(chunk.ranges.reduce((n, r) => n + r.pageCount, 0), 512)
      strictEqual(new Set(chunk.heldPfns()).size, 512)
      strictEqual(lockedKb() - base, 512 * 4)
      // Half of it back (splitting a huge page), then the rest at close.
      const sorted = [...chunk.heldPfns()].sort((a, b) => a - b)
      let back = 0
      for (const pfn of sorted.slice(0, 256)) back += yield* chunk.release({ startPage: pfn, pageCount: 1 })
      strictEqual(back, 256)
      strictEqual(lockedKb() - base, 256 * 4)
      yield* chunk.releaseAll
      strictEqual(lockedKb(), base)
      yield* Scope.close(scope, Exit.void)
    }))

  it.effect.skipIf(process.platform === "linux")("is Unsupported off Linux", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(Effect.scoped(Layer.build(DM.layerProcessPages())))
      assertTrue(Exit.isFailure(exit))
    }))
})

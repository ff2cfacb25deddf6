import { describe, it } from "@effect/vitest"
import { assertTrue, deepStrictEqual, strictEqual } from "@effect/vitest/utils"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as FastCheck from "effect/FastCheck"
import * as Fiber from "effect/Fiber"
import * as Scope from "effect/Scope"
import * as GuestMemory from "../src/GuestMemory.js"
import type { InvalidMemoryRange } from "../src/VmbusError.js"

const PAGE = 4096

/** Allocates in a scope of its own, so that the test decides when the pages go back. */
const allocateIn = (memory: GuestMemory.GuestMemoryShape, pages: number) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const buffer = yield* memory.allocate(pages).pipe(Scope.extend(scope))
    return { buffer, release: Scope.close(scope, Exit.void) }
  })

const stats = (memory: GuestMemory.GuestMemoryShape) =>
  Effect.all({ free: memory.freePages, allocated: memory.allocatedPages, largest: memory.largestFreeRun })

const rangeError = <A>(e: Either.Either<A, InvalidMemoryRange>): InvalidMemoryRange => {
  assertTrue(Either.isLeft(e))
  strictEqual(e.left._tag, "InvalidMemoryRange")
  return e.left
}

describe("GuestMemory allocation", () => {
  it.effect("make validates its options", () =>
    Effect.gen(function*() {
      for (const pages of [0, -1, 1.5, Number.NaN]) {
        const error = yield* Effect.flip(GuestMemory.make({ pages }))
        strictEqual(error._tag, "InvalidParameter")
      }
      const error = yield* Effect.flip(GuestMemory.make({ pages: 4, basePfn: -1 }))
      strictEqual(error._tag, "InvalidParameter")
      const memory = yield* GuestMemory.make({ pages: 4 })
      strictEqual(memory.basePfn, 0x100)
      strictEqual(memory.totalPages, 4)
      assertTrue(memory.buffer instanceof SharedArrayBuffer)
      strictEqual(memory.buffer.byteLength, 4 * PAGE)
      assertTrue(GuestMemory.isGuestMemory(memory))
    }))

  it.scoped("allocates contiguous, zeroed pages whose PFN list is what a GPADL describes", () =>
    Effect.gen(function*() {
      const memory = yield* GuestMemory.make({ pages: 16, basePfn: 0x1000 })
      const a = yield* memory.allocate(3)
      const b = yield* memory.allocate(2)
      deepStrictEqual(a.pfns, [0x1000, 0x1001, 0x1002])
      deepStrictEqual(b.pfns, [0x1003, 0x1004])
      strictEqual(a.firstPfn, 0x1000)
      strictEqual(a.pages, 3)
      strictEqual(a.byteLength, 3 * PAGE)
      strictEqual(a.bytes.length, 3 * PAGE)
      assertTrue(a.bytes.buffer === memory.buffer)
      assertTrue(a.bytes.every((x) => x === 0))
      deepStrictEqual(yield* stats(memory), { free: 11, allocated: 5, largest: 11 })
    }))

  it.effect("freed pages are reused and zeroed again", () =>
    Effect.gen(function*() {
      const memory = yield* GuestMemory.make({ pages: 8 })
      const first = yield* allocateIn(memory, 4)
      first.buffer.bytes.fill(0xaa)
      yield* first.release
      strictEqual(yield* memory.allocatedPages, 0)
      const second = yield* allocateIn(memory, 4)
      deepStrictEqual(second.buffer.pfns, first.buffer.pfns)
      assertTrue(second.buffer.bytes.every((x) => x === 0))
      yield* second.release
    }))

  it.effect("out of memory, including by fragmentation", () =>
    Effect.gen(function*() {
      const memory = yield* GuestMemory.make({ pages: 8 })
      const tooMany = yield* Effect.flip(Effect.scoped(memory.allocate(9)))
      assertTrue(tooMany._tag === "OutOfMemory")
      deepStrictEqual([tooMany.requestedPages, tooMany.freePages], [9, 8])
      const singles = yield* Effect.forEach(Array.from({ length: 8 }), () => allocateIn(memory, 1))
      yield* Effect.forEach(singles.filter((_, i) => i % 2 === 0), (s) => s.release)
      deepStrictEqual(yield* stats(memory), { free: 4, allocated: 4, largest: 1 })
      const fragmented = yield* Effect.flip(Effect.scoped(memory.allocate(2)))
      assertTrue(fragmented._tag === "OutOfMemory")
      deepStrictEqual([fragmented.requestedPages, fragmented.freePages], [2, 4])
      // freeing a neighbour coalesces a run of three
      yield* singles[1]!.release
      strictEqual(yield* memory.largestFreeRun, 3)
      const three = yield* allocateIn(memory, 3)
      deepStrictEqual(three.buffer.pfns, [0x100, 0x101, 0x102])
      yield* three.release
      yield* Effect.forEach(singles.filter((_, i) => i % 2 === 1 && i !== 1), (s) => s.release)
      deepStrictEqual(yield* stats(memory), { free: 8, allocated: 0, largest: 8 })
    }))

  it.effect("allocating 0, a negative or fractional page count is InvalidParameter", () =>
    Effect.gen(function*() {
      const memory = yield* GuestMemory.make({ pages: 4 })
      for (const pages of [0, -1, 0.5, Number.POSITIVE_INFINITY]) {
        const error = yield* Effect.flip(Effect.scoped(memory.allocate(pages)))
        strictEqual(error._tag, "InvalidParameter")
      }
      strictEqual(yield* memory.allocatedPages, 0)
    }))

  it.effect.prop(
    "coalescing: allocate everything, free in random order, allocate everything again",
    {
      sizes: FastCheck.array(FastCheck.integer({ min: 1, max: 8 }), { minLength: 1, maxLength: 40 }),
      keys: FastCheck.array(FastCheck.nat(), { minLength: 40, maxLength: 40 })
    },
    ({ keys, sizes }) =>
      Effect.gen(function*() {
        const total = sizes.reduce((a, b) => a + b, 0)
        const memory = yield* GuestMemory.make({ pages: total })
        const allocations = yield* Effect.forEach(sizes, (n) => allocateIn(memory, n))
        deepStrictEqual(yield* stats(memory), { free: 0, allocated: total, largest: 0 })
        const order = allocations.map((_, i) => i).sort((x, y) => keys[x]! - keys[y]! || x - y)
        for (const i of order) yield* allocations[i]!.release
        deepStrictEqual(yield* stats(memory), { free: total, allocated: 0, largest: total })
        const all = yield* allocateIn(memory, total)
        strictEqual(all.buffer.firstPfn, memory.basePfn)
        yield* all.release
        strictEqual(yield* memory.allocatedPages, 0)
      }),
    { fastCheck: { numRuns: 200 } }
  )
})

describe("GuestMemory leak checks", () => {
  it.effect("pages return when the scope closes with success, failure, defect or interruption", () =>
    Effect.gen(function*() {
      const memory = yield* GuestMemory.make({ pages: 32 })
      yield* Effect.scoped(memory.allocate(4))
      strictEqual(yield* memory.allocatedPages, 0)

      const failed = yield* Effect.exit(
        Effect.scoped(Effect.zipRight(memory.allocate(4), Effect.fail("boom" as const)))
      )
      assertTrue(Exit.isFailure(failed))
      strictEqual(yield* memory.allocatedPages, 0)

      const died = yield* Effect.exit(Effect.scoped(Effect.zipRight(memory.allocate(4), Effect.die("defect"))))
      assertTrue(Exit.isFailure(died))
      strictEqual(yield* memory.allocatedPages, 0)

      const allocated = yield* Deferred.make<void>()
      const fiber = yield* Effect.fork(
        Effect.scoped(
          Effect.gen(function*() {
            yield* memory.allocate(5)
            yield* memory.allocate(3)
            yield* Deferred.succeed(allocated, undefined)
            return yield* Effect.never
          })
        )
      )
      yield* Deferred.await(allocated)
      strictEqual(yield* memory.allocatedPages, 8)
      yield* Fiber.interrupt(fiber)
      strictEqual(yield* memory.allocatedPages, 0)
      strictEqual(yield* memory.largestFreeRun, 32)
    }))

  it.effect("a failed allocation leaks nothing", () =>
    Effect.gen(function*() {
      const memory = yield* GuestMemory.make({ pages: 4 })
      const exit = yield* Effect.exit(Effect.scoped(Effect.zipRight(memory.allocate(3), memory.allocate(3))))
      assertTrue(Exit.isFailure(exit))
      strictEqual(yield* memory.allocatedPages, 0)
    }))

  it.effect("layerMemory provides the service", () =>
    Effect.gen(function*() {
      const buffer = yield* Effect.scoped(GuestMemory.allocate(2))
      deepStrictEqual(buffer.pfns, [0x100, 0x101])
      const memory = yield* GuestMemory.GuestMemory
      strictEqual(yield* memory.allocatedPages, 0)
      strictEqual(memory.totalPages, 8)
    }).pipe(Effect.provide(GuestMemory.layerMemory({ pages: 8 }))))
})

describe("GuestMemory host-side access", () => {
  it.scoped("read and write follow the PFN list across page boundaries", () =>
    Effect.gen(function*() {
      const memory = yield* GuestMemory.make({ pages: 8 })
      const a = yield* memory.allocate(2)
      const b = yield* memory.allocate(2)
      // a scattered list, as a GPA range may name: b[1], a[0]
      const pfns = [b.pfns[1]!, a.pfns[0]!]
      const data = Uint8Array.from({ length: 300 }, (_, i) => i & 0xff)
      yield* memory.write(pfns, PAGE - 100, data)
      deepStrictEqual(b.bytes.slice(2 * PAGE - 100), data.slice(0, 100))
      deepStrictEqual(a.bytes.slice(0, 200), data.slice(100))
      deepStrictEqual(yield* memory.read(pfns, PAGE - 100, 300), data)
      deepStrictEqual(yield* memory.read(pfns, 0, 0), new Uint8Array(0))
      // a copy, not a view
      const copy = yield* memory.read(a.pfns, 0, 4)
      a.bytes[0] = 0xee
      strictEqual(copy[0], 100)
    }))

  it.scoped("pageView and contiguousView are zero-copy views of allocated pages", () =>
    Effect.gen(function*() {
      const memory = yield* GuestMemory.make({ pages: 8 })
      const a = yield* memory.allocate(3)
      const page = Either.getOrThrow(memory.pageView(a.pfns[1]!))
      strictEqual(page.length, PAGE)
      page[5] = 42
      strictEqual(a.bytes[PAGE + 5], 42)
      const view = Either.getOrThrow(memory.contiguousView(a.pfns, 10, 2 * PAGE))
      assertTrue(view.buffer === memory.buffer)
      strictEqual(view[PAGE - 5], 42)
      const b = yield* memory.allocate(1)
      const notContiguous = rangeError(memory.contiguousView([a.pfns[0]!, b.pfns[0]!], 0, 1))
      strictEqual(notContiguous.pfn, b.pfns[0])
    }))

  it.effect("rejects PFNs outside guest memory, free pages and ranges past the list", () =>
    Effect.gen(function*() {
      const memory = yield* GuestMemory.make({ pages: 4 })
      const { buffer, release } = yield* allocateIn(memory, 2)
      const [p0, p1] = buffer.pfns as [number, number]
      strictEqual(rangeError(memory.pageView(0)).pfn, 0)
      strictEqual(rangeError(memory.pageView(0x104)).pfn, 0x104)
      strictEqual(rangeError(memory.pageView(0xff)).pfn, 0xff)
      strictEqual(rangeError(memory.pageView(0x102)).pfn, 0x102)
      rangeError(memory.pageView(1.5))
      rangeError(memory.readSync([p0, p1], PAGE, PAGE + 1))
      rangeError(memory.readSync([p0], -1, 1))
      rangeError(memory.writeSync([p0, 0x103], 0, Uint8Array.of(1)))
      strictEqual(memory.isAllocated(p0), true)
      const outside = yield* Effect.flip(memory.read([p0, 0], 0, 1))
      strictEqual(outside._tag, "InvalidMemoryRange")
      strictEqual(outside.pfn, 0)
      yield* release
      strictEqual(memory.isAllocated(p0), false)
      const freed = yield* Effect.flip(memory.write([p0], 0, Uint8Array.of(1)))
      strictEqual(freed.pfn, p0)
      rangeError(memory.pageView(p1))
      rangeError(memory.contiguousView([p0, p1], 0, 1))
    }))
})

// Dynamic Memory: the layouts against the C headers of Linux drivers/hv/hv_balloon.c, the codec with
// hostile input, and host ↔ guest sessions over the in-memory transport (negotiation with fallback,
// status reports on TestClock time, balloon / unballoon with pages checked against GuestMemory, hot-add
// declined, malformed host messages, and leak checks when the guest closes while holding pages).
import { describe, it } from "@effect/vitest"
import { assertTrue, deepStrictEqual, strictEqual } from "@effect/vitest/utils"
import { Cause, Chunk, Effect, Either, Exit, Layer, Option, Scope, Stream, TestClock } from "effect"
import * as Channel from "../src/Channel.js"
import * as DM from "../src/DynamicMemory.js"
import * as GuestMemory from "../src/GuestMemory.js"
import * as InMemoryTransport from "../src/InMemoryTransport.js"
import { busStats, eventually, settle } from "./utils/channels.js"
import { within } from "./utils/ic.js"

const L = DM.Layouts

const bus = (options: { readonly pages?: number; readonly chunkPages?: number } = {}) =>
  DM.layerGuestMemory({ chunkPages: options.chunkPages ?? 16 }).pipe(
    Layer.provideMerge(InMemoryTransport.layerWithMemory()),
    Layer.provideMerge(GuestMemory.layerMemory({ pages: options.pages ?? 4096 }))
  )

const fixedStatus: DM.MemoryStatus = { availablePages: 1000, committedPages: 2000, pageFileSizePages: 0, freePages: 10 }

/** Host and guest in a child scope the test closes itself. */
const session = (hostOptions: DM.HostOptions = {}, guestOptions: DM.GuestOptions = {}) =>
  Effect.gen(function*() {
    const memory = yield* GuestMemory.GuestMemory
    const scope = yield* Scope.make()
    const [host, guest] = yield* Effect.all([
      DM.host({ memory, ...hostOptions }),
      DM.guest({ memoryStatus: Effect.succeed(fixedStatus), ...guestOptions })
    ], { concurrency: 2 }).pipe(Scope.extend(scope))
    return { host, guest, scope, memory, close: Scope.close(scope, Exit.void) }
  })

const guestEvents = <T extends DM.GuestEvent["_tag"]>(guest: DM.Guest, tag: T, n = 1) =>
  within(
    guest.events.pipe(
      Stream.filter((e): e is Extract<DM.GuestEvent, { _tag: T }> => e._tag === tag),
      Stream.take(n),
      Stream.runCollect,
      Effect.map(Chunk.toReadonlyArray)
    ),
    `${n} ${tag} event(s)`
  )

/** Nothing left behind: no channel, no packet, no guest page (rings included). */
const assertClean = Effect.gen(function*() {
  yield* settle()
  const stats = yield* busStats
  strictEqual(stats.openChannels, 0)
  strictEqual(stats.outstandingPackets, 0)
  strictEqual(stats.outstandingTransactions, 0)
  strictEqual(stats.guestPagesAllocated, 0)
})

const bytesOf = (message: DM.Message) => Either.getOrThrow(DM.encode(message))

describe("DynamicMemory", () => {
  describe("layouts (sizeof / offsetof from hv_balloon.c)", () => {
    it("fixed sizes match the packed C structs", () => {
      strictEqual(L.DmHeader.fixedSize, 8)
      strictEqual(L.DmVersionRequest.fixedSize, 16)
      strictEqual(L.DmVersionResponse.fixedSize, 16)
      strictEqual(L.DmCapabilities.fixedSize, 32)
      strictEqual(L.DmCapabilitiesResponse.fixedSize, 16)
      strictEqual(L.DmStatus.fixedSize, 48)
      strictEqual(L.DmBalloon.fixedSize, 16)
      strictEqual(L.DmBalloonResponse.fixedSize, 16)
      strictEqual(L.DmUnballoonRequest.fixedSize, 16)
      strictEqual(L.DmUnballoonResponse.fixedSize, 8)
      strictEqual(L.DmHotAdd.fixedSize, 16)
      strictEqual(L.DmHotAddResponse.fixedSize, 16)
      strictEqual(L.DmInfoMessage.fixedSize, 16)
      strictEqual(DM.MAX_RANGES_PER_MESSAGE, 510)
    })

    it("field offsets match", () => {
      deepStrictEqual(
        [L.DmHeader.offsets["type"], L.DmHeader.offsets["size"], L.DmHeader.offsets["trans_id"]],
        [0, 2, 4]
      )
      strictEqual(L.DmVersionRequest.offsets["version"], 8)
      strictEqual(L.DmCapabilities.offsets["caps"], 8)
      strictEqual(L.DmCapabilities.offsets["min_page_cnt"], 16)
      strictEqual(L.DmCapabilities.offsets["max_page_number"], 24)
      strictEqual(L.DmStatus.offsets["num_avail"], 8)
      strictEqual(L.DmStatus.offsets["num_committed"], 16)
      strictEqual(L.DmStatus.offsets["page_file_size"], 24)
      strictEqual(L.DmStatus.offsets["zero_free"], 32)
      strictEqual(L.DmStatus.offsets["page_file_writes"], 40)
      strictEqual(L.DmStatus.offsets["io_diff"], 44)
      strictEqual(L.DmBalloon.offsets["num_pages"], 8)
      strictEqual(L.DmBalloonResponse.offsets["flags"], 12)
      strictEqual(L.DmUnballoonRequest.offsets["range_count"], 12)
      strictEqual(L.DmHotAddResponse.offsets["result"], 12)
    })

    it("versions and message types are Linux's", () => {
      strictEqual(DM.VERSION_WIN7, 0x0000_0003)
      strictEqual(DM.VERSION_WIN8, 0x0001_0000)
      strictEqual(DM.VERSION_WIN10, 0x0002_0000)
      deepStrictEqual(DM.LINUX_VERSIONS, [0x20000, 0x10000, 0x3])
      strictEqual(DM.MessageType.BalloonRequest, 6)
      strictEqual(DM.MessageType.InfoMessage, 12)
      strictEqual(DM.DynamicMemoryProtocol.byId.get(7), "balloonResponse")
    })
  })

  describe("codec", () => {
    it("encodes the version request the C check (uiotest) writes, byte for byte", () => {
      const bytes = bytesOf({ _tag: "VersionRequest", transactionId: 7, version: DM.VERSION_WIN10, isLastAttempt: true })
      deepStrictEqual(Array.from(bytes), [1, 0, 16, 0, 7, 0, 0, 0, 0, 0, 2, 0, 1, 0, 0, 0])
    })

    it("packs bitfields: balloon response flags and 40/24-bit page ranges", () => {
      const ranges = [{ startPage: 0xab_cdef_0123, pageCount: 0x12_3456 }, { startPage: 1, pageCount: 1 }]
      const bytes = bytesOf({ _tag: "BalloonResponse", transactionId: 9, morePages: true, ranges })
      strictEqual(bytes.length, 32)
      const view = new DataView(bytes.buffer)
      strictEqual(view.getUint16(2, true), 32) // dm_header.size
      strictEqual(view.getUint32(12, true), (2 << 1) | 1) // range_count:31 | more_pages:1
      strictEqual(view.getBigUint64(16, true), 0xab_cdef_0123n | (0x12_3456n << 40n))
      const decoded = Either.getOrThrow(DM.decode(bytes))
      deepStrictEqual(decoded, { _tag: "BalloonResponse", transactionId: 9, morePages: true, ranges })
    })

    it("round-trips every message kind, even inside an 8-byte-padded payload", () => {
      const messages: ReadonlyArray<DM.Message> = [
        { _tag: "VersionResponse", transactionId: 1, isAccepted: true },
        {
          _tag: "CapabilitiesReport",
          transactionId: 2,
          capabilities: { balloon: true, hotAdd: false, hotAddAlignment: 7, hotRemove: false },
          minPageCount: 0n,
          maxPageNumber: 0xffff_ffff_ffff_ffffn
        },
        { _tag: "CapabilitiesResponse", transactionId: 3, isAccepted: true, hotRemove: true, suppressPressureReports: true },
        { _tag: "StatusReport", transactionId: 4, numAvail: 5n, numCommitted: 6n, pageFileSize: 7n, zeroFree: 8n, pageFileWrites: 9, ioDiff: 10 },
        { _tag: "BalloonRequest", transactionId: 5, numPages: 16384 },
        { _tag: "UnballoonRequest", transactionId: 6, morePages: false, ranges: [{ startPage: 0x1000, pageCount: 512 }] },
        { _tag: "UnballoonResponse", transactionId: 7 },
        { _tag: "HotAddRequest", transactionId: 8, range: { startPage: 0x40000, pageCount: 0x8000 }, region: { startPage: 0x40000, pageCount: 0x10000 } },
        { _tag: "HotAddResponse", transactionId: 9, pageCount: 0, result: 1 }
      ]
      for (const message of messages) {
        const bytes = bytesOf(message)
        const padded = new Uint8Array(Math.ceil(bytes.length / 8) * 8 + 8)
        padded.set(bytes)
        deepStrictEqual(Either.getOrThrow(DM.decode(padded)), message)
      }
      // The capabilities word: balloon bit 0, alignment 7 in bits 2–5.
      const caps = bytesOf(messages[1]!)
      strictEqual(new DataView(caps.buffer).getBigUint64(8, true), 1n | (7n << 2n))
    })

    it("reads the max page count of an info message", () => {
      const info = new Uint8Array(16)
      new DataView(info.buffer).setUint32(4, 8, true)
      new DataView(info.buffer).setBigUint64(8, 123456n, true)
      const decoded = Either.getOrThrow(DM.decode(bytesOf({ _tag: "InfoMessage", transactionId: 1, infoType: 0, maxPageCount: 0n, info })))
      assertTrue(decoded._tag === "InfoMessage" && decoded.maxPageCount === 123456n)
    })

    it("rejects hostile input with typed errors", () => {
      const header = (type: number, size: number, length = size) => {
        const bytes = new Uint8Array(length)
        const view = new DataView(bytes.buffer)
        view.setUint16(0, type, true)
        view.setUint16(2, size, true)
        return { bytes, view }
      }
      const reason = (bytes: Uint8Array) => {
        const result = DM.decode(bytes)
        assertTrue(Either.isLeft(result))
        strictEqual(result.left._tag, "ProtocolError")
        return result.left.reason
      }
      assertTrue(reason(new Uint8Array(4)).includes("no dm_header"))
      assertTrue(reason(header(6, 64, 16).bytes).includes("exceeds"))
      assertTrue(reason(header(99, 8).bytes).includes("unknown message type 99"))
      assertTrue(reason(header(6, 8).bytes).includes("needs at least 16"))
      const lying = header(8, 24)
      lying.view.setUint32(12, 1000, true) // range_count far beyond the message
      assertTrue(reason(lying.bytes).includes("announces 1000 ranges"))
      const info = header(12, 16)
      info.view.setUint32(12, 0xffff_ffff, true)
      assertTrue(reason(info.bytes).includes("info message announces"))
      // Encoding refuses values that do not fit their bitfields.
      assertTrue(Either.isLeft(DM.encode({ _tag: "BalloonResponse", transactionId: 1, morePages: false, ranges: [{ startPage: 2 ** 40, pageCount: 1 }] })))
      assertTrue(Either.isLeft(DM.encode({ _tag: "UnballoonRequest", transactionId: 1, morePages: false, ranges: [{ startPage: 0, pageCount: 2 ** 24 }] })))
    })
  })

  describe("sessions over the in-memory transport", () => {
    it.scoped("negotiates WIN10 and the capabilities Linux reports", () =>
      Effect.gen(function*() {
        const { close, guest, host } = yield* session()
        const negotiated = yield* host.negotiated
        strictEqual(negotiated.version, DM.VERSION_WIN10)
        strictEqual(guest.version, DM.VERSION_WIN10)
        deepStrictEqual(negotiated.capabilities, { balloon: true, hotAdd: false, hotAddAlignment: 7, hotRemove: false })
        strictEqual(negotiated.minPageCount, 0n)
        strictEqual(negotiated.maxPageNumber, 0xffff_ffff_ffff_ffffn)
        deepStrictEqual((yield* host.stats).versionRequests, [{ version: DM.VERSION_WIN10, isLastAttempt: false, accepted: true }])
        yield* close
        yield* assertClean
      }).pipe(Effect.provide(bus())))

    it.scoped("falls back WIN10 → WIN8 → WIN7, flagging the last attempt", () =>
      Effect.gen(function*() {
        const { close, guest, host } = yield* session({ acceptVersion: (v) => v === DM.VERSION_WIN7 })
        strictEqual(guest.version, DM.VERSION_WIN7)
        deepStrictEqual((yield* host.stats).versionRequests, [
          { version: DM.VERSION_WIN10, isLastAttempt: false, accepted: false },
          { version: DM.VERSION_WIN8, isLastAttempt: false, accepted: false },
          { version: DM.VERSION_WIN7, isLastAttempt: true, accepted: true }
        ])
        deepStrictEqual((yield* guestEvents(guest, "VersionRejected", 2)).map((e) => e.version), [DM.VERSION_WIN10, DM.VERSION_WIN8])
        yield* close
        yield* assertClean
      }).pipe(Effect.provide(bus())))

    it.scoped("fails with NegotiationFailed when no version is accepted, leaving nothing behind", () =>
      Effect.gen(function*() {
        const scope = yield* Scope.make()
        const [, guest] = yield* Effect.all([
          DM.host({ acceptVersion: () => false }),
          Effect.either(DM.guest({ versions: [DM.VERSION_WIN10, DM.VERSION_WIN8] }))
        ], { concurrency: 2 }).pipe(Scope.extend(scope))
        assertTrue(Either.isLeft(guest))
        strictEqual(guest.left._tag, "NegotiationFailed")
        yield* Scope.close(scope, Exit.void)
        yield* assertClean
      }).pipe(Effect.provide(bus())))

    it.scoped("fails with NegotiationFailed when the host refuses the capabilities", () =>
      Effect.gen(function*() {
        const scope = yield* Scope.make()
        const [, guest] = yield* Effect.all([DM.host({ acceptCapabilities: false }), Effect.either(DM.guest())], { concurrency: 2 }).pipe(
          Scope.extend(scope)
        )
        assertTrue(Either.isLeft(guest) && guest.left._tag === "NegotiationFailed")
        yield* Scope.close(scope, Exit.void)
        yield* assertClean
      }).pipe(Effect.provide(bus())))

    it.scoped("sends a status report every interval (TestClock), ballooned pages counted as committed", () =>
      Effect.gen(function*() {
        const { close, guest, host } = yield* session({}, { statusInterval: "1 second" })
        yield* eventually(Effect.map(host.stats, (s) => s.statusReports === 1), "first status report")
        yield* TestClock.adjust("3 seconds")
        yield* eventually(Effect.map(host.stats, (s) => s.statusReports === 4), "a report per second")
        const first = Option.getOrThrow(yield* host.latestStatus)
        strictEqual(first.availablePages, 1000n)
        strictEqual(first.committedPages, 2000n)
        yield* host.balloon(20)
        yield* TestClock.adjust("1 second")
        yield* eventually(Effect.map(host.latestStatus, (s) => Option.isSome(s) && s.value.committedPages === 2020n), "committed + ballooned")
        strictEqual((yield* guest.stats).statusReports, 5)
        yield* close
        yield* assertClean
      }).pipe(Effect.provide(bus())))

    it.scoped("sends no status report when the host suppresses them", () =>
      Effect.gen(function*() {
        const { close, guest, host } = yield* session({ suppressPressureReports: true })
        strictEqual(guest.suppressPressureReports, true)
        yield* TestClock.adjust("5 seconds")
        yield* settle()
        strictEqual((yield* host.stats).statusReports, 0)
        yield* close
        yield* assertClean
      }).pipe(Effect.provide(bus())))

    it.scoped("balloons with pages really set aside in guest memory, and unballoons them", () =>
      Effect.gen(function*() {
        const { close, guest, host, memory } = yield* session()
        const before = yield* memory.allocatedPages
        const result = yield* host.balloon(100)
        strictEqual(result.pages, 100)
        // Every page the host got is allocated in guest memory (the host checked each one) …
        strictEqual((yield* memory.allocatedPages) - before, 100)
        deepStrictEqual((yield* guest.ballooned).reduce((n, r) => n + r.pageCount, 0), 100)
        // … and given back on unballoon: chunks of 16 go back to the allocator as they empty.
        const back = yield* host.unballoon(64)
        strictEqual(back.pages, 64)
        yield* eventually(Effect.map(guest.stats, (s) => s.pagesReturned === 64), "pages returned")
        strictEqual((yield* guest.stats).pagesHeld, 36)
        strictEqual((yield* memory.allocatedPages) - before, 36)
        strictEqual((yield* host.stats).pagesHeld, 36)
        yield* host.unballoon(36)
        strictEqual((yield* memory.allocatedPages) - before, 0)
        strictEqual((yield* guest.stats).pagesHeld, 0)
        yield* close
        yield* assertClean
      }).pipe(Effect.provide(bus())))

    it.scoped("splits a large answer into several responses with more_pages", () =>
      Effect.gen(function*() {
        const { close, host } = yield* session({}, { maxRangesPerMessage: 2 })
        const result = yield* host.balloon(5)
        strictEqual(result.pages, 5)
        strictEqual(result.ranges.length, 5) // one range per one-page chunk
        strictEqual(result.messages, 3)
        yield* close
        yield* assertClean
      }).pipe(Effect.provide(bus({ chunkPages: 1 }))))

    it.scoped("gives what it can when memory runs short, and stops at its floor", () =>
      Effect.gen(function*() {
        const { close, guest, host } = yield* session({}, { maxBalloonPages: 40 })
        strictEqual((yield* host.balloon(30)).pages, 30)
        strictEqual((yield* host.balloon(30)).pages, 10) // floor: 40 pages at most
        const atFloor = yield* host.balloon(30)
        strictEqual(atFloor.pages, 0)
        strictEqual(atFloor.messages, 1) // an empty last response: "at minimum size"
        strictEqual((yield* guest.stats).pagesHeld, 40)
        yield* close
        yield* assertClean
      }).pipe(Effect.provide(bus())))

    it.scoped("is limited by guest memory itself", () =>
      Effect.gen(function*() {
        const { close, host, memory } = yield* session()
        const free = yield* memory.freePages
        const result = yield* host.balloon(free + 500)
        strictEqual(result.pages, free)
        strictEqual(yield* memory.freePages, 0)
        yield* close
        yield* assertClean
      }).pipe(Effect.provide(bus({ pages: 600 }))))

    it.scoped("releases every page it holds when closed mid-balloon, after its channel closed", () =>
      Effect.gen(function*() {
        const { close, guest, host, memory } = yield* session()
        const before = yield* memory.allocatedPages
        yield* host.balloon(50)
        strictEqual((yield* guest.stats).pagesHeld, 50)
        // The guest's scope closes while the host still holds the pages (no unballoon).
        yield* close
        yield* settle()
        strictEqual(yield* memory.allocatedPages, 0)
        assertTrue(before > 0) // rings were allocated, and went too
        yield* assertClean
      }).pipe(Effect.provide(bus())))

    it.scoped("a host transaction to a guest that went away fails typed, no hang", () =>
      Effect.gen(function*() {
        const memory = yield* GuestMemory.GuestMemory
        const guestScope = yield* Scope.make()
        const [host] = yield* Effect.all([
          DM.host({ memory, replyTimeout: "2 seconds" }),
          DM.guest({ statusReports: "never" }).pipe(Scope.extend(guestScope))
        ], { concurrency: 2 })
        yield* host.negotiated
        yield* Scope.close(guestScope, Exit.void)
        const fiber = yield* Effect.fork(host.balloon(10))
        yield* settle()
        yield* TestClock.adjust("3 seconds")
        const exit = yield* fiber.await
        assertTrue(Exit.isFailure(exit))
        const error = Option.getOrThrow(Cause.failureOption(exit.cause))
        assertTrue(error._tag === "Cancelled" || error._tag === "ChannelClosed", error._tag)
      }).pipe(Effect.provide(bus())))

    it.scoped("answers hot-add with 'not supported' (page_count 0, result 1)", () =>
      Effect.gen(function*() {
        const { close, guest, host } = yield* session()
        deepStrictEqual(yield* host.hotAdd({ startPage: 0x100000, pageCount: 0x8000 }), { pageCount: 0, result: 1 })
        strictEqual((yield* guest.stats).hotAddRequests, 1)
        yield* close
        yield* assertClean
      }).pipe(Effect.provide(bus())))

    it.scoped("survives malformed and hostile host messages after negotiation", () =>
      Effect.gen(function*() {
        const { close, guest, host } = yield* session()
        yield* host.balloon(8)
        yield* host.sendRaw(new Uint8Array([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0])) // unknown type 0xffff
        const lying = bytesOf({ _tag: "UnballoonRequest", transactionId: 1, morePages: false, ranges: [] })
        new DataView(lying.buffer).setUint32(12, 50_000, true)
        yield* host.sendRaw(lying)
        yield* host.sendRaw(bytesOf({ _tag: "VersionResponse", transactionId: 1, isAccepted: true })) // out of place
        yield* eventually(Effect.map(guest.stats, (s) => s.malformed === 2 && s.unexpected === 1), "malformed counted")
        const errors = yield* guestEvents(guest, "Malformed", 2)
        assertTrue(errors.every((e) => e.error._tag === "ProtocolError"))
        // An unballoon naming pages the guest never gave: ignored and counted, still answered.
        yield* host.sendRaw(bytesOf({ _tag: "UnballoonRequest", transactionId: 2, morePages: false, ranges: [{ startPage: 0xfff_0000, pageCount: 3 }] }))
        yield* eventually(Effect.map(guest.stats, (s) => s.unknownPagesReturned === 3), "unknown pages counted")
        // Still serving: the pages it holds are intact and a new balloon works.
        strictEqual((yield* guest.stats).pagesHeld, 8)
        strictEqual((yield* host.balloon(4)).pages, 4)
        yield* close
        yield* assertClean
      }).pipe(Effect.provide(bus())))

    it.scoped("a malformed answer during negotiation ends it with a ProtocolError", () =>
      Effect.gen(function*() {
        const scope = yield* Scope.make()
        const hostile = Effect.gen(function*() {
          const channel = yield* Channel.open({ role: "server", interfaceType: DM.DM_GUID, interfaceInstance: "0f2a5b8c-1d2e-4f30-8a41-5b6c7d8e9f01" })
          yield* Effect.scoped(channel.take) // the version request
          yield* channel.send(new Uint8Array([2, 0, 64, 0, 1, 0, 0, 0])) // size 64 in an 8-byte message
        })
        const [, guest] = yield* Effect.all([hostile, Effect.either(DM.guest())], { concurrency: 2 }).pipe(Scope.extend(scope))
        assertTrue(Either.isLeft(guest))
        strictEqual(guest.left._tag, "ProtocolError")
        assertTrue(guest.left.message.includes("exceeds"))
        yield* Scope.close(scope, Exit.void)
        yield* assertClean
      }).pipe(Effect.provide(bus())))
  })
})

// The guest side of Hyper-V Dynamic Memory, following Linux drivers/hv/hv_balloon.c: version
// negotiation (WIN10, then WIN8, then WIN7 with is_last_attempt), a capabilities report (balloon only:
// hot-add is answered "not supported"), periodic status reports, balloon and unballoon. Every message
// is an in-band packet without completion; guest messages carry guest-made transaction ids.
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as PubSub from "effect/PubSub"
import * as Queue from "effect/Queue"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as Channel from "../Channel.js"
import type * as IncomingPacket from "../IncomingPacket.js"
import type * as Transport from "../Transport.js"
import { Cancelled, NegotiationFailed, ProtocolError } from "../VmbusError.js"
import * as M from "./dynamicMemoryMessages.js"
import { BalloonPages, type Reservation } from "./dynamicMemoryPages.js"
import { readMemoryStatus, type MemoryStatus } from "./dynamicMemoryStatus.js"

export interface GuestOptions {
  /** Versions to try, most preferred first (default Linux's: WIN10, WIN8, WIN7). */
  readonly versions?: ReadonlyArray<number> | undefined
  /** Status report period (default 1 second, as Linux). */
  readonly statusInterval?: Duration.DurationInput | undefined
  /** `"auto"` (default) honours the host's suppress_pressure_reports; `"always"`; `"never"`. */
  readonly statusReports?: "auto" | "always" | "never" | undefined
  /** Where status figures come from (default: /proc/meminfo, else `os.freemem`). */
  readonly memoryStatus?: Effect.Effect<MemoryStatus> | undefined
  /** Never hold more than this many ballooned pages (the balloon floor; default unlimited). */
  readonly maxBalloonPages?: number | undefined
  /** How long to wait for each negotiation answer (default 5 seconds). */
  readonly replyTimeout?: Duration.DurationInput | undefined
  /** Hot-add alignment reported in the capabilities, 2^n MiB (default 7, as Linux). */
  readonly hotAddAlignment?: number | undefined
  /** Open only this device instance (default: the first Dynamic Memory offer). */
  readonly interfaceInstance?: string | undefined
  /** Ranges per balloon response (default 510: one page, as Linux). */
  readonly maxRangesPerMessage?: number | undefined
}

export type GuestEvent =
  | { readonly _tag: "VersionRejected"; readonly version: number }
  | { readonly _tag: "Negotiated"; readonly version: number; readonly suppressPressureReports: boolean; readonly hotRemove: boolean }
  | { readonly _tag: "StatusSent"; readonly availablePages: number; readonly committedPages: number }
  | { readonly _tag: "BalloonRequested"; readonly pages: number }
  | { readonly _tag: "Ballooned"; readonly requested: number; readonly pages: number; readonly ranges: ReadonlyArray<M.PageRange> }
  | { readonly _tag: "Unballooned"; readonly pages: number; readonly unknownPages: number; readonly last: boolean }
  | { readonly _tag: "HotAddDeclined"; readonly range: M.PageRange }
  | { readonly _tag: "Info"; readonly maxPageCount: bigint | undefined }
  | { readonly _tag: "Unexpected"; readonly message: M.MessageTag }
  | { readonly _tag: "Malformed"; readonly error: ProtocolError }

export interface GuestStats {
  /** Status reports sent. */
  readonly statusReports: number
  /** Balloon requests received. */
  readonly balloonRequests: number
  /** Pages given to the host, in total. */
  readonly pagesBallooned: number
  /** Unballoon requests received (one transaction may take several). */
  readonly unballoonRequests: number
  /** Pages the host gave back, in total. */
  readonly pagesReturned: number
  /** Pages an unballoon request named that this guest did not hold (ignored). */
  readonly unknownPagesReturned: number
  /** Hot-add requests received (each declined). */
  readonly hotAddRequests: number
  /** Host messages that did not decode. */
  readonly malformed: number
  /** Host messages that decoded but have no place here (e.g. a version response after negotiation). */
  readonly unexpected: number
  /** Pages currently set aside for the host. */
  readonly pagesHeld: number
}

export interface Guest {
  /** The negotiated protocol version. */
  readonly version: number
  /** The host asked for no status reports. */
  readonly suppressPressureReports: boolean
  /** The Dynamic Memory channel. */
  readonly channel: Channel.OpenedChannel
  /** Every event, the last 256 replayed to a new subscriber. */
  readonly events: Stream.Stream<GuestEvent>
  /** Counters, and the pages held now. */
  readonly stats: Effect.Effect<GuestStats>
  /** The page ranges currently given to the host. */
  readonly ballooned: Effect.Effect<ReadonlyArray<M.PageRange>>
  /** Sends one status report now. */
  readonly sendStatus: Effect.Effect<void, Channel.SendError | ProtocolError>
}

export type GuestError = Channel.OpenError | Channel.SendError | ProtocolError | NegotiationFailed | Cancelled

const hex = (v: number) => `0x${v.toString(16).padStart(8, "0")}`

export const guest = (
  options: GuestOptions = {}
): Effect.Effect<Guest, GuestError, Scope.Scope | Transport.Transport | BalloonPages> =>
  Effect.gen(function*() {
    const pages = yield* BalloonPages
    const versions = options.versions ?? M.LINUX_VERSIONS
    if (versions.length === 0) return yield* new ProtocolError({ reason: "DynamicMemory: no version to offer" })
    const timeout = options.replyTimeout ?? Duration.seconds(5)
    const maxRanges = Math.max(1, Math.min(options.maxRangesPerMessage ?? M.MAX_RANGES_PER_MESSAGE, M.MAX_RANGES_PER_MESSAGE))
    const floor = options.maxBalloonPages ?? Number.POSITIVE_INFINITY
    const memoryStatus = options.memoryStatus ?? readMemoryStatus

    // Registered before the channel opens, so it runs after the channel closed: pages go back to the
    // guest only once the host can no longer name them.
    const held = new Set<Reservation>()
    yield* Effect.addFinalizer(() =>
      Effect.suspend(() => {
        const all = [...held]
        held.clear()
        return Effect.forEach(all, (r) => r.releaseAll, { discard: true })
      })
    )
    const heldPages = () => {
      let n = 0
      for (const r of held) n += r.held()
      return n
    }

    const hub = yield* PubSub.unbounded<GuestEvent>({ replay: 256 })
    const publish = (event: GuestEvent) => PubSub.publish(hub, event)
    const stats = {
      statusReports: 0,
      balloonRequests: 0,
      pagesBallooned: 0,
      unballoonRequests: 0,
      pagesReturned: 0,
      unknownPagesReturned: 0,
      hotAddRequests: 0,
      malformed: 0,
      unexpected: 0
    }
    let transactionId = 0
    const nextId = () => (transactionId = (transactionId + 1) >>> 0)

    const channel = yield* Channel.open({
      role: "client",
      interfaceType: M.DM_GUID,
      ...(options.interfaceInstance === undefined ? {} : { interfaceInstance: options.interfaceInstance }),
      name: "dm-guest"
    })
    const sendMessage = (message: M.Message) =>
      Effect.flatMap(M.encode(message), (bytes) => channel.send(bytes))

    // Answers awaited by the negotiation; a malformed message during negotiation ends it.
    const answers = yield* Queue.unbounded<Either.Either<M.Message, ProtocolError>>()
    let negotiating = true

    const malformed = (error: ProtocolError) => {
      stats.malformed++
      const log = stats.malformed <= 10 || stats.malformed % 1000 === 0
        ? Effect.logWarning(`DynamicMemory guest: malformed message (#${stats.malformed}): ${error.message}`)
        : Effect.void
      return Effect.zipRight(publish({ _tag: "Malformed", error }), log)
    }

    const balloonUp = (requested: number) =>
      Effect.gen(function*() {
        stats.balloonRequests++
        yield* publish({ _tag: "BalloonRequested", pages: requested })
        let remaining = Math.max(0, Math.min(requested, floor - heldPages()))
        const ranges: Array<M.PageRange> = []
        let got = 0
        while (remaining > 0) {
          const reservation = yield* pages.reserve(remaining)
          if (reservation === undefined) break
          held.add(reservation)
          got += reservation.pages
          remaining -= reservation.pages
          ranges.push(...M.splitRanges(reservation.ranges))
        }
        stats.pagesBallooned += got
        // Chunks of at most one page of ranges; more_pages on every one but the last (an empty last
        // message tells the host the guest is at its floor).
        for (let i = 0; i === 0 || i < ranges.length; i += maxRanges) {
          const part = ranges.slice(i, i + maxRanges)
          yield* sendMessage({ _tag: "BalloonResponse", transactionId: nextId(), morePages: i + maxRanges < ranges.length, ranges: part })
        }
        yield* publish({ _tag: "Ballooned", requested, pages: got, ranges })
      })

    const balloonDown = (request: Extract<M.Message, { _tag: "UnballoonRequest" }>) =>
      Effect.gen(function*() {
        stats.unballoonRequests++
        let returned = 0
        let asked = 0
        for (const range of request.ranges) {
          asked += range.pageCount
          for (const reservation of [...held]) {
            returned += yield* reservation.release(range)
            if (reservation.held() === 0) held.delete(reservation)
          }
        }
        const unknown = asked - returned
        stats.pagesReturned += returned
        stats.unknownPagesReturned += unknown
        if (unknown > 0) {
          yield* Effect.logWarning(`DynamicMemory guest: unballoon named ${unknown} pages this guest does not hold (ignored)`)
        }
        if (!request.morePages) yield* sendMessage({ _tag: "UnballoonResponse", transactionId: nextId() })
        yield* publish({ _tag: "Unballooned", pages: returned, unknownPages: unknown, last: !request.morePages })
      })

    const handle = (packet: IncomingPacket.IncomingPacket): Effect.Effect<void> =>
      Effect.gen(function*() {
        const decoded = M.decode(packet.payload)
        if (Either.isLeft(decoded)) {
          if (negotiating) yield* Queue.offer(answers, decoded)
          return yield* malformed(decoded.left)
        }
        const message = decoded.right
        switch (message._tag) {
          case "VersionResponse":
          case "CapabilitiesResponse":
            if (negotiating) return yield* Queue.offer(answers, decoded)
            break
          case "BalloonRequest":
            return yield* balloonUp(message.numPages)
          case "UnballoonRequest":
            return yield* balloonDown(message)
          case "HotAddRequest":
            // Linux without hot-add: page_count 0 and result 1, which the host takes as permanent.
            stats.hotAddRequests++
            yield* sendMessage({ _tag: "HotAddResponse", transactionId: nextId(), pageCount: 0, result: 1 })
            return yield* publish({ _tag: "HotAddDeclined", range: message.range })
          case "InfoMessage":
            return yield* publish({ _tag: "Info", maxPageCount: message.maxPageCount })
          default:
            break
        }
        stats.unexpected++
        yield* publish({ _tag: "Unexpected", message: message._tag })
      }).pipe(Effect.catchAll((error) => Effect.logDebug(`DynamicMemory guest: answer not sent: ${error.message}`)))

    yield* Effect.forkScoped(channel.serve(handle, { concurrency: 1 }).pipe(Effect.ignore))

    const awaitAnswer = <T extends M.MessageTag>(tag: T, id: number) =>
      Queue.take(answers).pipe(
        Effect.timeoutFail({ duration: timeout, onTimeout: () => new Cancelled({ transactionId: BigInt(id), reason: `DynamicMemory: no ${tag}` }) }),
        Effect.flatMap((answer) => {
          if (Either.isLeft(answer)) return Effect.fail(answer.left)
          if (answer.right._tag !== tag) {
            return Effect.fail(new ProtocolError({ reason: `DynamicMemory: expected ${tag}, host sent ${answer.right._tag}` }))
          }
          return Effect.succeed(answer.right as Extract<M.Message, { _tag: T }>)
        })
      )

    // Version negotiation: each rejected version moves to the next; the last is flagged as such.
    let version: number | undefined
    for (let i = 0; i < versions.length && version === undefined; i++) {
      const id = nextId()
      yield* sendMessage({ _tag: "VersionRequest", transactionId: id, version: versions[i]!, isLastAttempt: i === versions.length - 1 })
      const answer = yield* awaitAnswer("VersionResponse", id)
      if (answer.isAccepted) version = versions[i]!
      else yield* publish({ _tag: "VersionRejected", version: versions[i]! })
    }
    if (version === undefined) {
      return yield* new NegotiationFailed({ service: "DynamicMemory", offered: versions.map(hex), supported: [] })
    }

    const capsId = nextId()
    yield* sendMessage({
      _tag: "CapabilitiesReport",
      transactionId: capsId,
      capabilities: { balloon: true, hotAdd: false, hotAddAlignment: options.hotAddAlignment ?? 7, hotRemove: false },
      minPageCount: 0n,
      maxPageNumber: 0xffff_ffff_ffff_ffffn
    })
    const caps = yield* awaitAnswer("CapabilitiesResponse", capsId)
    if (!caps.isAccepted) {
      return yield* new NegotiationFailed({ service: "DynamicMemory capabilities", offered: ["balloon"], supported: [] })
    }
    negotiating = false
    yield* Queue.shutdown(answers)
    yield* publish({ _tag: "Negotiated", version, suppressPressureReports: caps.suppressPressureReports, hotRemove: caps.hotRemove })

    const sendStatus = Effect.gen(function*() {
      const status = yield* memoryStatus
      // Linux counts ballooned pages as committed: the host sizes the guest by its demand.
      const committed = status.committedPages + heldPages()
      yield* sendMessage({
        _tag: "StatusReport",
        transactionId: nextId(),
        numAvail: BigInt(Math.max(0, Math.floor(status.availablePages))),
        numCommitted: BigInt(Math.max(0, Math.floor(committed))),
        pageFileSize: BigInt(Math.max(0, Math.floor(status.pageFileSizePages ?? 0))),
        zeroFree: BigInt(Math.max(0, Math.floor(status.freePages ?? 0))),
        pageFileWrites: 0,
        ioDiff: 0
      })
      stats.statusReports++
      yield* publish({ _tag: "StatusSent", availablePages: status.availablePages, committedPages: committed })
    })
    const reports = options.statusReports ?? "auto"
    if (reports === "always" || (reports === "auto" && !caps.suppressPressureReports)) {
      const interval = options.statusInterval ?? Duration.seconds(1)
      yield* Effect.forkScoped(
        Effect.repeat(
          sendStatus.pipe(Effect.catchAll((error) => Effect.logDebug(`DynamicMemory guest: status not sent: ${error.message}`))),
          Schedule.spaced(interval)
        )
      )
    }

    return {
      version,
      suppressPressureReports: caps.suppressPressureReports,
      channel,
      events: Stream.fromPubSub(hub),
      stats: Effect.sync(() => ({ ...stats, pagesHeld: heldPages() })),
      ballooned: Effect.sync(() => M.rangesOfPfns([...held].flatMap((r) => r.heldPfns()))),
      sendStatus
    } satisfies Guest
  })

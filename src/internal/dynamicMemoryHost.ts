// The host side of Dynamic Memory for tests and simulations, shaped like QEMU's hw/hyperv/hv-balloon.c:
// accepts versions WIN7..WIN10, accepts the capabilities (hot_remove set, pressure reports on unless
// suppressed), records status reports, and runs one balloon / unballoon / hot-add transaction at a time.
// The pages the guest gives are remembered and checked: no page twice, and (when `memory` is given)
// every page allocated in guest memory — the guest must really have set them aside.
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as PubSub from "effect/PubSub"
import * as Queue from "effect/Queue"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as Channel from "../Channel.js"
import type * as GuestMemory from "../GuestMemory.js"
import type * as IncomingPacket from "../IncomingPacket.js"
import type * as Transport from "../Transport.js"
import { Cancelled, NegotiationFailed, ProtocolError } from "../VmbusError.js"
import * as M from "./dynamicMemoryMessages.js"

export const DEFAULT_INSTANCE = "4b6d6c7a-1f0e-4c39-9a52-2f7a3d0e8b11"

export interface HostOptions {
  /** Which versions to accept (default: QEMU's rule, WIN7 ≤ version ≤ WIN10). */
  readonly acceptVersion?: ((version: number) => boolean) | undefined
  /** Accept the guest's capabilities (default true; false makes the guest fail). */
  readonly acceptCapabilities?: boolean | undefined
  /** Ask the guest for no status reports (QEMU: `status-report=off`). Default false. */
  readonly suppressPressureReports?: boolean | undefined
  /** The longest one transaction (request and every answer) may take (default 30 seconds). */
  readonly replyTimeout?: Duration.DurationInput | undefined
  /** Instance GUID to offer. */
  readonly interfaceInstance?: string | undefined
  /** Guest memory to check returned pages against (in-memory transport). */
  readonly memory?: GuestMemory.GuestMemoryShape | undefined
}

export interface Negotiated {
  readonly version: number
  readonly capabilities: M.Capabilities
  readonly minPageCount: bigint
  readonly maxPageNumber: bigint
}

export interface StatusReport {
  /** `num_avail`. */
  readonly availablePages: bigint
  /** `num_committed`. */
  readonly committedPages: bigint
  /** The guest's transaction id of the report. */
  readonly transactionId: number
}

export interface HostStats {
  /** Every version request, with the answer given. */
  readonly versionRequests: ReadonlyArray<{ readonly version: number; readonly isLastAttempt: boolean; readonly accepted: boolean }>
  /** Status reports received. */
  readonly statusReports: number
  /** Guest messages that did not decode. */
  readonly malformed: number
  /** Guest messages out of place (e.g. a response outside its transaction). */
  readonly unexpected: number
  /** Pages the guest gave and the host has not returned. */
  readonly pagesHeld: number
}

export interface BalloonResult {
  /** Pages moved. */
  readonly pages: number
  /** The ranges, as carried by the messages. */
  readonly ranges: ReadonlyArray<M.PageRange>
  /** Messages of the transaction in the direction that carried the ranges. */
  readonly messages: number
}

export interface Host {
  /** The Dynamic Memory channel (server side). */
  readonly channel: Channel.OpenedChannel
  /** Waits until the guest finished negotiating (version and capabilities). */
  readonly negotiated: Effect.Effect<Negotiated, NegotiationFailed>
  /** Status reports as they arrive (the last 64 replayed to a new subscriber). */
  readonly statusReports: Stream.Stream<StatusReport>
  /** The last status report, if any. */
  readonly latestStatus: Effect.Effect<Option.Option<StatusReport>>
  /** Asks the guest for `pages` pages; returns what it gave (all responses of the transaction). */
  readonly balloon: (pages: number) => Effect.Effect<BalloonResult, HostError>
  /** Gives back up to `pages` of the pages the guest gave (oldest first), `rangesPerMessage` per request. */
  readonly unballoon: (pages: number, options?: { readonly rangesPerMessage?: number }) => Effect.Effect<BalloonResult, HostError>
  /** Offers memory to hot-add; returns the guest's `page_count` and `result`. */
  readonly hotAdd: (range: M.PageRange) => Effect.Effect<{ readonly pageCount: number; readonly result: number }, HostError>
  /** Sends raw bytes as one in-band packet (tests of malformed messages). */
  readonly sendRaw: (bytes: Uint8Array) => Effect.Effect<void, Channel.SendError>
  /** The pages the guest gave and the host still holds. */
  readonly held: Effect.Effect<ReadonlyArray<M.PageRange>>
  /** Counters. */
  readonly stats: Effect.Effect<HostStats>
  /** Protocol violations the host saw (malformed or unexpected guest messages), newest last. */
  readonly errors: Effect.Effect<ReadonlyArray<ProtocolError>>
}

export type HostError = Channel.SendError | ProtocolError | Cancelled

export const host = (
  options: HostOptions = {}
): Effect.Effect<Host, Channel.OpenError, Scope.Scope | Transport.Transport> =>
  Effect.gen(function*() {
    const acceptVersion = options.acceptVersion ?? ((v: number) => v >= M.VERSION_WIN7 && v <= M.VERSION_WIN10)
    const timeout = options.replyTimeout ?? Duration.seconds(30)
    const channel = yield* Channel.open({
      role: "server",
      interfaceType: M.DM_GUID,
      interfaceInstance: options.interfaceInstance ?? DEFAULT_INSTANCE,
      maxPacketSize: 8192,
      name: "dm-host"
    })
    const negotiated = yield* Deferred.make<Negotiated, NegotiationFailed>()
    const statusHub = yield* PubSub.unbounded<StatusReport>({ replay: 64 })
    const responses = yield* Queue.unbounded<M.Message>()
    const lock = yield* Effect.makeSemaphore(1)
    const versionRequests: Array<{ version: number; isLastAttempt: boolean; accepted: boolean }> = []
    const errors: Array<ProtocolError> = []
    let latest = Option.none<StatusReport>()
    let statusReports = 0
    let unexpected = 0
    let malformed = 0
    let state: "version" | "caps" | "ready" = "version"
    let expecting: M.MessageTag | undefined
    let transactionId = 0
    // Pages the guest gave, in order; a set guards against a page given twice.
    const heldRanges: Array<M.PageRange> = []
    const heldPfns = new Set<number>()

    const send = (message: M.Message) => Effect.flatMap(M.encode(message), (bytes) => channel.send(bytes))
    const violation = (reason: string) => Effect.sync(() => void errors.push(new ProtocolError({ reason: `DynamicMemory host: ${reason}` })))

    const handle = (packet: IncomingPacket.IncomingPacket): Effect.Effect<void> =>
      Effect.gen(function*() {
        const decoded = M.decode(packet.payload)
        if (Either.isLeft(decoded)) {
          malformed++
          return void errors.push(decoded.left)
        }
        const message = decoded.right
        switch (message._tag) {
          case "VersionRequest": {
            if (state !== "version") return yield* violation(`version request in state ${state}`)
            const accepted = acceptVersion(message.version)
            versionRequests.push({ version: message.version, isLastAttempt: message.isLastAttempt, accepted })
            yield* send({ _tag: "VersionResponse", transactionId: message.transactionId, isAccepted: accepted })
            if (accepted) state = "caps"
            else if (message.isLastAttempt) {
              yield* Deferred.fail(negotiated, new NegotiationFailed({
                service: "DynamicMemory",
                offered: versionRequests.map((r) => `0x${r.version.toString(16)}`),
                supported: []
              }))
            }
            return
          }
          case "CapabilitiesReport": {
            if (state !== "caps") return yield* violation(`capabilities report in state ${state}`)
            const accepted = options.acceptCapabilities ?? true
            yield* send({
              _tag: "CapabilitiesResponse",
              transactionId: message.transactionId,
              isAccepted: accepted,
              hotRemove: true,
              suppressPressureReports: options.suppressPressureReports ?? false
            })
            const version = versionRequests[versionRequests.length - 1]!.version
            if (accepted) {
              state = "ready"
              yield* Deferred.succeed(negotiated, {
                version,
                capabilities: message.capabilities,
                minPageCount: message.minPageCount,
                maxPageNumber: message.maxPageNumber
              })
            } else {
              yield* Deferred.fail(negotiated, new NegotiationFailed({ service: "DynamicMemory capabilities", offered: [], supported: [] }))
            }
            return
          }
          case "StatusReport": {
            statusReports++
            const report = { availablePages: message.numAvail, committedPages: message.numCommitted, transactionId: message.transactionId }
            latest = Option.some(report)
            return yield* PubSub.publish(statusHub, report)
          }
          case "BalloonResponse":
          case "UnballoonResponse":
          case "HotAddResponse":
            // Only the answer the running transaction waits for; anything else is a stray.
            if (expecting === message._tag) return yield* Queue.offer(responses, message)
            unexpected++
            return yield* violation(`${message._tag} outside its transaction`)
          default:
            unexpected++
            return yield* violation(`unexpected ${message._tag} from the guest`)
        }
      }).pipe(Effect.catchAll((error) => Effect.logDebug(`DynamicMemory host: answer not sent: ${error.message}`)))

    yield* Effect.forkScoped(channel.serve(handle, { concurrency: 1 }).pipe(Effect.ignore))

    // The handler queues only the tag `transaction` expects, so the cast holds.
    const nextResponse = <T extends M.MessageTag>(_tag: T): Effect.Effect<Extract<M.Message, { _tag: T }>> =>
      Effect.map(Queue.take(responses), (message) => message as Extract<M.Message, { _tag: T }>)

    /** One transaction at a time, bounded as a whole by `replyTimeout`. */
    const transaction = <A>(
      expect: M.MessageTag,
      body: (id: number) => Effect.Effect<A, HostError>
    ): Effect.Effect<A, HostError> =>
      lock.withPermits(1)(
        Effect.suspend(() => {
          const id = (transactionId = (transactionId + 1) >>> 0)
          expecting = expect
          return body(id).pipe(
            Effect.timeoutFail({
              duration: timeout,
              onTimeout: () => new Cancelled({ transactionId: BigInt(id), reason: `DynamicMemory host: no ${expect}` })
            }),
            Effect.ensuring(Effect.zipRight(Effect.sync(() => void (expecting = undefined)), Queue.takeAll(responses)))
          )
        })
      )

    const checkGiven = (range: M.PageRange): ProtocolError | undefined => {
      for (let pfn = range.startPage; pfn < range.startPage + range.pageCount; pfn++) {
        if (heldPfns.has(pfn)) return new ProtocolError({ reason: `DynamicMemory host: guest gave page 0x${pfn.toString(16)} twice` })
        if (options.memory !== undefined && !options.memory.isAllocated(pfn)) {
          return new ProtocolError({ reason: `DynamicMemory host: guest gave page 0x${pfn.toString(16)}, which it has not set aside` })
        }
      }
      return undefined
    }

    const balloon = (pages: number): Effect.Effect<BalloonResult, HostError> =>
      transaction("BalloonResponse", (id) => Effect.gen(function*() {
        yield* send({ _tag: "BalloonRequest", transactionId: id, numPages: pages })
        const ranges: Array<M.PageRange> = []
        let messages = 0
        let total = 0
        for (;;) {
          const response = yield* nextResponse("BalloonResponse")
          messages++
          for (const range of response.ranges) {
            const bad = checkGiven(range)
            if (bad !== undefined) return yield* bad
            for (let pfn = range.startPage; pfn < range.startPage + range.pageCount; pfn++) heldPfns.add(pfn)
            heldRanges.push(range)
            ranges.push(range)
            total += range.pageCount
          }
          if (!response.morePages) break
        }
        if (total > pages) return yield* new ProtocolError({ reason: `DynamicMemory host: asked for ${pages} pages, guest gave ${total}` })
        return { pages: total, ranges, messages }
      }))

    const takeHeld = (pages: number): Array<M.PageRange> => {
      const out: Array<M.PageRange> = []
      let left = pages
      while (left > 0 && heldRanges.length > 0) {
        const first = heldRanges[0]!
        const n = Math.min(left, first.pageCount)
        out.push({ startPage: first.startPage, pageCount: n })
        for (let pfn = first.startPage; pfn < first.startPage + n; pfn++) heldPfns.delete(pfn)
        if (n === first.pageCount) heldRanges.shift()
        else heldRanges[0] = { startPage: first.startPage + n, pageCount: first.pageCount - n }
        left -= n
      }
      return out
    }

    const unballoon = (pages: number, unballoonOptions?: { readonly rangesPerMessage?: number }) =>
      transaction("UnballoonResponse", (id) => Effect.gen(function*() {
        const ranges = takeHeld(pages)
        const per = Math.max(1, unballoonOptions?.rangesPerMessage ?? M.MAX_RANGES_PER_MESSAGE)
        let messages = 0
        for (let i = 0; i === 0 || i < ranges.length; i += per) {
          yield* send({ _tag: "UnballoonRequest", transactionId: id, morePages: i + per < ranges.length, ranges: ranges.slice(i, i + per) })
          messages++
        }
        yield* nextResponse("UnballoonResponse")
        return { pages: ranges.reduce((n, r) => n + r.pageCount, 0), ranges, messages }
      }))

    const hotAdd = (range: M.PageRange) =>
      transaction("HotAddResponse", (id) => Effect.gen(function*() {
        yield* send({ _tag: "HotAddRequest", transactionId: id, range, region: undefined })
        const response = yield* nextResponse("HotAddResponse")
        return { pageCount: response.pageCount, result: response.result }
      }))

    return {
      channel,
      negotiated: Deferred.await(negotiated),
      statusReports: Stream.fromPubSub(statusHub),
      latestStatus: Effect.sync(() => latest),
      balloon,
      unballoon,
      hotAdd,
      sendRaw: (bytes) => channel.send(bytes),
      held: Effect.sync(() => heldRanges.slice()),
      stats: Effect.sync(() => ({ versionRequests: versionRequests.slice(), statusReports, malformed, unexpected, pagesHeld: heldPfns.size })),
      errors: Effect.sync(() => errors.slice())
    } satisfies Host
  })

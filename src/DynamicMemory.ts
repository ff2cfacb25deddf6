/**
 * Hyper-V Dynamic Memory (the "balloon" device, class `525074dc-8985-46e2-8057-a307dc18a502`), both
 * sides, with the message layouts of Linux `drivers/hv/hv_balloon.c`:
 *
 * - `guest` does what Linux's `hv_balloon` does: negotiates the protocol version (WIN10, then WIN8,
 *   then WIN7 flagged as the last attempt), reports its capabilities (ballooning; hot-add is answered
 *   "not supported": page_count 0, result 1), sends a status report every second (available and
 *   committed pages, ballooned pages counted as committed) unless the host suppresses them, answers
 *   balloon requests with page ranges it really set aside, and gives pages back on unballoon requests.
 * - `host` plays QEMU's `hv-balloon`: accepts versions WIN7..WIN10 and the capabilities, records status
 *   reports, and runs balloon, unballoon and hot-add transactions, checking every page it is given.
 *
 * Pages come from the {@link BalloonPages} service: {@link layerGuestMemory} takes them from
 * `GuestMemory` (the in-memory transport). Every page set aside is owned by the guest's scope: pages
 * still held when the scope closes are released after the channel closed. Malformed host messages are
 * typed `ProtocolError`s (recorded as events; during negotiation they end it), never exceptions.
 *
 * The message table is a `Protocol.Protocol` keyed by `dm_header.type`; messages are framed by
 * `dm_header` (whose `size` gives the exact length inside the 8-byte-padded payload), not by
 * Protocol's own frame.
 *
 * @since 0.1.0
 */
import type * as Effect from "effect/Effect"
import type * as Layer from "effect/Layer"
import * as LayerNs from "effect/Layer"
import type * as Scope from "effect/Scope"
import type * as Channel from "./Channel.js"
import type * as GuestMemory from "./GuestMemory.js"
import * as guestInternal from "./internal/dynamicMemoryGuest.js"
import * as hostInternal from "./internal/dynamicMemoryHost.js"
import * as M from "./internal/dynamicMemoryMessages.js"
import * as pagesInternal from "./internal/dynamicMemoryPages.js"
import * as processInternal from "./internal/dynamicMemoryProcessPages.js"
import * as statusInternal from "./internal/dynamicMemoryStatus.js"
import type * as Transport from "./Transport.js"
import type { Unsupported } from "./VmbusError.js"

/**
 * Class GUID of the Dynamic Memory device (`HV_DM_GUID`).
 *
 * @since 0.1.0
 * @category constants
 */
export const DM_GUID: string = M.DM_GUID

/**
 * `DYNMEM_MAKE_VERSION(major, minor)`.
 *
 * @since 0.1.0
 * @category constants
 */
export const makeVersion: (major: number, minor: number) => number = M.makeVersion

/**
 * `DYNMEM_PROTOCOL_VERSION_WIN7` (0.3).
 *
 * @since 0.1.0
 * @category constants
 */
export const VERSION_WIN7: number = M.VERSION_WIN7

/**
 * `DYNMEM_PROTOCOL_VERSION_WIN8` (1.0).
 *
 * @since 0.1.0
 * @category constants
 */
export const VERSION_WIN8: number = M.VERSION_WIN8

/**
 * `DYNMEM_PROTOCOL_VERSION_WIN10` (2.0).
 *
 * @since 0.1.0
 * @category constants
 */
export const VERSION_WIN10: number = M.VERSION_WIN10

/**
 * The versions Linux tries, in order.
 *
 * @since 0.1.0
 * @category constants
 */
export const LINUX_VERSIONS: ReadonlyArray<number> = M.LINUX_VERSIONS

/**
 * Message type numbers (`enum dm_message_type`).
 *
 * @since 0.1.0
 * @category constants
 */
export const MessageType = {
  Error: M.DM_ERROR,
  VersionRequest: M.DM_VERSION_REQUEST,
  VersionResponse: M.DM_VERSION_RESPONSE,
  CapabilitiesReport: M.DM_CAPABILITIES_REPORT,
  CapabilitiesResponse: M.DM_CAPABILITIES_RESPONSE,
  StatusReport: M.DM_STATUS_REPORT,
  BalloonRequest: M.DM_BALLOON_REQUEST,
  BalloonResponse: M.DM_BALLOON_RESPONSE,
  UnballoonRequest: M.DM_UNBALLOON_REQUEST,
  UnballoonResponse: M.DM_UNBALLOON_RESPONSE,
  HotAddRequest: M.DM_MEM_HOT_ADD_REQUEST,
  HotAddResponse: M.DM_MEM_HOT_ADD_RESPONSE,
  InfoMessage: M.DM_INFO_MESSAGE
} as const

/**
 * Ranges that fit one balloon response of one page (510), as Linux sizes it.
 *
 * @since 0.1.0
 * @category constants
 */
export const MAX_RANGES_PER_MESSAGE: number = M.MAX_RANGES_PER_MESSAGE

/**
 * The message layouts (`BinarySchema` structs; bitfield words are whole fields, split by
 * {@link decode}). Sizes: header 8, version request/response 16, capabilities 32, capabilities
 * response 16, status 48, balloon 16, balloon response 16 + 8n, unballoon request 16 + 8n, unballoon
 * response 8, hot-add 16 (+ 8 with a region), hot-add response 16, info 16 + n.
 *
 * @since 0.1.0
 * @category layouts
 */
export const Layouts = {
  DmHeader: M.DmHeader,
  DmVersionRequest: M.DmVersionRequest,
  DmVersionResponse: M.DmVersionResponse,
  DmCapabilities: M.DmCapabilities,
  DmCapabilitiesResponse: M.DmCapabilitiesResponse,
  DmStatus: M.DmStatus,
  DmBalloon: M.DmBalloon,
  DmBalloonResponse: M.DmBalloonResponse,
  DmUnballoonRequest: M.DmUnballoonRequest,
  DmUnballoonResponse: M.DmUnballoonResponse,
  DmHotAdd: M.DmHotAdd,
  DmHotAddResponse: M.DmHotAddResponse,
  DmInfoMessage: M.DmInfoMessage,
  DmInfoHeader: M.DmInfoHeader
} as const

/**
 * The message table as a `Protocol.Protocol` (ids are `dm_header.type`).
 *
 * @since 0.1.0
 * @category layouts
 */
export const DynamicMemoryProtocol = M.DynamicMemoryProtocol

/**
 * A `dm_mem_page_range`: a first PFN (40 bits) and a page count (24 bits).
 *
 * @since 0.1.0
 * @category models
 */
export type PageRange = M.PageRange

/**
 * What a guest reports in `dm_capabilities.caps`.
 *
 * @since 0.1.0
 * @category models
 */
export type Capabilities = M.Capabilities

/**
 * Every Dynamic Memory message, decoded.
 *
 * @since 0.1.0
 * @category models
 */
export type Message = M.Message

/**
 * Encodes a message with its `dm_header` (`size` is set from the message).
 *
 * @since 0.1.0
 * @category codec
 */
export const encode = M.encode

/**
 * Decodes one message from a packet payload; lengths are checked against `dm_header.size` and the
 * payload, so a hostile peer gets a `ProtocolError`, never an exception.
 *
 * @since 0.1.0
 * @category codec
 */
export const decode = M.decode

/**
 * Coalesces PFNs into maximal ranges.
 *
 * @since 0.1.0
 * @category utils
 */
export const rangesOfPfns: (pfns: ReadonlyArray<number>) => Array<PageRange> = M.rangesOfPfns

/**
 * Pages set aside by one `BalloonPages.reserve` call, given back range by range or all at once.
 *
 * @since 0.1.0
 * @category models
 */
export type Reservation = pagesInternal.Reservation

/**
 * A source of pages to balloon: `reserve` sets pages aside, `heldPages` counts what is out.
 *
 * @since 0.1.0
 * @category models
 */
export type BalloonPagesShape = pagesInternal.BalloonPagesShape

/**
 * Where ballooned pages come from.
 *
 * @since 0.1.0
 * @category services
 */
export const BalloonPages = pagesInternal.BalloonPages

/**
 * @since 0.1.0
 * @category services
 */
export type BalloonPages = pagesInternal.BalloonPages

/**
 * Pages from a `GuestMemory`: contiguous allocations of at most `chunkPages` (default 512 = 2 MiB,
 * halved when memory is short). An allocation goes back to `GuestMemory` when its last page is given
 * back or when the guest's scope closes.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerGuestMemory: (
  options?: { readonly chunkPages?: number | undefined }
) => Layer.Layer<BalloonPages, never, GuestMemory.GuestMemory> = pagesInternal.layerGuestMemory

/**
 * {@link layerGuestMemory} without a layer.
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromGuestMemory: (
  memory: GuestMemory.GuestMemoryShape,
  options?: { readonly chunkPages?: number | undefined }
) => BalloonPagesShape = pagesInternal.fromGuestMemory

/**
 * Pages of this process, for a user-space guest driver on Linux (over `UioTransport`): anonymous
 * mappings faulted in, `mlock`ed and never touched (2 MiB chunks 2 MiB-aligned and advised as huge
 * pages, so that they are contiguous where the kernel can: one range, as Linux's 2 MiB pages), reported by
 * the guest-physical frame numbers /proc/self/pagemap gives (root only); given back with `munmap`.
 * The kernel still counts them as this process's memory, and compaction may migrate locked pages
 * unless `vm.compact_unevictable_allowed` is 0. Fails with `Unsupported` off Linux, without the
 * optional `koffi`, or when PFNs are hidden or `mlock` is refused.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerProcessPages = (
  options?: { readonly chunkPages?: number | undefined }
): Layer.Layer<BalloonPages, Unsupported> => LayerNs.scoped(pagesInternal.BalloonPages, processInternal.makeProcessPages(options))

/**
 * The figures of one status report, in 4 KiB pages.
 *
 * @since 0.1.0
 * @category models
 */
export type MemoryStatus = statusInternal.MemoryStatus

/**
 * The default status source: MemAvailable and Committed_AS from /proc/meminfo (what Linux reports),
 * else `os.freemem`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const readMemoryStatus: Effect.Effect<MemoryStatus> = statusInternal.readMemoryStatus

/**
 * Options of {@link guest}.
 *
 * @since 0.1.0
 * @category models
 */
export type GuestOptions = guestInternal.GuestOptions

/**
 * What the guest did, as it happened (negotiation, status, balloon, unballoon, hot-add, malformed input).
 *
 * @since 0.1.0
 * @category models
 */
export type GuestEvent = guestInternal.GuestEvent

/**
 * Counters of a running guest.
 *
 * @since 0.1.0
 * @category models
 */
export type GuestStats = guestInternal.GuestStats

/**
 * A running Dynamic Memory guest.
 *
 * @since 0.1.0
 * @category models
 */
export type Guest = guestInternal.Guest

/**
 * Every way {@link guest} can fail to start.
 *
 * @since 0.1.0
 * @category errors
 */
export type GuestError = guestInternal.GuestError

/**
 * Runs the guest side on the Dynamic Memory channel the host offers: negotiates, then serves until the
 * scope closes. Fails with `NegotiationFailed` when no version (or the capabilities) is accepted.
 *
 * @since 0.1.0
 * @category constructors
 */
export const guest: (
  options?: GuestOptions
) => Effect.Effect<Guest, GuestError, Scope.Scope | Transport.Transport | BalloonPages> = guestInternal.guest

/**
 * Options of {@link host}.
 *
 * @since 0.1.0
 * @category models
 */
export type HostOptions = hostInternal.HostOptions

/**
 * A running Dynamic Memory host and its operations.
 *
 * @since 0.1.0
 * @category models
 */
export type Host = hostInternal.Host

/**
 * Counters of a running host.
 *
 * @since 0.1.0
 * @category models
 */
export type HostStats = hostInternal.HostStats

/**
 * The pages a balloon or unballoon transaction moved.
 *
 * @since 0.1.0
 * @category models
 */
export type BalloonResult = hostInternal.BalloonResult

/**
 * One status report as the host received it.
 *
 * @since 0.1.0
 * @category models
 */
export type StatusReport = hostInternal.StatusReport

/**
 * Every way a host operation can fail.
 *
 * @since 0.1.0
 * @category errors
 */
export type HostError = hostInternal.HostError

/**
 * Runs the host side: offers the Dynamic Memory channel and answers the guest's negotiation. Run it
 * concurrently with the guest.
 *
 * @since 0.1.0
 * @category constructors
 */
export const host: (
  options?: HostOptions
) => Effect.Effect<Host, Channel.OpenError, Scope.Scope | Transport.Transport> = hostInternal.host

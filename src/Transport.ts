/**
 * The `Transport` service: everything a channel needs from below — the two rings of an open channel, a
 * doorbell to signal the other endpoint, a callback for its signals, and the channel's lifecycle events
 * from the other side (closed, rescinded). Channel code never knows which transport it runs on; a Layer
 * chooses (`InMemoryTransport.layer`, later shared-memory and uio).
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import type * as Effect from "effect/Effect"
import type * as Either from "effect/Either"
import type * as Scope from "effect/Scope"
import type { GuestBuffer, GuestMemoryShape } from "./GuestMemory.js"
import type {
  ChannelClosed,
  CloseReason,
  GpadlAlreadyMapped,
  GpadlCreateFailed,
  GpadlTooLarge,
  GpadlUnavailable,
  GpadlWriteMapOfReadOnly,
  InvalidMemoryRange,
  InvalidParameter,
  OpenRejected,
  OpenTimeout,
  OutOfMemory,
  TransportError,
  Unsupported
} from "./VmbusError.js"

/**
 * What a transport can do. A channel configuration asking for more fails with `Unsupported`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Capabilities {
  /** The client chooses its ring sizes (false under uio: the kernel picks them). */
  readonly ringGeometry: boolean
  /** Channels can be offered (host / VSP role). */
  readonly serverRole: boolean
  /** GPADLs can be created and mapped. */
  readonly gpadl: boolean
}

/**
 * Identifies a channel offer: its interface type (device class) and instance GUIDs, lowercase.
 *
 * @since 0.1.0
 * @category models
 */
export interface OfferIdentity {
  /** The interface type GUID: the device class, which fixes the protocol. */
  readonly interfaceType: string
  /** The interface instance GUID: which device of that class. */
  readonly interfaceInstance: string
  /** 0 for a primary channel. */
  readonly subChannelIndex?: number | undefined
}

/**
 * What the client asks for when it opens a channel.
 *
 * @since 0.1.0
 * @category models
 */
export interface OpenRequest {
  /** The interface type GUID of the channel to open. */
  readonly interfaceType: string
  /** Omit to open any instance of the type. */
  readonly interfaceInstance?: string | undefined
  /** Pages of the guest→host ring, control page included. */
  readonly outgoingRingPages: number
  /** Pages of the host→guest ring, control page included. */
  readonly incomingRingPages: number
  /** Bytes of OPENCHANNEL user data (at most 120). */
  readonly userData?: Uint8Array | undefined
}

/**
 * One side of an open channel, as a transport hands it to the channel layer.
 *
 * @since 0.1.0
 * @category models
 */
export interface Endpoint {
  /** Which end of the channel this endpoint is: `client` (guest, VSC) or `server` (host, VSP). */
  readonly role: "client" | "server"
  /** The offer this endpoint belongs to. */
  readonly identity: OfferIdentity
  /** The relative channel id the host assigned. */
  readonly childRelid: number
  /** The ring this endpoint writes (control page + data). */
  readonly outgoing: Uint8Array
  /** The ring this endpoint reads. */
  readonly incoming: Uint8Array
  /** Rings the other endpoint's doorbell. Synchronous; call only after a ring said "signal". */
  readonly signal: () => void
  /**
   * Installs the callback run on each signal from the other endpoint. A signal that arrived before
   * the callback was installed is delivered at installation, so no wake-up is lost.
   */
  readonly onSignal: (callback: () => void) => void
  /** Installs the callback run once when the other side closes or rescinds the channel. */
  readonly onPeerClose: (callback: (reason: CloseReason) => void) => void
  /** Per-endpoint counters the transport aggregates for diagnostics and leak checks. */
  readonly counters: EndpointCounters
  /**
   * Whether the rings may still be touched. False once the transport released them (the other side
   * closed and took its pages back, or this endpoint closed); a channel checks it before every ring
   * access. Omitted: the rings stay valid until the endpoint's scope closes.
   */
  readonly ringsValid?: (() => boolean) | undefined
  /**
   * Guest memory: on the client, where its buffers live; on the server, what GPA ranges and GPADLs
   * name. Undefined when the transport gives no access to it.
   */
  readonly memory: GuestMemoryShape | undefined
  /**
   * Client only: creates a GPADL over guest pages (header and body messages, then the host's
   * confirmation). Closing the scope tears it down and waits for the host's answer; a channel's close
   * tears down its GPADLs still alive (after CLOSECHANNEL) before it completes.
   */
  readonly createGpadl:
    | ((
      range: GpadlRange,
      options?: {
        readonly readOnly?: boolean | undefined
        /** The guest buffer the range belongs to: pinned until the GPADL is torn down. */
        readonly buffer?: GuestBuffer | undefined
      }
    ) => Effect.Effect<number, GpadlCreateFailed | GpadlTooLarge | InvalidParameter | ChannelClosed, Scope.Scope>)
    | undefined
  /**
   * Server only: maps a GPADL of this channel (one mapping at a time). The GPADL's teardown waits for
   * the mapping's scope to close; a mapping of a GPADL being torn down fails. The mapping belongs to
   * this endpoint's open period: revoked when it ends, and refused (`ChannelClosed`) after it ended.
   */
  readonly mapGpadl:
    | ((
      handle: number,
      options?: { readonly write?: boolean | undefined }
    ) => Effect.Effect<
      GpadlView,
      GpadlUnavailable | GpadlAlreadyMapped | GpadlWriteMapOfReadOnly | ChannelClosed,
      Scope.Scope
    >)
    | undefined
  /**
   * True when the channel must keep its incoming ring masked and never ask for space
   * (`pending_send_sz`): the transport signals it periodically instead (uio sub-channels on kernels
   * where their interrupts are unsafe). Default false.
   */
  readonly polled?: boolean | undefined
  /**
   * False when GPA-direct packets cannot be sent (no guest physical addresses, e.g. user space under
   * uio): requests with external data fail with `Unsupported{ externalData }`. Default true.
   */
  readonly gpaDirect?: boolean | undefined
}

/**
 * Guest pages a GPADL describes: `byteCount` bytes (default: all pages) from `byteOffset` into the first.
 *
 * @since 0.1.0
 * @category models
 */
export interface GpadlRange {
  /** The guest page frame numbers, in order. */
  readonly pfns: ReadonlyArray<number>
  /** Where the data starts in the first page (default 0). */
  readonly byteOffset?: number | undefined
  /** How many bytes the range covers (default: every page, minus `byteOffset`). */
  readonly byteCount?: number | undefined
}

/**
 * A host-side mapping of a GPADL. Reads and writes go to the guest pages; after the mapping is
 * revoked (its scope closed, or the channel closed) they fail with `GpadlUnavailable`.
 *
 * @since 0.1.0
 * @category models
 */
export interface GpadlView {
  /** The GPADL's handle. */
  readonly handle: number
  /** The length of the mapped range in bytes. */
  readonly byteLength: number
  /** Whether the mapping allows writes. */
  readonly writable: boolean
  /** Copies `length` bytes from `offset` of the guest pages. */
  readonly read: (offset: number, length: number) => Either.Either<Uint8Array, InvalidMemoryRange | GpadlUnavailable>
  /** Writes `data` at `offset` into the guest pages (a writable mapping only). */
  readonly write: (
    offset: number,
    data: Uint8Array
  ) => Either.Either<void, InvalidMemoryRange | GpadlUnavailable | GpadlWriteMapOfReadOnly>
}

/**
 * Counters an endpoint keeps for its transport's statistics.
 *
 * @since 0.1.0
 * @category models
 */
export interface EndpointCounters {
  /** Doorbells rung towards the other endpoint. */
  signalsSent: number
  /** Doorbells received from the other endpoint. */
  signalsReceived: number
  /** Kept up to date by the channel: requests sent and not yet completed. */
  outstandingTransactions: number
  /** Kept up to date by the channel: packets delivered and not yet completed. */
  outstandingPackets: number
  /** Kept up to date by the channel: external-data and transfer-page views not yet revoked. */
  liveViews?: number | undefined
}

/**
 * The server side of an offer: it waits for a client to open the channel.
 *
 * @since 0.1.0
 * @category models
 */
export interface Offer {
  /** The offered channel's identity. */
  readonly identity: OfferIdentity
  /** The relative channel id the host assigned to the offer. */
  readonly childRelid: number
  /** Waits until a client opens the channel and returns the server's endpoint. */
  readonly accept: Effect.Effect<Endpoint, ChannelClosed>
}

/**
 * A hook on the control plane: it sees every channel message a transport posts (encoded bytes) and
 * hands it on with `deliver` — at once, later, changed, or never. For fault injection and tracing.
 *
 * @since 0.1.0
 * @category models
 */
export type MessageInterceptor = (
  message: { readonly direction: "toHost" | "toGuest"; readonly bytes: Uint8Array },
  deliver: (bytes: Uint8Array) => void
) => void

/**
 * What a transport does: offer channels (server role) and open them (client role), handing the channel layer
 * an `Endpoint` with two rings and a doorbell. Implemented by every transport layer.
 *
 * @since 0.1.0
 * @category models
 */
export interface TransportShape {
  /** A short name for logs and spans (`in-memory`, `shared-memory`, …). */
  readonly name: string
  /** What the transport supports; the channel layer reports the rest as `Unsupported`. */
  readonly capabilities: Capabilities
  /**
   * Optional: installs a `MessageInterceptor` on the transport's control messages until the scope
   * closes (one at a time; a transport without an inspectable control plane leaves it undefined).
   */
  readonly interceptMessages?: ((interceptor: MessageInterceptor) => Effect.Effect<void, never, Scope.Scope>) | undefined
  /** Offers a channel (server role). Closing the scope rescinds the offer and closes any open channel. */
  readonly offer: (
    identity: OfferIdentity
  ) => Effect.Effect<Offer, Unsupported | InvalidParameter | TransportError, Scope.Scope>
  /**
   * Opens an offered channel (client role): waits for a matching offer, donates the rings, sends the
   * open request and waits for the result. Closing the scope closes the channel.
   */
  readonly open: (
    request: OpenRequest
  ) => Effect.Effect<
    Endpoint,
    | OpenRejected
    | OpenTimeout
    | Unsupported
    | InvalidParameter
    | TransportError
    | OutOfMemory
    | GpadlCreateFailed
    | GpadlTooLarge
    | ChannelClosed,
    Scope.Scope
  >
}

/**
 * The transport service: provide one of the transport layers (`InMemoryTransport.layer`, …) and channels open
 * through it.
 *
 * @since 0.1.0
 * @category tags
 */
export class Transport extends Context.Tag("effect-vmbus/Transport")<Transport, TransportShape>() {}

/**
 * GPADLs — guest buffers shared with the host, named by a u32 handle — as scoped resources, the way
 * KMCL's `VmbChannelCreateGpadlFromBuffer` / `VmbChannelDeleteGpadl` and the server's
 * `VmbChannelMapGpadl` / `VmbChannelUnmapGpadl` work:
 *
 * - `create` (client) sends GPADL_HEADER and as many GPADL_BODY messages as the page list needs (26
 *   PFNs in the header, 28 per body), and returns once the host answered GPADL_CREATED. Closing the
 *   scope sends GPADL_TEARDOWN and waits for GPADL_TORNDOWN, which the host defers while it has the
 *   GPADL mapped. A channel's close tears down its GPADLs still alive before it completes.
 * - `map` (server) maps a GPADL of the channel, one mapping at a time; a read-only GPADL cannot be
 *   mapped for writing; a GPADL being torn down cannot be mapped. The mapping is revoked when its
 *   scope closes or the channel's open period ends; after that, `map` fails with `ChannelClosed`.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type * as Channel from "./Channel.js"
import * as ChannelMessage from "./ChannelMessage.js"
import type * as GuestMemory from "./GuestMemory.js"
import type * as Transport from "./Transport.js"
import { spanAttributes } from "./internal/channelMetrics.js"
import type {
  ChannelClosed,
  GpadlAlreadyMapped,
  GpadlCreateFailed,
  GpadlTooLarge,
  GpadlUnavailable,
  GpadlWriteMapOfReadOnly,
  InvalidParameter,
  Unsupported
} from "./VmbusError.js"

/**
 * Handles are unique per VMBus connection, allocated from 0xE1E10 as Linux does; 0 means "no GPADL".
 *
 * @since 0.1.0
 * @category constants
 */
export const FIRST_HANDLE: number = ChannelMessage.FIRST_GPADL_HANDLE

/**
 * The most pages one GPADL range can describe (`range_buflen` is a u16).
 *
 * @since 0.1.0
 * @category constants
 */
export const MAX_PAGES: number = ChannelMessage.MAX_GPADL_PAGES

/**
 * A created GPADL.
 *
 * @since 0.1.0
 * @category models
 */
export interface Gpadl {
  /** The handle the host knows the GPADL by; pass it to the host in your protocol. */
  readonly handle: number
  /** The guest pages the GPADL describes. */
  readonly range: Transport.GpadlRange
  /** Whether the host was told not to map it for writing. */
  readonly readOnly: boolean
}

/**
 * A host-side mapping of a GPADL.
 *
 * @since 0.1.0
 * @category models
 */
export type GpadlView = Transport.GpadlView

/**
 * Options of `create`.
 *
 * @since 0.1.0
 * @category models
 */
export interface CreateOptions {
  /** KMCL `VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY`: the host may not map it for writing (a hint, not a boundary). */
  readonly readOnly?: boolean | undefined
}

const toRange = (source: GuestMemory.GuestBuffer | Transport.GpadlRange): Transport.GpadlRange =>
  "firstPfn" in source
    ? { pfns: source.pfns, byteOffset: 0, byteCount: (source as GuestMemory.GuestBuffer).byteLength }
    : source

/**
 * Creates a GPADL over a guest buffer (or an explicit page range) on a client channel. Resolves only
 * after the host confirmed it; closing the scope tears it down and waits for the host. The pages stay
 * pinned until the teardown; a released buffer, or a range over pages that are not a live allocation,
 * is `InvalidParameter`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const create = (
  channel: Channel.OpenedChannel,
  source: GuestMemory.GuestBuffer | Transport.GpadlRange,
  options?: CreateOptions
): Effect.Effect<
  Gpadl,
  GpadlCreateFailed | GpadlTooLarge | InvalidParameter | ChannelClosed | Unsupported,
  Scope.Scope
> =>
  Effect.suspend(() => {
    const range = toRange(source)
    const buffer = "firstPfn" in source ? (source as GuestMemory.GuestBuffer) : undefined
    return Effect.map(
      channel.createGpadl(range, { readOnly: options?.readOnly, buffer }),
      (handle): Gpadl => ({ handle, range, readOnly: options?.readOnly === true })
    )
  }).pipe(Effect.withSpan("vmbus.gpadl.create", { attributes: { ...spanAttributes(channel), "vmbus.pages": toRange(source).pfns.length } }))

/**
 * Maps a GPADL of a server channel for reading and writing (`write: false` for a read-only mapping).
 *
 * @since 0.1.0
 * @category constructors
 */
export const map = (
  channel: Channel.OpenedChannel,
  handle: number,
  options?: { readonly write?: boolean | undefined }
): Effect.Effect<
  GpadlView,
  GpadlUnavailable | GpadlAlreadyMapped | GpadlWriteMapOfReadOnly | ChannelClosed | Unsupported,
  Scope.Scope
> =>
  channel.mapGpadl(handle, options).pipe(
    Effect.withSpan("vmbus.gpadl.map", { attributes: { ...spanAttributes(channel), "vmbus.gpadl": handle } })
  )

/**
 * The in-memory transport: a simulated Hyper-V host (server endpoints, VSPs) and guest (client
 * endpoints, VSCs) in one process. A complete implementation, not a mock: the control plane exchanges
 * the real VMBus channel messages — offers, GPADL header/body/created/teardown/torndown, open and
 * close, rescind — encoded to their byte layouts (at most 240 bytes) and validated on receipt; rings
 * and GPADLs live in `GuestMemory` and the data path runs the byte-exact rings. A second tag,
 * `Control`, lets tests look inside: counted signals and messages, open channels with their raw rings,
 * injected control messages, and a host-side rescind.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as GuestMemory from "./GuestMemory.js"
import * as internal from "./internal/inMemoryTransport.js"
import * as Transport from "./Transport.js"
import type { InvalidParameter, OutOfMemory } from "./VmbusError.js"

/**
 * Counts of what the in-memory bus holds and has done; every resource count returns to zero once everything
 * closed.
 *
 * @since 0.1.0
 * @category models
 */
export type TransportStats = internal.TransportStats & {
  readonly guestPagesAllocated: number
  /** Guest allocations kept alive by a pin (a pending transaction, a GPADL, a transfer page set). */
  readonly pinnedBuffers: number
}

/**
 * An open channel as the test control sees it: its relid, identity, raw rings and both endpoints' counters.
 *
 * @since 0.1.0
 * @category models
 */
export type OpenChannelInfo = internal.OpenChannelInfo

/**
 * One recorded control message (see `Options.recordMessages`).
 *
 * @since 0.1.0
 * @category models
 */
export type MessageLogEntry = internal.MessageLogEntry

/**
 * Test control of an in-memory transport.
 *
 * @since 0.1.0
 * @category models
 */
export interface ControlShape {
  /**
   * Offers, open channels, GPADLs, signals, messages and outstanding work, summed over every endpoint;
   * pinned guest buffers and live views of guest memory — all zero once everything closed.
   */
  readonly stats: Effect.Effect<TransportStats>
  /** The open channels with their raw rings and per-endpoint counters. */
  readonly openChannels: Effect.Effect<ReadonlyArray<OpenChannelInfo>>
  /** The host rescinds an offer (the client sees `ChannelClosed{ reason: "Rescinded" }`). False if unknown. */
  readonly rescind: (interfaceInstance: string) => Effect.Effect<boolean>
  /** Delivers raw bytes as a channel message, as if the other side had posted them. */
  readonly injectMessage: (direction: "toHost" | "toGuest", bytes: Uint8Array) => Effect.Effect<void>
  /** Every control message exchanged so far (when made with `recordMessages: true`). */
  readonly messages: Effect.Effect<ReadonlyArray<MessageLogEntry>>
}

/**
 * The test control of the in-memory bus (provided by its layers): statistics, the message log, raw rings,
 * message injection and rescinds.
 *
 * @since 0.1.0
 * @category tags
 */
export class Control extends Context.Tag("effect-vmbus/InMemoryTransport/Control")<Control, ControlShape>() {}

/**
 * Options of the in-memory transport.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Record every control message for `Control.messages` (default false). */
  readonly recordMessages?: boolean | undefined
  /**
   * An isolated (confidential) guest: accept offers of these interface types only, ignore the rest and
   * count them in `offersIgnored` (Linux `vmbus_is_valid_offer`). Default: accept every offer.
   */
  readonly allowedInterfaceTypes?: ReadonlyArray<string> | undefined
}

/**
 * Builds an in-memory transport over the given guest memory.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  memory: GuestMemory.GuestMemoryShape,
  options?: Options
): Effect.Effect<{ readonly transport: Transport.TransportShape; readonly control: ControlShape }> =>
  Effect.sync(() => {
    const bus = new internal.Bus(memory, {
      recordMessages: options?.recordMessages === true,
      allowedInterfaceTypes: options?.allowedInterfaceTypes
    })
    const transport: Transport.TransportShape = {
      name: "in-memory",
      capabilities: { ringGeometry: true, serverRole: true, gpadl: true },
      offer: (identity) => bus.offer(identity),
      open: (request) => bus.open(request),
      interceptMessages: (interceptor) =>
        Effect.acquireRelease(
          Effect.sync(() => {
            bus.interceptor = interceptor
          }),
          () =>
            Effect.sync(() => {
              if (bus.interceptor === interceptor) bus.interceptor = undefined
            })
        )
    }
    const control: ControlShape = {
      stats: Effect.map(
        Effect.all([memory.allocatedPages, memory.pinnedBuffers]),
        ([pages, pinnedBuffers]) => ({ ...bus.stats(), guestPagesAllocated: pages, pinnedBuffers })
      ),
      openChannels: Effect.sync(() => bus.openChannels()),
      rescind: (instance) => Effect.sync(() => bus.rescindByInstance(instance)),
      injectMessage: (direction, bytes) => Effect.sync(() => bus.postBytes(direction, bytes)),
      messages: Effect.sync(() => bus.log ?? [])
    }
    return { transport, control }
  })

/**
 * Provides `Transport` and `Control` over the `GuestMemory` in the context.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerWithMemory = (
  options?: Options
): Layer.Layer<Transport.Transport | Control, never, GuestMemory.GuestMemory> =>
  Layer.effectContext(
    Effect.flatMap(GuestMemory.GuestMemory, (memory) =>
      Effect.map(make(memory, options), ({ control, transport }) =>
        Context.make(Transport.Transport, transport).pipe(Context.add(Control, control))
      ))
  )

/**
 * Provides `Transport`, `Control` and a fresh `GuestMemory` of `memoryPages` 4 KiB pages (default
 * 16384, 64 MiB).
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  options?: Options & { readonly memoryPages?: number | undefined }
): Layer.Layer<Transport.Transport | Control | GuestMemory.GuestMemory, InvalidParameter | OutOfMemory> =>
  layerWithMemory(options).pipe(
    Layer.provideMerge(GuestMemory.layerMemory({ pages: options?.memoryPages ?? 16384 }))
  )

/**
 * `layerConfig()` with defaults; a construction failure (impossible with the defaults) is a defect.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<Transport.Transport | Control | GuestMemory.GuestMemory> = Layer.orDie(layerConfig())

/**
 * The in-memory transport: a server endpoint (host, VSP) and a client endpoint (guest, VSC) in one
 * process, over byte-exact VMBus rings. A complete implementation, not a mock: tests and benchmarks run
 * the same channel code a real device would. A second tag, `Control`, lets tests look inside: counted
 * signals, open channels and their raw rings (to corrupt them), and a host-side rescind.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as internal from "./internal/inMemoryTransport.js"
import * as Transport from "./Transport.js"

/**
 * @since 0.1.0
 * @category models
 */
export type TransportStats = internal.TransportStats

/**
 * @since 0.1.0
 * @category models
 */
export type OpenChannelInfo = internal.OpenChannelInfo

/**
 * Test control of an in-memory transport.
 *
 * @since 0.1.0
 * @category models
 */
export interface ControlShape {
  /** Offers, open channels, signals and outstanding work, summed over every endpoint. */
  readonly stats: Effect.Effect<TransportStats>
  /** The open channels with their raw rings and per-endpoint counters. */
  readonly openChannels: Effect.Effect<ReadonlyArray<OpenChannelInfo>>
  /** The host rescinds an offer (the client sees `ChannelClosed{ reason: "Rescinded" }`). Returns false if unknown. */
  readonly rescind: (interfaceInstance: string) => Effect.Effect<boolean>
}

/**
 * @since 0.1.0
 * @category tags
 */
export class Control extends Context.Tag("effect-vmbus/InMemoryTransport/Control")<Control, ControlShape>() {}

/**
 * Builds an in-memory transport and its control.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: Effect.Effect<{ readonly transport: Transport.TransportShape; readonly control: ControlShape }> =
  Effect.sync(() => {
    const bus = new internal.Bus()
    const transport: Transport.TransportShape = {
      name: "in-memory",
      capabilities: { ringGeometry: true, serverRole: true, gpadl: true },
      offer: (identity) => bus.offer(identity),
      open: (request) => bus.open(request)
    }
    const control: ControlShape = {
      stats: Effect.sync(() => bus.stats()),
      openChannels: Effect.sync(() => bus.openChannels()),
      rescind: (instance) => Effect.sync(() => bus.rescindByInstance(instance))
    }
    return { transport, control }
  })

/**
 * Provides `Transport` and `Control` with a fresh in-memory bus.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<Transport.Transport | Control> = Layer.effectContext(
  Effect.map(make, ({ control, transport }) =>
    Context.make(Transport.Transport, transport).pipe(Context.add(Control, control))
  )
)

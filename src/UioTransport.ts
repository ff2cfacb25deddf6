/**
 * The native transport: a real VMBus channel of a Linux guest, driven from user space through the
 * kernel's `uio_hv_generic` driver (as DPDK and the kernel's fcopy daemon do), with the project's own
 * ring code running on the mmap'd rings. Client role only.
 *
 * How to open a channel with it (the device must be bound to `uio_hv_generic` first, see the README):
 *
 * ```ts
 * const program = Effect.scoped(Effect.gen(function*() {
 *   const channel = yield* Channel.open({ role: "client", interfaceType: "525074dc-8985-46e2-8057-a307dc18a502" })
 *   yield* channel.send(payload)
 * }))
 * program.pipe(Effect.provide(UioTransport.layer({ device: "<instance guid>" })))
 * ```
 *
 * The layer finds the device under sysfs (`sysfsRoot`, default `/sys`) by instance GUID and checks its
 * binding and maps; opening the channel opens `/dev/uioN` (the kernel sends OPENCHANNEL and resets the
 * rings), maps the rings (TX first), waits for interrupts with `koffi.node.poll` on the fd (no thread,
 * the event loop keeps running) and signals the host as the channel requires: atomic ORs on the
 * interrupt and monitor pages for a monitored channel, `write(fd, 1)` otherwise. Do not pass ring page
 * counts (the kernel chooses the sizes). Closing the channel's scope revokes every mapping, then closes
 * the fd (the kernel sends CLOSECHANNEL). A rescind (`POLLERR`, `EIO`) revokes the mappings at once and
 * closes the channel with `ChannelClosed{ Rescinded }`.
 *
 * Not available (typed `Unsupported`, never a crash): the server role, ring geometry, GPADL creation
 * and mapping, OPENCHANNEL user data, GPA-direct external data (user space knows no guest physical
 * addresses), and system pages other than 4 KiB. `koffi` is an optional peer dependency (`npm install
 * koffi`), loaded on first use.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import * as backend from "./internal/uio/backend.js"
import * as files from "./internal/uio/files.js"
import * as native from "./internal/uio/native.js"
import * as internal from "./internal/uio/transport.js"
import * as Transport from "./Transport.js"
import type { Unsupported } from "./VmbusError.js"

/**
 * What `layer` needs: the device's instance GUID, and optionally other roots, the exclusive lock and
 * the sub-channel mode.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options extends internal.Options {}

/**
 * Errors of building the layer: the device is missing, bound to another driver, its sysfs values or
 * maps are not what the kernel writes, or the platform (koffi, page size) is unsupported.
 *
 * @since 0.1.0
 * @category errors
 */
export type DiscoveryError = internal.DiscoveryError

/**
 * The device behind the transport (see `UioDevice`).
 *
 * @since 0.1.0
 * @category models
 */
export interface UioDeviceShape extends internal.UioDeviceShape {}

/**
 * Counters of the device's resources, for diagnostics and leak checks.
 *
 * @since 0.1.0
 * @category models
 */
export interface Stats extends internal.Stats {}

/**
 * The device behind the transport: what sysfs says about it, its receive/send buffers, its sub-channels.
 *
 * @since 0.1.0
 * @category tags
 */
export class UioDevice extends Context.Tag("effect-vmbus/UioDevice")<UioDevice, UioDeviceShape>() {}

/**
 * The three calls that differ between a real `/dev/uioN` and an emulated device: open the device, map
 * one of its maps, take the exclusive lock.
 *
 * @since 0.1.0
 * @category models
 */
export interface Backend extends backend.Backend {}

/**
 * The backend service: `layerBackend` for the real device; tests provide an emulated one.
 *
 * @since 0.1.0
 * @category tags
 */
export const UioBackend: typeof internal.UioBackend = internal.UioBackend

/**
 * The real device backend (loads koffi).
 *
 * @since 0.1.0
 * @category layers
 */
export const layerBackend: Layer.Layer<internal.UioBackend, Unsupported> = Layer.effect(
  internal.UioBackend,
  Effect.map(native.load, backend.device)
)

/**
 * What discovery reads files with. `@effect/platform`'s `FileSystem` fits it as it is
 * (`Layer.effect(UioFiles, FileSystem.FileSystem)`); the default reads through `node:fs/promises`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Files extends files.Files {}

/**
 * The file reader service discovery uses.
 *
 * @since 0.1.0
 * @category tags
 */
export const UioFiles: typeof files.UioFiles = files.UioFiles

/**
 * Files read through `node:fs/promises`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerFiles: Layer.Layer<files.UioFiles> = Layer.succeed(files.UioFiles, files.nodeFiles)

/**
 * The transport and its device over an injected backend and file reader (tests, emulated devices).
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options: Options
): Effect.Effect<
  { readonly transport: Transport.TransportShape; readonly device: UioDeviceShape },
  DiscoveryError,
  Scope.Scope | internal.UioBackend | files.UioFiles
> => internal.make(options)

/**
 * `Transport` and `UioDevice` over the backend and file reader in the context.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerWith = (
  options: Options
): Layer.Layer<Transport.Transport | UioDevice, DiscoveryError, internal.UioBackend | files.UioFiles> =>
  Layer.scopedContext(
    Effect.map(internal.make(options), ({ device, transport }) =>
      Context.make(Transport.Transport, transport).pipe(Context.add(UioDevice, device)))
  )

/**
 * The transport over the real device: `/sys`, `/dev`, koffi, `node:fs`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options): Layer.Layer<Transport.Transport | UioDevice, DiscoveryError> =>
  layerWith(options).pipe(Layer.provide(Layer.merge(layerBackend, layerFiles)))

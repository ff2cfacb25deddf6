/**
 * The shared-memory transport: the data path of a channel across threads. The guest (client) side
 * runs in another thread (`worker_threads`); the host side and the control plane stay in the thread
 * that owns the in-memory bus. `serveGuest` opens channels through the in-memory `Transport` on the
 * remote guest's behalf; the guest's `Transport` (`make` / `layerGuest`) hands its channels `Endpoint`s
 * whose rings are views on the same `GuestMemory` `SharedArrayBuffer`, so packets never cross the
 * `MessagePort`: only open/close requests and peer-close events do. Signals are doorbell words in a
 * shared `Int32Array` (`Atomics.add` + `Atomics.notify`, received with `Atomics.waitAsync`, or, as
 * `WaitOptions` choose, after a short spin or in `Atomics.wait`).
 *
 * This first version is client-only on the guest side: no offers (`Unsupported{ capability:
 * "serverRole" }`), no GPADLs (`createGpadl` / `mapGpadl` undefined) and no guest memory access
 * (`Endpoint.memory` undefined). The guest's endpoint counters live in the guest thread, so the
 * in-memory `Control.stats` does not see its outstanding transactions.
 *
 * @since 0.1.0
 */
import * as Layer from "effect/Layer"
import type * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type { MessagePort } from "node:worker_threads"
import type * as GuestMemory from "./GuestMemory.js"
import * as internal from "./internal/sharedMemoryTransport.js"
import * as Transport from "./Transport.js"
import type { InvalidParameter } from "./VmbusError.js"

/**
 * The memory both threads share: the guest memory pages (the rings) and the doorbell words. Posting
 * it (in `workerData`) shares the buffers, it does not copy them.
 *
 * @since 0.1.0
 * @category models
 */
export interface SharedBuffers extends internal.SharedBuffers {}

/**
 * A connection between the host thread and one guest thread: two ends of a `MessageChannel` and the
 * shared buffers. Transfer `guestPort` to the worker in `transferList`, pass `shared` in `workerData`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Connection extends internal.Connection {}

/**
 * The host thread's view of a served guest.
 *
 * @since 0.1.0
 * @category models
 */
export interface GuestServer extends internal.GuestServer {}

/**
 * Every error the guest's `open` may fail with: the host's typed error, rebuilt with its tag, or a
 * `TransportError` when the connection ended.
 *
 * @since 0.1.0
 * @category errors
 */
export type OpenError = internal.OpenError

/**
 * How a thread waits for the doorbells rung towards it (the last argument of `make`, `layerGuest` and
 * `serveGuest`; each side chooses its own). By default it waits with `Atomics.waitAsync`: the event
 * loop stays free, and a wake-up across threads costs some tens of µs. Out-of-range values fail the
 * constructor with `InvalidParameter{ field }`.
 *
 * @since 0.1.0
 * @category models
 */
export interface WaitOptions {
  /**
   * Spin before parking: after the work a signal started has run (its microtasks and fibers; the poll
   * is scheduled with `setImmediate`), poll the doorbell for up to this many µs before falling back to
   * waiting. Adaptive per channel: a poll that finds the next signal doubles the budget (up to this
   * value), one that times out halves it down to 0, and a channel at 0 probes with the full budget
   * again every 64 waits. Helps request/response latency when both threads have a core of their own;
   * on a busy machine it only takes the peer's CPU. A finite number in 0..1000; default 0 (no spinning).
   */
  readonly spinMicros?: number | undefined
  /**
   * Block instead of waiting asynchronously: when every channel of this side is idle, the thread sleeps
   * in `Atomics.wait` (the fastest cross-thread wake-up), for 1 ms after activity and up to
   * `blockMillis` while it stays idle, then lets its event loop turn (timers, messages) and blocks
   * again. **This blocks the thread's event loop for up to `blockMillis` at a time**: meant for a worker
   * whose only job is this connection. Worker threads only (`InvalidParameter` on the main thread); a
   * finite number in 0..50; default 0 (off).
   */
  readonly blockMillis?: number | undefined
}

/**
 * Creates a connection over the `GuestMemory` in the context (which must be the memory of the
 * in-memory bus that `serveGuest` uses) with doorbells for `maxChannels` simultaneously open channels
 * (default 64).
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeConnection: (
  options?: { readonly maxChannels?: number | undefined }
) => Effect.Effect<Connection, InvalidParameter, GuestMemory.GuestMemory> = internal.makeConnection

/**
 * Host thread: answers the guest's requests arriving on `port`. An open runs `Transport.open` (the
 * in-memory transport in the context) in a scope kept per remote channel and replies with where the
 * rings lie in `shared.memory` and which doorbell slot the channel uses; a close (or the guest's
 * port closing, e.g. the worker exited) closes that scope. Signals and peer closes are bridged both
 * ways. Closing the scope closes every remote channel (the guest sees `PeerClose`) and the port.
 * `options` says how this thread waits for the guest's signals (`WaitOptions`; invalid ones fail with
 * `InvalidParameter`).
 *
 * @since 0.1.0
 * @category constructors
 */
export const serveGuest: {
  (port: MessagePort, shared: SharedBuffers): Effect.Effect<GuestServer, never, Transport.Transport | Scope.Scope>
  (
    port: MessagePort,
    shared: SharedBuffers,
    options: WaitOptions | undefined
  ): Effect.Effect<GuestServer, InvalidParameter, Transport.Transport | Scope.Scope>
} = internal.serveGuest as typeof serveGuest

/**
 * Guest thread: a client-only `Transport` over the connection's guest end. Capabilities
 * `{ ringGeometry: true, serverRole: false, gpadl: false }`. Closing an endpoint's scope asks the host
 * to close the channel and waits for its answer; closing this scope closes the port. The port keeps
 * the thread alive while a channel is open (or an open or close is under way), not longer.
 * `options` says how this thread waits for the host's signals (`WaitOptions`; invalid ones fail with
 * `InvalidParameter`).
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: {
  (port: MessagePort, shared: SharedBuffers): Effect.Effect<Transport.TransportShape, never, Scope.Scope>
  (
    port: MessagePort,
    shared: SharedBuffers,
    options: WaitOptions | undefined
  ): Effect.Effect<Transport.TransportShape, InvalidParameter, Scope.Scope>
} = internal.make as typeof make

/**
 * Provides the guest side's `Transport` (see `make`).
 *
 * @since 0.1.0
 * @category layers
 */
export const layerGuest: {
  (port: MessagePort, shared: SharedBuffers): Layer.Layer<Transport.Transport>
  (port: MessagePort, shared: SharedBuffers, options: WaitOptions | undefined): Layer.Layer<Transport.Transport, InvalidParameter>
} = ((port: MessagePort, shared: SharedBuffers, options?: WaitOptions) =>
  Layer.scoped(Transport.Transport, internal.make(port, shared, options))) as typeof layerGuest

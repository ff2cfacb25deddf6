/**
 * Channels as scoped resources, with the semantics of Microsoft's VMBus Kernel Mode Client Library:
 * `open` (`VmbChannelEnable`; closing the scope is `VmbChannelDisable`), `send` (`VmbPacketSend`),
 * `request` (`WAIT_FOR_COMPLETION` / `VmbChannelSendSynchronousRequest`), incoming packets as scoped
 * resources completed exactly once (`EvtVmbChannelProcessPacket` / `VmbChannelPacketComplete`), the
 * transaction quota, pause and start. Runs on whatever `Transport` the environment provides.
 *
 * @since 0.1.0
 */
import type * as Effect from "effect/Effect"
import type * as Either from "effect/Either"
import type * as Scope from "effect/Scope"
import * as internal from "./internal/channel.js"
import type * as Transport from "./Transport.js"
import type { InvalidParameter } from "./VmbusError.js"

/**
 * The channel configuration, validated with Schema. A union on `role`:
 * - `client` (guest, VSC): `interfaceType`, optional `interfaceInstance` (any instance if omitted),
 *   `outgoingRingPages` / `incomingRingPages` (control page included; default 16 each);
 * - `server` (host, VSP): `interfaceType` and `interfaceInstance` to offer; ring sizes come from the client.
 *
 * Common fields and defaults: `maxPacketSize` 4096 (largest payload sent or completion returned; bounds
 * the length of an accepted incoming packet; `16 + roundUp8(size) + 8` must fit each ring), `transactionQuota` 64 (incoming packets delivered and not completed),
 * `maxOutstandingTransactions` 1024, `maxExternalPages` 1024, `drainTimeoutMillis` 5000,
 * `openTimeoutMillis` 10000, `strictCompletions` false (an unknown completion ends the channel when
 * true), `readBatchLimit` 128 (packets per wake-up), `metricsFlushMillis` 1000, `name` (metric label),
 * `unknownPackets` `"skip"` — what to do with a packet of a type other than in-band, transfer pages, GPA
 * direct or completion, or a data packet with flag bits other than bit 0: `"skip"` consumes it, reports
 * an `UnknownPacket` event and counts it (as Linux drivers log and skip); `"deliver"` hands it to
 * consumers like any packet (`kind: "Unknown"`, or its own kind with `packet.flags`), completed exactly
 * once; `"fail"` ends the open period as `Corrupt` (OpenVMM's rule). Whatever the policy, the packet is
 * consumed: a reader is never stuck behind it. Completions are matched on their id whatever their flags.
 *
 * **`failureCompletion`** (default: empty): the payload of every completion the library writes on the
 * application's behalf — a `serve` handler that fails, dies or returns a result too large to send, a
 * packet whose scope closes without `complete`, packets still held at close. At most `maxPacketSize`
 * bytes (`InvalidParameter` otherwise). With the default the
 * requester cannot tell a failure from a successful empty reply: give the channel a payload your
 * protocol reads as an error (a status word, say). Handler failures are also reported on `events`
 * (`HandlerFailed`) and logged at warning level.
 *
 * Metrics (Effect `Metric`, labelled `channel` and `role`): `vmbus_packets_sent`, `vmbus_bytes_sent`,
 * `vmbus_packets_received`, `vmbus_bytes_received`, `vmbus_completions_sent`,
 * `vmbus_completions_received`, `vmbus_unknown_completions`, `vmbus_auto_completed`,
 * `vmbus_handler_failures`, `vmbus_completions_dropped`, `vmbus_unknown_packets`, `vmbus_signals_sent`,
 * `vmbus_signals_received`, `vmbus_ring_full_waits`,
 * `vmbus_requests_outstanding` (gauge), `vmbus_request_latency_ms` (histogram, request written →
 * completion read). The channel counts in plain fields and adds the deltas to the metrics every 256
 * events, at least every `metricsFlushMillis` while anything changed (0: no timer), and at close;
 * `stats` is the exact, immediate view. Spans `vmbus.channel.open`, `vmbus.channel.close`,
 * `vmbus.channel.request` (and `vmbus.gpadl.create` / `vmbus.gpadl.map`) carry
 * `vmbus.interface_type`, `vmbus.interface_instance`, `vmbus.relid` and `vmbus.role`.
 * `serve` runs `concurrency` workers (default: the transaction quota at the time `serve` starts, at
 * most 64; at most 1024 when given).
 *
 * @since 0.1.0
 * @category models
 */
export const ChannelConfig = internal.ChannelConfig

/**
 * @since 0.1.0
 * @category models
 */
export type ChannelConfig = internal.ChannelConfig

/**
 * The configuration as the caller writes it (optional fields may be omitted).
 *
 * @since 0.1.0
 * @category models
 */
export type ChannelConfigInput = internal.ChannelConfigInput

/**
 * `Opening` → `Active` ⇄ `Paused` → `Closing` → `Closed`.
 *
 * @since 0.1.0
 * @category models
 */
export type ChannelState = internal.ChannelState

/**
 * Counters of one open channel: the exact, immediate view of what the channel metrics report.
 *
 * @since 0.1.0
 * @category models
 */
export type ChannelStats = internal.ChannelStats

/**
 * A reported problem on `events`: `UnknownCompletion` / `DuplicateCompletion` (the peer completed a
 * transaction this side does not have), `InvalidExternalData`, `PacketFailed` (`packet.fail`),
 * `HandlerFailed` (a `serve` handler failed and the packet got `failureCompletion`), and the fatal
 * `RingCorrupt`. `events` is a sliding buffer of 256 per subscriber: subscribe before the traffic
 * you want to watch.
 *
 * @since 0.1.0
 * @category models
 */
export type ChannelEvent = internal.ChannelEvent

/**
 * Options of `send`, `sendBatch` and `sendPacket`: what to do when the ring is full.
 *
 * @since 0.1.0
 * @category models
 */
export type SendOptions = internal.SendOptions

/**
 * Options of `request`: ring-full behaviour, a timeout for the wait, external data (GPA ranges or guest
 * buffers) and a settlement callback.
 *
 * @since 0.1.0
 * @category models
 */
export type RequestOptions = internal.RequestOptions

/**
 * Every error a send may fail with.
 *
 * @since 0.1.0
 * @category errors
 */
export type SendError = internal.SendError

/**
 * Every error a request may fail with: a send error, `Cancelled` (timeout or interruption of the wait) or
 * `TooManyTransactions`.
 *
 * @since 0.1.0
 * @category errors
 */
export type RequestError = internal.RequestError

/**
 * Every error receiving (`take`, `packets`, `serve`) may fail with: the open period ended, or the ring or a
 * packet is corrupt.
 *
 * @since 0.1.0
 * @category errors
 */
export type ReceiveError = internal.ReceiveError

/**
 * The restricted capability `onStarted` receives: sending only — no requests, so nothing in Started can
 * wait for a completion or an incoming packet (KMCL: the incoming queue is not running yet).
 *
 * @since 0.1.0
 * @category models
 */
export type Sender = internal.Sender

/**
 * An open channel: one open period, ended by closing its scope, a peer close, a rescind or a corrupt
 * ring.
 *
 * @since 0.1.0
 * @category models
 */
export type OpenedChannel = internal.OpenedChannel

/**
 * Lifecycle hooks, run in KMCL order: `onOpened` → `onStarted` → (incoming queue starts) →
 * `onPostStarted` … `onSuspend` → `onClosed`. A failure of the first three rolls the open back.
 *
 * @since 0.1.0
 * @category models
 */
export type Hooks<E = never> = internal.Hooks<E>

/**
 * Every error opening a channel may fail with.
 *
 * @since 0.1.0
 * @category errors
 */
export type OpenError = internal.OpenError

/**
 * Opens a channel as a scoped resource. A client waits for a matching offer and opens it; a server
 * offers and waits for a client. Both wait at most `openTimeoutMillis` (`OpenTimeout`). Closing the
 * scope runs Suspend, waits for outstanding incoming packets and queued completions (at most
 * `drainTimeoutMillis`, then completes the packets with the failure payload and drops the completions
 * the peer left no room for), fails pending requests with `ChannelClosed`, and closes (client) or
 * rescinds (server). A corrupt ring runs all of this at once, without waiting for the scope.
 *
 * @since 0.1.0
 * @category constructors
 */
export const open: <E = never>(
  config: ChannelConfigInput,
  hooks?: Hooks<E>
) => Effect.Effect<OpenedChannel, OpenError | E, Scope.Scope | Transport.Transport> = internal.open

/**
 * Validates a configuration without opening anything.
 *
 * @since 0.1.0
 * @category constructors
 */
export const decodeConfig: (config: ChannelConfigInput) => Either.Either<ChannelConfig, InvalidParameter> =
  internal.decodeConfig

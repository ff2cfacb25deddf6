/**
 * Hyper-V integration services — heartbeat, shutdown, time synchronization and key-value pair
 * exchange — over channels, on both sides:
 *
 * - `guest` does what a Linux guest's `hv_utils` and KVP daemon do: negotiates versions (the first of
 *   its versions the host offers, as `vmbus_prep_negotiate_resp`; no common version is answered with
 *   counts 0/0 and reported), answers heartbeats with the sequence number plus one, acknowledges
 *   shutdown requests and then runs a user effect, exposes host time samples and the computed clock
 *   offset as a `Stream`, and answers KVP get, set, delete and enumerate from a `KvpStore` (in memory by
 *   default).
 * - `host` does what Hyper-V does: offers the four service channels, negotiates, sends heartbeats,
 *   time samples, KVP operations and shutdown requests, and records the answers.
 *
 * Messages use the real layouts (`IcMessages`); malformed ones get typed errors and failure replies.
 *
 * @since 0.1.0
 */
import * as internal from "./internal/integrationServices.js"

/**
 * The four services: `heartbeat`, `shutdown`, `timesync`, `kvp`.
 *
 * @since 0.1.0
 * @category models
 */
export type ServiceName = internal.ServiceName

/**
 * Interface type GUIDs of the four services.
 *
 * @since 0.1.0
 * @category constants
 */
export const ServiceGuids: Readonly<Record<ServiceName, string>> = internal.ServiceGuids

/**
 * The largest IC packet the services accept (a whole `hv_kvp_msg` plus headers).
 *
 * @since 0.1.0
 * @category constants
 */
export const IC_MAX_PACKET_SIZE: number = internal.IC_MAX_PACKET_SIZE

/**
 * Where the guest keeps KVP pairs, per pool. `memoryKvpStore` is one in memory; implement it to persist them.
 *
 * @since 0.1.0
 * @category models
 */
export type KvpStore = internal.KvpStore

/**
 * A KVP store in memory: one map per pool, enumerated in insertion order.
 *
 * @since 0.1.0
 * @category constructors
 */
export const memoryKvpStore: () => KvpStore = internal.memoryKvpStore

/**
 * A shutdown, reboot or hibernation request the guest acknowledged.
 *
 * @since 0.1.0
 * @category models
 */
export type ShutdownRequest = internal.ShutdownRequest

/**
 * A host time sample as the guest received it, with the computed clock offset.
 *
 * @since 0.1.0
 * @category models
 */
export type TimeSample = internal.TimeSample

/**
 * The framework and message versions a service agreed on.
 *
 * @since 0.1.0
 * @category models
 */
export type Negotiation = internal.Negotiation

/**
 * Something the guest services did or refused, as it happened (see `GuestServices.events`).
 *
 * @since 0.1.0
 * @category models
 */
export type GuestEvent = internal.GuestEvent

/**
 * Options of `guest`: the shutdown effect, hibernation, the KVP store, versions and services to run.
 *
 * @since 0.1.0
 * @category models
 */
export type GuestOptions = internal.GuestOptions

/**
 * Counters of the guest services.
 *
 * @since 0.1.0
 * @category models
 */
export type GuestStats = internal.GuestStats

/**
 * The running guest services: KVP store, negotiation results, events, time samples, shutdown requests,
 * statistics and the channels.
 *
 * @since 0.1.0
 * @category models
 */
export type GuestServices = internal.GuestServices

/**
 * Options of `host`: versions, reply timeout, services and instance GUIDs.
 *
 * @since 0.1.0
 * @category models
 */
export type HostOptions = internal.HostOptions

/**
 * The simulated host's operations: heartbeats, time samples, KVP operations and shutdown requests, each
 * waiting for the guest's answer.
 *
 * @since 0.1.0
 * @category models
 */
export type HostServices = internal.HostServices

/**
 * One answer the host received from the guest, as recorded by `HostServices.replies`.
 *
 * @since 0.1.0
 * @category models
 */
export type Reply = internal.Reply

/**
 * One KVP pair, as enumerated.
 *
 * @since 0.1.0
 * @category models
 */
export type KvpEntry = internal.KvpEntry

/**
 * Every error a host operation may fail with.
 *
 * @since 0.1.0
 * @category errors
 */
export type HostError = internal.HostError

/**
 * Runs the guest side: opens the service channels the host offers and answers on them until the
 * scope closes.
 *
 * @since 0.1.0
 * @category constructors
 */
export const guest = internal.guest

/**
 * Runs the host side: offers the service channels, waits for the guest to open them, negotiates,
 * and returns the operations. Run it concurrently with the guest.
 *
 * @since 0.1.0
 * @category constructors
 */
export const host = internal.host

/**
 * Builds a host→guest IC request packet (pipe header, IC header, body).
 *
 * @since 0.1.0
 * @category constructors
 */
export const buildRequest = internal.buildRequest

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
 * @since 0.1.0
 * @category models
 */
export type ShutdownRequest = internal.ShutdownRequest

/**
 * @since 0.1.0
 * @category models
 */
export type TimeSample = internal.TimeSample

/**
 * @since 0.1.0
 * @category models
 */
export type Negotiation = internal.Negotiation

/**
 * @since 0.1.0
 * @category models
 */
export type GuestEvent = internal.GuestEvent

/**
 * @since 0.1.0
 * @category models
 */
export type GuestOptions = internal.GuestOptions

/**
 * @since 0.1.0
 * @category models
 */
export type GuestStats = internal.GuestStats

/**
 * @since 0.1.0
 * @category models
 */
export type GuestServices = internal.GuestServices

/**
 * @since 0.1.0
 * @category models
 */
export type HostOptions = internal.HostOptions

/**
 * @since 0.1.0
 * @category models
 */
export type HostServices = internal.HostServices

/**
 * @since 0.1.0
 * @category models
 */
export type Reply = internal.Reply

/**
 * @since 0.1.0
 * @category models
 */
export type KvpEntry = internal.KvpEntry

/**
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

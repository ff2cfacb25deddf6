// Hyper-V integration services over channels, both sides. Wire behaviour follows Linux hv_util.c /
// hv_kvp.c: the host sends an in-band packet (vmbuspipe_hdr + icmsg_hdr + body) with a transaction id;
// the guest answers with the same buffer, icflags = TRANSACTION | RESPONSE, in a new in-band packet
// carrying the same transaction id.
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as FiberId from "effect/FiberId"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as PubSub from "effect/PubSub"
import * as Ref from "effect/Ref"
import { Notifier } from "./notifier.js"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as BinarySchema from "../BinarySchema.js"
import * as Channel from "../Channel.js"
import * as Ic from "../IcMessages.js"
import type * as IncomingPacket from "../IncomingPacket.js"
import type * as Transport from "../Transport.js"
import { Cancelled, NegotiationFailed, ProtocolError } from "../VmbusError.js"

export type ServiceName = "heartbeat" | "shutdown" | "timesync" | "kvp"

export const ServiceGuids: Readonly<Record<ServiceName, string>> = {
  heartbeat: Ic.HV_HEART_BEAT_GUID,
  shutdown: Ic.HV_SHUTDOWN_GUID,
  timesync: Ic.HV_TS_GUID,
  kvp: Ic.HV_KVP_GUID
}

/** Instance GUIDs the simulated host offers (any instance works for the guest). */
export const DefaultInstances: Readonly<Record<ServiceName, string>> = {
  heartbeat: "fd149e91-82e0-4a7d-afa6-2a4166cbd7c0",
  shutdown: "b6650ff7-33bc-4840-8048-e0676786f393",
  timesync: "2dd1ce17-079e-403c-b352-a1921ee207ee",
  kvp: "242ff919-07db-4180-9c2e-b86cb68c8c55"
}

export const MessageVersions: Readonly<Record<ServiceName, ReadonlyArray<Ic.IcVersion>>> = {
  heartbeat: Ic.HB_VERSIONS,
  shutdown: Ic.SD_VERSIONS,
  timesync: Ic.TS_VERSIONS,
  kvp: Ic.KVP_VERSIONS
}

const SERVICES: ReadonlyArray<ServiceName> = ["heartbeat", "shutdown", "timesync", "kvp"]

/** Big enough for a whole hv_kvp_msg (7430 bytes) after the 28-byte IC header. */
export const IC_MAX_PACKET_SIZE = 8192

const errorText = (error: ParseResult.ParseError): string => ParseResult.TreeFormatter.formatErrorSync(error)

const versionText = (v: Ic.IcVersion): string => `${v.major}.${v.minor}`

// ---------------------------------------------------------------------------------------------
// Packets
// ---------------------------------------------------------------------------------------------

const OFFSET_STATUS = Ic.VMBUSPIPE_HDR_SIZE + 12
const OFFSET_ICFLAGS = Ic.VMBUSPIPE_HDR_SIZE + 17
const OFFSET_ICMSGSIZE = Ic.VMBUSPIPE_HDR_SIZE + 10

const encodeHeader = BinarySchema.encodeInto(Ic.IcPacketHeader)

/** Builds a host request: pipe header, IC header, body. */
export const buildRequest = (options: {
  readonly type: number
  readonly framework: Ic.IcVersion
  readonly message: Ic.IcVersion
  readonly transactionId: number
  readonly body: Uint8Array
}): Uint8Array => {
  const packet = new Uint8Array(Ic.ICMSG_HDR + options.body.length)
  encodeHeader({
    pipe_hdr: { flags: 0, msgsize: Ic.ICMSG_HDR_SIZE + options.body.length },
    icmsg_hdr: {
      icverframe: options.framework,
      icmsgtype: options.type,
      icvermsg: options.message,
      icmsgsize: Math.min(options.body.length, 0xffff),
      status: Ic.HV_S_OK,
      ictransaction_id: options.transactionId & 0xff,
      icflags: Ic.ICMSGHDRFLAG_TRANSACTION | Ic.ICMSGHDRFLAG_REQUEST
    }
  }, packet)
  packet.set(options.body, Ic.ICMSG_HDR)
  return packet
}

const negotiateBody = (framework: ReadonlyArray<Ic.IcVersion>, message: ReadonlyArray<Ic.IcVersion>): Uint8Array =>
  BinarySchema.encodeSync(Ic.IcMsgNegotiate)({ framework_versions: framework, message_versions: message })

/** Turns a received request into its response in place: flags, status, and an optional new body. */
/**
 * Turns a received request into its response the way Linux does: the same bytes with icflags =
 * TRANSACTION | RESPONSE, the status written only when it reports a failure, and `body` written over
 * the request's body (the buffer grows, and icmsgsize with it, only if the body is longer).
 */
const respond = (request: Uint8Array, status: number, body?: Uint8Array): Uint8Array => {
  const grows = body !== undefined && Ic.ICMSG_HDR + body.length > request.length
  const response = new Uint8Array(grows ? Ic.ICMSG_HDR + body!.length : request.length)
  response.set(request)
  const view = new DataView(response.buffer)
  if (body !== undefined) {
    response.set(body, Ic.ICMSG_HDR)
    if (grows) view.setUint16(OFFSET_ICMSGSIZE, Math.min(body.length, 0xffff), true)
  }
  if (status !== Ic.HV_S_OK) view.setUint32(OFFSET_STATUS, status >>> 0, true)
  view.setUint8(OFFSET_ICFLAGS, Ic.ICMSGHDRFLAG_TRANSACTION | Ic.ICMSGHDRFLAG_RESPONSE)
  return response
}

/** Timesync 4.0 and later carry `ictimesync_ref_data` (Linux: ts_srv_version > TS_VERSION_3). */
const usesRefData = (negotiation: Negotiation | undefined): boolean =>
  negotiation !== undefined && ((negotiation.message.major << 16) | negotiation.message.minor) > (3 << 16)

// ---------------------------------------------------------------------------------------------
// KVP store
// ---------------------------------------------------------------------------------------------

export interface KvpStore {
  /** Looks a key up in a pool. */
  readonly get: (pool: number, key: string) => Effect.Effect<Option.Option<string>>
  /** Sets a key in a pool. */
  readonly set: (pool: number, key: string, value: string) => Effect.Effect<void>
  /** Deletes a key from a pool; false when it was not there. */
  readonly delete: (pool: number, key: string) => Effect.Effect<boolean>
  /** The `index`-th entry of the pool in insertion order. */
  readonly enumerate: (pool: number, index: number) => Effect.Effect<Option.Option<readonly [string, string]>>
}

export const memoryKvpStore = (): KvpStore => {
  const pools = new Map<number, Map<string, string>>()
  const pool = (n: number) => {
    let p = pools.get(n)
    if (p === undefined) {
      p = new Map()
      pools.set(n, p)
    }
    return p
  }
  return {
    get: (n, key) => Effect.sync(() => Option.fromNullable(pool(n).get(key))),
    set: (n, key, value) => Effect.sync(() => void pool(n).set(key, value)),
    delete: (n, key) => Effect.sync(() => pool(n).delete(key)),
    enumerate: (n, index) =>
      Effect.sync(() => {
        const entries = Array.from(pool(n).entries())
        return Option.fromNullable(entries[index])
      })
  }
}

// ---------------------------------------------------------------------------------------------
// Guest side
// ---------------------------------------------------------------------------------------------

export interface ShutdownRequest {
  /** What the host asked for. */
  readonly kind: "shutdown" | "reboot" | "hibernate"
  /** Whether the host asked for a forced shutdown. */
  readonly force: boolean
  /** The reason code the host sent. */
  readonly reasonCode: number
  /** The time-out the host sent, in seconds. */
  readonly timeoutSeconds: number
}

export interface TimeSample {
  /** Host time, Unix epoch milliseconds (from `parenttime`, 100 ns units since 1601). */
  readonly hostTimeMillis: number
  /** The guest clock when the sample was handled. */
  readonly guestTimeMillis: number
  /** `hostTimeMillis − guestTimeMillis`: how far the guest clock is behind the host. */
  readonly offsetMillis: number
  /** `ICTIMESYNCFLAG_SYNC` (1) asks the guest to step its clock; `SAMPLE` (2) is a periodic sample. */
  readonly flags: number
  /** Which time-sync message layout carried the sample: `ref` (with reference time) or `legacy`. */
  readonly version: "ref" | "legacy"
}

export interface Negotiation {
  /** The negotiated framework version. */
  readonly framework: Ic.IcVersion
  /** The negotiated message version. */
  readonly message: Ic.IcVersion
}

export type GuestEvent =
  | { readonly _tag: "Negotiated"; readonly service: ServiceName; readonly negotiation: Negotiation }
  | { readonly _tag: "NegotiationFailed"; readonly service: ServiceName; readonly error: NegotiationFailed }
  | { readonly _tag: "Heartbeat"; readonly sequence: bigint }
  | { readonly _tag: "TimeSample"; readonly sample: TimeSample }
  | { readonly _tag: "Kvp"; readonly operation: string; readonly pool: number; readonly key: string; readonly status: number }
  | { readonly _tag: "Shutdown"; readonly request: ShutdownRequest; readonly status: number }
  | { readonly _tag: "Malformed"; readonly service: ServiceName; readonly error: ProtocolError }

export interface GuestOptions {
  /** Run after the shutdown request was acknowledged. */
  readonly onShutdown?: ((request: ShutdownRequest) => Effect.Effect<void>) | undefined
  /** Accept hibernation requests (Linux: only when hibernation is enabled). Default false. */
  readonly allowHibernate?: boolean | undefined
  /** Where KVP pairs live (default: a new `memoryKvpStore()`). */
  readonly kvpStore?: KvpStore | undefined
  /** Versions the guest supports, per service, most preferred first (default: Linux's lists). */
  readonly frameworkVersions?: ReadonlyArray<Ic.IcVersion> | undefined
  /** Message versions per service, most preferred first (default: Linux's lists). */
  readonly messageVersions?: Partial<Record<ServiceName, ReadonlyArray<Ic.IcVersion>>> | undefined
  /** Services to run (default all four). */
  readonly services?: ReadonlyArray<ServiceName> | undefined
}

export interface GuestStats {
  /** Heartbeats answered. */
  readonly heartbeats: number
  /** Time samples received. */
  readonly timeSamples: number
  /** KVP operations answered. */
  readonly kvpOperations: number
  /** Shutdown requests answered. */
  readonly shutdowns: number
  /** Malformed messages (answered with a failure status where possible, or dropped). */
  readonly malformed: number
  /** Version negotiations that found no common version. */
  readonly negotiationFailures: number
}

export interface GuestServices {
  /** The KVP store the guest answers from. */
  readonly kvp: KvpStore
  /** The versions each service negotiated so far. */
  readonly negotiated: Effect.Effect<ReadonlyMap<ServiceName, Negotiation>>
  /** What the guest services do, as it happens. */
  readonly events: Stream.Stream<GuestEvent>
  /** Host time samples as they arrive. */
  readonly timeSamples: Stream.Stream<TimeSample>
  /** The last time sample received, if any. */
  readonly latestTimeSample: Effect.Effect<Option.Option<TimeSample>>
  /** Waits for the first acknowledged shutdown request. */
  readonly shutdownRequested: Effect.Effect<ShutdownRequest>
  /** Counters of the guest services. */
  readonly stats: Effect.Effect<GuestStats>
  /** The open service channels, by service. */
  readonly channels: ReadonlyMap<ServiceName, Channel.OpenedChannel>
}

const decodeHeartbeat = BinarySchema.decodePrefix(Ic.HeartbeatMsgData)
const encodeHeartbeat = BinarySchema.encodeSync(Ic.HeartbeatMsgData)
const decodeShutdown = BinarySchema.decodePrefix(Ic.ShutdownMsgData)
const decodeTimeRef = BinarySchema.decodePrefix(Ic.IcTimesyncRefData)
const decodeTimeLegacy = BinarySchema.decodePrefix(Ic.IcTimesyncData)

export const guest = (
  options: GuestOptions = {}
): Effect.Effect<GuestServices, Channel.OpenError, Scope.Scope | Transport.Transport> =>
  Effect.gen(function*() {
    const kvp = options.kvpStore ?? memoryKvpStore()
    const framework = options.frameworkVersions ?? Ic.UTIL_FW_VERSIONS
    const negotiated = new Map<ServiceName, Negotiation>()
    const hub = yield* PubSub.unbounded<GuestEvent>({ replay: 1024 })
    const latest = yield* Ref.make(Option.none<TimeSample>())
    const shutdownDeferred = yield* Deferred.make<ShutdownRequest>()
    const stats = { heartbeats: 0, timeSamples: 0, kvpOperations: 0, shutdowns: 0, malformed: 0, negotiationFailures: 0 }
    const publish = (event: GuestEvent) => PubSub.publish(hub, event)

    const malformed = (service: ServiceName, reason: string) => {
      stats.malformed++
      // Rate-limited: a hostile host must not flood the log (hardening §1.5).
      const log = stats.malformed <= 10 || stats.malformed % 1000 === 0
        ? Effect.logWarning(`integration services: malformed ${service} message (#${stats.malformed}): ${reason}`)
        : Effect.void
      return Effect.zipRight(
        publish({ _tag: "Malformed", service, error: new ProtocolError({ reason: `${service}: ${reason}` }) }),
        log
      )
    }

    const handleKvp = (request: Uint8Array, body: Uint8Array): Effect.Effect<Uint8Array> =>
      Effect.gen(function*() {
        const decoded = Ic.decodeKvpMessage(body)
        if (Either.isLeft(decoded)) {
          yield* malformed("kvp", errorText(decoded.left))
          return respond(request, Ic.HV_E_FAIL)
        }
        const message = decoded.right
        stats.kvpOperations++
        const pool = message.kvp_hdr.pool
        const reply = (status: number, updated?: Ic.KvpMessage, key = "") =>
          Effect.gen(function*() {
            yield* publish({ _tag: "Kvp", operation: message._tag, pool, key, status })
            if (updated === undefined) return respond(request, status)
            const encoded = Ic.encodeKvpMessage(updated)
            if (Either.isLeft(encoded)) return respond(request, Ic.HV_E_FAIL)
            return respond(request, status, encoded.right)
          })
        if (pool > Ic.KVP_POOL_AUTO_INTERNAL) return yield* reply(Ic.HV_E_FAIL)
        switch (message._tag) {
          case "Set": {
            const value = Ic.kvpValueOf(message.kvp_set.data)
            const text = value instanceof Uint8Array ? Array.from(value, (b) => b.toString(16).padStart(2, "0")).join("") : String(value)
            yield* kvp.set(pool, message.kvp_set.data.key, text)
            return yield* reply(Ic.HV_S_OK, undefined, message.kvp_set.data.key)
          }
          case "Get": {
            const key = message.kvp_get.data.key
            const found = yield* kvp.get(pool, key)
            // The Linux daemon answers a failed get with HV_S_CONT (hv_kvp_daemon.c).
            if (Option.isNone(found)) return yield* reply(Ic.HV_S_CONT, undefined, key)
            const data = Ic.kvpStringValue(key, found.value)
            if (Either.isLeft(data)) return yield* reply(Ic.HV_E_FAIL, undefined, key)
            return yield* reply(Ic.HV_S_OK, { ...message, kvp_get: { data: data.right } }, key)
          }
          case "Delete": {
            const key = message.kvp_delete.key
            const removed = yield* kvp.delete(pool, key)
            return yield* reply(removed ? Ic.HV_S_OK : Ic.HV_S_CONT, undefined, key)
          }
          case "Enumerate": {
            const entry = yield* kvp.enumerate(pool, message.kvp_enum_data.index)
            // HV_S_CONT tells the host the enumeration is over (Linux daemon).
            if (Option.isNone(entry)) return yield* reply(Ic.HV_S_CONT)
            const data = Ic.kvpStringValue(entry.value[0], entry.value[1])
            if (Either.isLeft(data)) return yield* reply(Ic.HV_E_FAIL)
            return yield* reply(
              Ic.HV_S_OK,
              { ...message, kvp_enum_data: { index: message.kvp_enum_data.index, data: data.right } },
              entry.value[0]
            )
          }
          case "Other":
            return yield* reply(Ic.HV_ERROR_NOT_SUPPORTED)
        }
      })

    const handle = (
      service: ServiceName,
      channel: Channel.OpenedChannel
    ) =>
    (packet: IncomingPacket.IncomingPacket): Effect.Effect<void, never> =>
      Effect.gen(function*() {
        const request = packet.payload
        const header = Ic.decodeIcHeader(request)
        if (Either.isLeft(header)) {
          // Without a readable header there is nothing to answer in: record and drop.
          return yield* malformed(service, errorText(header.left))
        }
        const type = header.right.icmsg_hdr.icmsgtype
        const body = request.subarray(Ic.ICMSG_HDR)
        let response: Uint8Array
        if (type === Ic.ICMSGTYPE_NEGOTIATE) {
          const result = Ic.negotiate(request, {
            framework,
            message: options.messageVersions?.[service] ?? MessageVersions[service]
          })
          if (Either.isLeft(result)) {
            yield* malformed(service, errorText(result.left))
            response = respond(request, Ic.HV_E_FAIL)
          } else if (result.right._tag === "Negotiated") {
            const negotiation = { framework: result.right.framework, message: result.right.message }
            negotiated.set(service, negotiation)
            yield* publish({ _tag: "Negotiated", service, negotiation })
            response = result.right.response
          } else {
            stats.negotiationFailures++
            const error = new NegotiationFailed({
              service,
              offered: [...result.right.offeredFramework, ...result.right.offeredMessage].map(versionText),
              supported: [...framework, ...(options.messageVersions?.[service] ?? MessageVersions[service])].map(versionText)
            })
            yield* publish({ _tag: "NegotiationFailed", service, error })
            response = result.right.response
          }
        } else if (service === "heartbeat" && type === Ic.ICMSGTYPE_HEARTBEAT) {
          // Linux needs only seq_num ("host may not fill it up entirely") and patches it in place.
          if (body.length < 8) {
            yield* malformed(service, `heartbeat body of ${body.length} bytes, seq_num needs 8`)
            response = respond(request, Ic.HV_E_FAIL)
          } else {
            stats.heartbeats++
            const sequence = new DataView(body.buffer, body.byteOffset, 8).getBigUint64(0, true)
            const next = new Uint8Array(8)
            new DataView(next.buffer).setBigUint64(0, (sequence + 1n) & 0xffff_ffff_ffff_ffffn, true)
            response = respond(request, Ic.HV_S_OK, next)
            yield* publish({ _tag: "Heartbeat", sequence })
          }
        } else if (service === "shutdown" && type === Ic.ICMSGTYPE_SHUTDOWN) {
          const decoded = decodeShutdown(body)
          if (Either.isLeft(decoded)) {
            yield* malformed(service, errorText(decoded.left))
            response = respond(request, Ic.HV_E_FAIL)
          } else {
            const data = decoded.right.value
            const force = (data.flags & 1) === 1
            const base = data.flags & ~1
            const kind: ShutdownRequest["kind"] | undefined = base === 0
              ? "shutdown"
              : base === 2
              ? "reboot"
              : base === 4
              ? "hibernate"
              : undefined
            const accepted = kind !== undefined && (kind !== "hibernate" || options.allowHibernate === true)
            const status = accepted ? Ic.HV_S_OK : Ic.HV_E_FAIL
            response = respond(request, status)
            if (kind !== undefined) {
              const shutdownRequest: ShutdownRequest = {
                kind,
                force,
                reasonCode: data.reason_code,
                timeoutSeconds: data.timeout_seconds
              }
              yield* publish({ _tag: "Shutdown", request: shutdownRequest, status })
              if (accepted) {
                stats.shutdowns++
                // Acknowledge first, then act (Linux schedules the work after responding).
                yield* channel.sendPacket({ _tag: "InBand", transactionId: packet.packet.transactionId, completionRequested: false, payload: response }).pipe(Effect.ignore)
                yield* Deferred.succeed(shutdownDeferred, shutdownRequest)
                if (options.onShutdown) yield* options.onShutdown(shutdownRequest)
                return
              }
            } else {
              yield* malformed(service, `unknown shutdown flags 0x${data.flags.toString(16)}`)
            }
          }
        } else if (service === "timesync" && type === Ic.ICMSGTYPE_TIMESYNC) {
          const refData = usesRefData(negotiated.get("timesync"))
          const now = yield* Clock.currentTimeMillis
          const toUnixMillis = (parenttime: bigint) => Number(parenttime - Ic.WLTIMEDELTA) / 10_000
          let sample: TimeSample | undefined
          if (refData) {
            const decoded = decodeTimeRef(body)
            if (Either.isRight(decoded)) {
              const host = toUnixMillis(decoded.right.value.parenttime)
              sample = { hostTimeMillis: host, guestTimeMillis: now, offsetMillis: host - now, flags: decoded.right.value.flags, version: "ref" }
            } else yield* malformed(service, errorText(decoded.left))
          } else {
            const decoded = decodeTimeLegacy(body)
            if (Either.isRight(decoded)) {
              const host = toUnixMillis(decoded.right.value.parenttime)
              sample = { hostTimeMillis: host, guestTimeMillis: now, offsetMillis: host - now, flags: decoded.right.value.flags, version: "legacy" }
            } else yield* malformed(service, errorText(decoded.left))
          }
          if (sample !== undefined) {
            stats.timeSamples++
            yield* Ref.set(latest, Option.some(sample))
            yield* publish({ _tag: "TimeSample", sample })
            response = respond(request, Ic.HV_S_OK)
          } else {
            response = respond(request, Ic.HV_E_FAIL)
          }
        } else if (service === "kvp" && type === Ic.ICMSGTYPE_KVPEXCHANGE) {
          response = yield* handleKvp(request, body)
        } else {
          // Linux's util callbacks answer any other message type with HV_E_FAIL.
          yield* malformed(service, `unexpected message type ${type}`)
          response = respond(request, Ic.HV_E_FAIL)
        }
        yield* channel.sendPacket({
          _tag: "InBand",
          transactionId: packet.packet.transactionId,
          completionRequested: false,
          payload: response
        }).pipe(Effect.catchAll((error) => Effect.logDebug(`integration services: ${service} reply not sent: ${error.message}`)))
      })

    const wanted = options.services ?? SERVICES
    const channels = new Map<ServiceName, Channel.OpenedChannel>()
    yield* Effect.forEach(wanted, (service) =>
      Effect.gen(function*() {
        const channel = yield* Channel.open({
          role: "client",
          interfaceType: ServiceGuids[service],
          maxPacketSize: IC_MAX_PACKET_SIZE,
          name: `ic-guest-${service}`
        })
        channels.set(service, channel)
        yield* Effect.forkScoped(channel.serve(handle(service, channel)).pipe(Effect.ignore))
      }), { concurrency: "unbounded", discard: true })

    return {
      kvp,
      negotiated: Effect.sync(() => new Map(negotiated)),
      events: Stream.fromPubSub(hub),
      timeSamples: Stream.filterMap(Stream.fromPubSub(hub), (event) =>
        event._tag === "TimeSample" ? Option.some(event.sample) : Option.none()),
      latestTimeSample: Ref.get(latest),
      shutdownRequested: Deferred.await(shutdownDeferred),
      stats: Effect.sync(() => ({ ...stats })),
      channels
    }
  })

// ---------------------------------------------------------------------------------------------
// Host side
// ---------------------------------------------------------------------------------------------

export interface HostOptions {
  /** Versions the host offers, per service (default: Linux's lists, so negotiation succeeds). */
  readonly frameworkVersions?: ReadonlyArray<Ic.IcVersion> | undefined
  /** Message versions the host offers, per service (default: Linux's lists). */
  readonly messageVersions?: Partial<Record<ServiceName, ReadonlyArray<Ic.IcVersion>>> | undefined
  /** How long to wait for each guest answer (default 5 seconds). */
  readonly replyTimeout?: Duration.DurationInput | undefined
  /** Services to offer (default all four). */
  readonly services?: ReadonlyArray<ServiceName> | undefined
  /** Instance GUIDs of the offers, per service (default: fixed GUIDs of this library). */
  readonly instances?: Partial<Record<ServiceName, string>> | undefined
}

export interface Reply {
  /** The service that answered. */
  readonly service: ServiceName
  /** The IC message type of the request (`ICMSGTYPE_*`). */
  readonly type: number
  /** The status the guest wrote (`HV_S_OK`, `HV_E_FAIL`, …). */
  readonly status: number
  /** The answer's IC header. */
  readonly header: Ic.IcPacketHeader
  /** The answer's body after the IC header. */
  readonly body: Uint8Array
  /** Time from sending the request to receiving the answer. */
  readonly roundTripMillis: number
}

export interface KvpEntry {
  /** The key. */
  readonly key: string
  /** The value. */
  readonly value: string
}

export interface HostServices {
  /** The versions each service negotiated. */
  readonly negotiated: ReadonlyMap<ServiceName, Negotiation>
  /** Sends one heartbeat and returns the guest's answer (Linux: the sequence number plus one). */
  readonly heartbeat: Effect.Effect<bigint, HostError>
  /** Sends heartbeats every `interval` until the scope closes. */
  readonly heartbeatEvery: (interval: Duration.DurationInput) => Effect.Effect<void, never, Scope.Scope>
  /** Sends a time sample (`hostTimeMillis`, default now; `flags`, default `ICTIMESYNCFLAG_SAMPLE`). */
  readonly sendTimeSample: (options?: { readonly hostTimeMillis?: number; readonly flags?: number }) => Effect.Effect<void, HostError>
  /** Sets a key in a pool of the guest's KVP store. */
  readonly kvpSet: (pool: number, key: string, value: string) => Effect.Effect<void, HostError>
  /** Gets a key from a pool of the guest's KVP store; `None` when it is not there. */
  readonly kvpGet: (pool: number, key: string) => Effect.Effect<Option.Option<string>, HostError>
  /** Deletes a key from a pool of the guest's KVP store; false when it was not there. */
  readonly kvpDelete: (pool: number, key: string) => Effect.Effect<boolean, HostError>
  /** Enumerates a pool of the guest's KVP store. */
  readonly kvpEnumerate: (pool: number) => Effect.Effect<ReadonlyArray<KvpEntry>, HostError>
  /** Asks the guest to shut down (or reboot) and returns its status (`HV_S_OK` = acknowledged). */
  readonly shutdown: (options?: {
    readonly reboot?: boolean
    readonly force?: boolean
    readonly reasonCode?: number
    readonly timeoutSeconds?: number
  }) => Effect.Effect<number, HostError>
  /** Every answer received, in order. */
  readonly replies: Effect.Effect<ReadonlyArray<Reply>>
  /** The open service channels, by service. */
  readonly channels: ReadonlyMap<ServiceName, Channel.OpenedChannel>
}

export type HostError = Channel.SendError | ProtocolError | Cancelled | NegotiationFailed

const decodeKvpReply = (reply: Reply) => Ic.decodeKvpMessage(reply.body)

export const host = (
  options: HostOptions = {}
): Effect.Effect<HostServices, Channel.OpenError | HostError, Scope.Scope | Transport.Transport> =>
  Effect.gen(function*() {
    const framework = options.frameworkVersions ?? Ic.UTIL_FW_VERSIONS
    const timeout = options.replyTimeout ?? Duration.seconds(5)
    const replies: Array<Reply> = []
    const negotiated = new Map<ServiceName, Negotiation>()
    const channels = new Map<ServiceName, Channel.OpenedChannel>()
    // Answers awaited, by transaction id, with their deadlines. One reaper fiber expires them: a timer
    // per exchange (Effect.timeoutFail) cost more than the exchange itself.
    const pending = new Map<bigint, { readonly waiter: Deferred.Deferred<Uint8Array, Cancelled>; readonly deadline: number; readonly service: ServiceName }>()
    const pendingAdded = new Notifier()
    const timeoutMillis = Duration.toMillis(Duration.decode(timeout))
    const reaper: Effect.Effect<never> = Effect.forever(Effect.gen(function*() {
      const seen = pendingAdded.current
      const now = yield* Clock.currentTimeMillis
      let earliest = Number.POSITIVE_INFINITY
      for (const [id, entry] of pending) {
        if (entry.deadline <= now) {
          pending.delete(id)
          Deferred.unsafeDone(entry.waiter, Exit.fail(new Cancelled({ transactionId: id, reason: `${entry.service}: no answer` })))
        } else if (entry.deadline < earliest) earliest = entry.deadline
      }
      if (earliest === Number.POSITIVE_INFINITY) yield* pendingAdded.waitAfter(seen)
      else yield* Effect.sleep(Duration.millis(earliest - now))
    }))
    yield* Effect.forkScoped(reaper)
    let nextTransactionId = 1n

    const wanted = options.services ?? SERVICES
    yield* Effect.forEach(wanted, (service) =>
      Effect.gen(function*() {
        const channel = yield* Channel.open({
          role: "server",
          interfaceType: ServiceGuids[service],
          interfaceInstance: options.instances?.[service] ?? DefaultInstances[service],
          maxPacketSize: IC_MAX_PACKET_SIZE,
          name: `ic-host-${service}`
        })
        channels.set(service, channel)
        // Guest answers arrive as in-band packets carrying the request's transaction id.
        yield* Effect.forkScoped(
          channel.serve((packet) =>
            Effect.sync(() => {
              const entry = pending.get(packet.packet.transactionId)
              if (entry === undefined) return
              pending.delete(packet.packet.transactionId)
              Deferred.unsafeDone(entry.waiter, Exit.succeed(packet.payload.slice()))
            })
          ).pipe(Effect.ignore)
        )
      }), { concurrency: "unbounded", discard: true })

    const exchange = (
      service: ServiceName,
      type: number,
      body: Uint8Array,
      versions?: Negotiation
    ): Effect.Effect<Reply, HostError> =>
      Effect.gen(function*() {
        const channel = channels.get(service)
        if (channel === undefined) return yield* new ProtocolError({ reason: `${service} is not running` })
        const agreed = versions ?? negotiated.get(service)
        if (agreed === undefined) return yield* new ProtocolError({ reason: `${service} was not negotiated` })
        const transactionId = nextTransactionId++
        const waiter = Deferred.unsafeMake<Uint8Array, Cancelled>(FiberId.none)
        const start = yield* Clock.currentTimeNanos
        pending.set(transactionId, { waiter, deadline: Number(start / 1_000_000n) + timeoutMillis, service })
        pendingAdded.notifyAll()
        const packet = buildRequest({ type, framework: agreed.framework, message: agreed.message, transactionId: Number(transactionId & 0xffn), body })
        const bytes = yield* channel.sendPacket({ _tag: "InBand", transactionId, completionRequested: false, payload: packet }).pipe(
          Effect.zipRight(Deferred.await(waiter)),
          Effect.ensuring(Effect.sync(() => pending.delete(transactionId)))
        )
        const end = yield* Clock.currentTimeNanos
        const header = Ic.decodeIcHeader(bytes)
        if (Either.isLeft(header)) {
          return yield* new ProtocolError({ reason: `${service}: malformed answer`, message_: errorText(header.left) })
        }
        if ((header.right.icmsg_hdr.icflags & Ic.ICMSGHDRFLAG_RESPONSE) === 0) {
          return yield* new ProtocolError({ reason: `${service}: answer without the RESPONSE flag` })
        }
        const reply: Reply = {
          service,
          type,
          status: header.right.icmsg_hdr.status,
          header: header.right,
          body: bytes.subarray(Ic.ICMSG_HDR),
          roundTripMillis: Number(end - start) / 1e6
        }
        replies.push(reply)
        return reply
      })

    // Negotiate every service, as Hyper-V does right after the channel opens.
    yield* Effect.forEach(wanted, (service) =>
      Effect.gen(function*() {
        const message = options.messageVersions?.[service] ?? MessageVersions[service]
        const initial = { framework: { major: 0, minor: 0 }, message: { major: 0, minor: 0 } }
        const reply = yield* exchange(service, Ic.ICMSGTYPE_NEGOTIATE, negotiateBody(framework, message), initial)
        const decoded = BinarySchema.decodePrefix(Ic.IcMsgNegotiate)(reply.body)
        if (Either.isLeft(decoded)) {
          return yield* new ProtocolError({ reason: `${service}: malformed negotiate answer`, message_: errorText(decoded.left) })
        }
        const answer = decoded.right.value
        if (answer.framework_versions.length !== 1 || answer.message_versions.length !== 1) {
          return yield* new NegotiationFailed({
            service,
            offered: [...framework, ...message].map(versionText),
            // The guest's answer (counts 0/0) does not say what it supports.
            supported: []
          })
        }
        negotiated.set(service, { framework: answer.framework_versions[0]!, message: answer.message_versions[0]! })
      }), { concurrency: "unbounded", discard: true })

    const failStatus = (reply: Reply, what: string) =>
      reply.status === Ic.HV_S_OK
        ? Effect.void
        : Effect.fail(new ProtocolError({ reason: `${what}: guest answered status 0x${(reply.status >>> 0).toString(16)}` }))

    const heartbeatSequence = { next: 0n }
    const heartbeat: Effect.Effect<bigint, HostError> = Effect.gen(function*() {
      const sequence = heartbeatSequence.next
      heartbeatSequence.next += 2n
      const reply = yield* exchange("heartbeat", Ic.ICMSGTYPE_HEARTBEAT, encodeHeartbeat({ seq_num: sequence }))
      yield* failStatus(reply, "heartbeat")
      const decoded = decodeHeartbeat(reply.body)
      if (Either.isLeft(decoded)) return yield* new ProtocolError({ reason: "heartbeat: malformed answer", message_: errorText(decoded.left) })
      if (decoded.right.value.seq_num !== sequence + 1n) {
        return yield* new ProtocolError({ reason: `heartbeat: answered ${decoded.right.value.seq_num}, expected ${sequence + 1n}` })
      }
      return decoded.right.value.seq_num
    })

    const kvpValue = (key: string, value: string) =>
      Effect.mapError(
        Either.match(Ic.kvpStringValue(key, value), { onLeft: (e) => Either.left(e), onRight: (v) => Either.right(v) }),
        (error) => new ProtocolError({ reason: "kvp: key or value too long", message_: errorText(error) })
      )
    const encodeKvp = (message: Ic.KvpMessage) =>
      Effect.mapError(Ic.encodeKvpMessage(message), (error) => new ProtocolError({ reason: "kvp: cannot encode", message_: errorText(error) }))
    const header = (operation: number, pool: number) => ({ operation, pool })

    const kvpGet = (pool: number, key: string) =>
      Effect.gen(function*() {
        const data = yield* kvpValue(key, "")
        const body = yield* encodeKvp({ _tag: "Get", kvp_hdr: header(Ic.KVP_OP_GET, pool), kvp_get: { data } })
        const reply = yield* exchange("kvp", Ic.ICMSGTYPE_KVPEXCHANGE, body)
        // HV_S_CONT is the Linux daemon's "no such key" (HV_E_FAIL from other guests); anything else is an error.
        if (reply.status === Ic.HV_S_CONT || reply.status === Ic.HV_E_FAIL) return Option.none<string>()
        yield* failStatus(reply, "kvp get")
        const decoded = decodeKvpReply(reply)
        if (Either.isLeft(decoded) || decoded.right._tag !== "Get") {
          return yield* new ProtocolError({ reason: "kvp: malformed get answer" })
        }
        return Option.some(String(Ic.kvpValueOf(decoded.right.kvp_get.data)))
      })

    const kvpEnumerate = (pool: number): Effect.Effect<ReadonlyArray<KvpEntry>, HostError> =>
      Effect.gen(function*() {
        const entries: Array<KvpEntry> = []
        for (let index = 0; index < 4096; index++) {
          const data = yield* kvpValue("", "")
          const body = yield* encodeKvp({ _tag: "Enumerate", kvp_hdr: header(Ic.KVP_OP_ENUMERATE, pool), kvp_enum_data: { index, data } })
          const reply = yield* exchange("kvp", Ic.ICMSGTYPE_KVPEXCHANGE, body)
          if (reply.status === Ic.HV_S_CONT) break
          yield* failStatus(reply, "kvp enumerate")
          const decoded = decodeKvpReply(reply)
          if (Either.isLeft(decoded) || decoded.right._tag !== "Enumerate") {
            return yield* new ProtocolError({ reason: "kvp: malformed enumerate answer" })
          }
          entries.push({ key: decoded.right.kvp_enum_data.data.key, value: String(Ic.kvpValueOf(decoded.right.kvp_enum_data.data)) })
        }
        return entries
      })

    const services: HostServices = {
      negotiated,
      heartbeat,
      heartbeatEvery: (interval) =>
        Effect.forkScoped(
          Effect.repeat(
            heartbeat.pipe(Effect.catchAll((error) => Effect.logWarning(`heartbeat failed: ${error.message}`))),
            Schedule.spaced(interval)
          )
        ).pipe(Effect.asVoid),
      sendTimeSample: (sampleOptions) =>
        Effect.gen(function*() {
          const now = sampleOptions?.hostTimeMillis ?? (yield* Clock.currentTimeMillis)
          const parenttime = BigInt(Math.round(now * 10_000)) + Ic.WLTIMEDELTA
          const flags = sampleOptions?.flags ?? Ic.ICTIMESYNCFLAG_SAMPLE
          const body = usesRefData(negotiated.get("timesync"))
            ? BinarySchema.encodeSync(Ic.IcTimesyncRefData)({ parenttime, vmreferencetime: 0n, flags, leapflags: 0, stratum: 0 })
            : BinarySchema.encodeSync(Ic.IcTimesyncData)({ parenttime, childtime: 0n, roundtriptime: 0n, flags })
          const reply = yield* exchange("timesync", Ic.ICMSGTYPE_TIMESYNC, body)
          yield* failStatus(reply, "timesync")
        }),
      kvpSet: (pool, key, value) =>
        Effect.gen(function*() {
          const data = yield* kvpValue(key, value)
          const body = yield* encodeKvp({ _tag: "Set", kvp_hdr: header(Ic.KVP_OP_SET, pool), kvp_set: { data } })
          yield* failStatus(yield* exchange("kvp", Ic.ICMSGTYPE_KVPEXCHANGE, body), "kvp set")
        }),
      kvpGet,
      kvpDelete: (pool, key) =>
        Effect.gen(function*() {
          const body = yield* encodeKvp({
            _tag: "Delete",
            kvp_hdr: header(Ic.KVP_OP_DELETE, pool),
            kvp_delete: { key_size: 2 * (key.length + 1), key }
          })
          const reply = yield* exchange("kvp", Ic.ICMSGTYPE_KVPEXCHANGE, body)
          return reply.status === Ic.HV_S_OK
        }),
      kvpEnumerate,
      shutdown: (shutdownOptions) =>
        Effect.gen(function*() {
          const flags = (shutdownOptions?.reboot === true ? 2 : 0) | (shutdownOptions?.force === true ? 1 : 0)
          const body = BinarySchema.encodeSync(Ic.ShutdownMsgData)({
            reason_code: shutdownOptions?.reasonCode ?? 0,
            timeout_seconds: shutdownOptions?.timeoutSeconds ?? 0,
            flags,
            display_message: new Uint8Array(2048)
          })
          const reply = yield* exchange("shutdown", Ic.ICMSGTYPE_SHUTDOWN, body)
          return reply.status
        }),
      replies: Effect.sync(() => replies.slice()),
      channels
    }
    return services
  })

// The uio transport (native-transport.md §4): the client side of one VMBus device bound to
// uio_hv_generic. Opening the primary channel opens /dev/uioN (the kernel sends OPENCHANNEL and resets
// both rings), maps the rings (and, for monitored channels, the interrupt and monitor pages), and polls
// the fd for device events. One "session" = one open of the fd; every mapping belongs to it and is
// revoked before the fd is closed, and at once on rescind.
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type * as Transport from "../../Transport.js"
import type { CloseReason } from "../../VmbusError.js"
import type { DeviceMapInvalid, DeviceNotBound, DeviceNotFound, SysfsInvalid } from "../../VmbusError.js"
import { ChannelClosed, InvalidParameter, TransportError, Unsupported } from "../../VmbusError.js"
import * as L from "../layout.js"
import type { Backend } from "./backend.js"
import { UioEndpoint } from "./endpoint.js"
import { UioFiles } from "./files.js"
import { fdGone, lockError, mapError, openError } from "./errors.js"
import type { MappedRegion } from "./mapping.js"
import type { PollHandle } from "./native.js"
import { bufferView, mapRingFile } from "./ring.js"
import type { DeviceInfo, SubChannelInfo } from "./sysfs.js"
import { discover, listSubChannels } from "./sysfs.js"

export class UioBackend extends Context.Tag("effect-vmbus/UioBackend")<UioBackend, Backend>() {}

export interface Options {
  /** Instance GUID of the device (lowercase, no braces). */
  readonly device: string
  /** Default `/sys`. */
  readonly sysfsRoot?: string | undefined
  /** Default `/dev`. */
  readonly devRoot?: string | undefined
  /** Take `flock(LOCK_EX|LOCK_NB)`: a second user of the device fails with `Busy`. Default true. */
  readonly exclusive?: boolean | undefined
  /**
   * Sub-channels: `"poll"` (default) keeps their RX ring masked and drains it every
   * `pollIntervalMillis` — an unmasked sub-channel interrupt crashes kernels older than 6.16 (and
   * stable kernels without d062463edf17); `"interrupt"` when the kernel is known to have it.
   */
  readonly subChannels?: "poll" | "interrupt" | undefined
  /** Default 1 ms. */
  readonly pollIntervalMillis?: number | undefined
}

export type DiscoveryError = DeviceNotFound | DeviceNotBound | SysfsInvalid | DeviceMapInvalid | Unsupported

export interface Stats {
  /** The device fd is open (the primary channel is open). */
  readonly open: boolean
  /** Open channel endpoints (primary and sub-channels). */
  readonly endpoints: number
  /** Mappings of device memory not yet revoked. */
  readonly mappings: number
  /** Device events read from the fd since the layer was built. */
  readonly events: number
  /** The host rescinded the device (or the emulated host died): the transport is unusable. */
  readonly rescinded: boolean
}

export interface UioDeviceShape {
  /** What sysfs says about the device (class, instance, relid, monitor id, uio node, maps, ring size). */
  readonly info: DeviceInfo
  /** Open state, endpoints and live mappings (back to zero after close), device events read. */
  readonly stats: Effect.Effect<Stats>
  /**
   * The pre-made receive (`recv:<gpadl>`, map 3) or send (`send:<gpadl>`, map 4) buffer, mapped while
   * the primary channel is open; `Unsupported` when the kernel made none (only the NIC class since 6.14).
   */
  readonly buffer: (
    which: "receive" | "send"
  ) => Effect.Effect<Transport.GpadlView, Unsupported | ChannelClosed | TransportError, Scope.Scope>
  /** Sub-channels the host has offered (and the kernel opened) so far. */
  readonly subChannels: Effect.Effect<ReadonlyArray<SubChannelInfo>, SysfsInvalid>
  /** A Transport whose `open` opens sub-channel `index` (waiting for its `ring` file to appear). */
  readonly subChannel: (index: number) => Transport.TransportShape
}

interface Session {
  readonly fd: number
  readonly regions: Set<MappedRegion>
  readonly endpoints: Set<UioEndpoint>
  readonly timers: Set<ReturnType<typeof setInterval>>
  unlock: () => void
  poll: PollHandle | undefined
  intPage: Int32Array | undefined
  monitorPage: Int32Array | undefined
  ended: boolean
}

const capabilities: Transport.Capabilities = { ringGeometry: false, serverRole: false, gpadl: false }

const offerUnsupported = (): Effect.Effect<never, Unsupported> =>
  Effect.fail(new Unsupported({ capability: "serverRole", reason: "uio_hv_generic gives user space the client side only" }))

export const make = (
  options: Options
): Effect.Effect<{ readonly transport: Transport.TransportShape; readonly device: UioDeviceShape }, DiscoveryError, Scope.Scope | UioBackend | UioFiles> =>
  Effect.gen(function*() {
    const backend = yield* UioBackend
    const fs = yield* UioFiles
    const native = backend.native
    if (native.pageSize !== L.PAGE_SIZE) {
      return yield* new Unsupported({
        capability: "pageSize",
        reason: `system page size ${native.pageSize}: the ring code assumes 4096-byte control pages`
      })
    }
    const paths = { sysfsRoot: options.sysfsRoot ?? "/sys", devRoot: options.devRoot ?? "/dev" }
    const info = yield* discover(fs, paths, options.device, native.pageSize)
    const exclusive = options.exclusive ?? true
    const pollMillis = Math.max(0, options.pollIntervalMillis ?? 1)
    const pollSubChannels = (options.subChannels ?? "poll") === "poll"
    const what = (index: number) => `${info.devicePath} map${index} (${info.maps[index]?.name ?? "?"})`

    let session: Session | undefined = undefined
    let rescinded = false
    let events = 0
    const word = new Int32Array(1)

    /**
     * Ends a session: stop polling, revoke every mapping, unlock, close the fd — in that order. Endpoints
     * still open (sub-channels, whose rings the kernel frees at the last close) see `reason`.
     */
    const end = (s: Session, reason: CloseReason): void => {
      if (s.ended) return
      s.ended = true
      s.poll?.stop()
      for (const timer of s.timers) clearInterval(timer)
      s.timers.clear()
      for (const region of s.regions) region.revoke()
      s.regions.clear()
      s.intPage = undefined
      s.monitorPage = undefined
      for (const endpoint of s.endpoints) {
        endpoint.peerClosed(reason)
        endpoint.stop()
      }
      s.endpoints.clear()
      s.unlock()
      native.close(s.fd)
      if (session === s) session = undefined
    }

    const rescind = (s: Session): void => {
      rescinded = true
      end(s, "Rescinded")
    }

    yield* Effect.addFinalizer(() => Effect.sync(() => session !== undefined && end(session, "LocalClose")))

    /** Reads every pending event count, then tells every endpoint (a uio event is device-wide). */
    const onReadable = (s: Session) => (status: number): void => {
      if (s.ended) return
      if (status < 0) return rescind(s)
      let seen = false
      for (;;) {
        const n = native.read4(s.fd, word)
        if (n === 4) {
          seen = true
          events++
          continue
        }
        if (fdGone(n)) return rescind(s)
        break
      }
      if (seen) for (const endpoint of s.endpoints) endpoint.notify()
    }

    /** Maps maps 1 and 2 once, for monitored signalling. */
    const signalPages = (s: Session): { int: Int32Array; monitor: Int32Array } | TransportError | ChannelClosed => {
      if (s.intPage !== undefined && s.monitorPage !== undefined) return { int: s.intPage, monitor: s.monitorPage }
      const pages: Array<Int32Array> = []
      for (const index of [1, 2]) {
        const region = backend.mapResource(s.fd, info.devicePath, index, native.pageSize)
        if (typeof region === "number") return mapError(what(index), -region)
        s.regions.add(region)
        pages.push(new Int32Array(region.bytes.buffer, 0, 1024))
      }
      s.intPage = pages[0]
      s.monitorPage = pages[1]
      return { int: pages[0]!, monitor: pages[1]! }
    }

    /**
     * The host doorbell (§1.8). Monitored: the kernel's own `vmbus_setevent` — atomic ORs of the relid's
     * bit in the int page's guest→host half and of the monitor id's trigger bit — no syscall.
     * Not monitored: `write(fd, 1)`, which unmasks and makes the kernel signal the host.
     */
    const doorbell = (s: Session, relid: number, monitorId: number | undefined): () => void => {
      if (monitorId !== undefined) {
        return () => {
          // Checked at each access: after a revoke the pages are private zeros, never the VM's.
          if (s.ended || s.intPage === undefined || s.monitorPage === undefined) return
          Atomics.or(s.intPage, 512 + (relid >>> 5), 1 << (relid & 31))
          Atomics.or(s.monitorPage, 2 + 2 * (monitorId >>> 5), 1 << (monitorId & 31))
        }
      }
      const write = (): void => {
        if (s.ended) return
        const n = native.write4(s.fd, 1)
        if (n === 4) return
        if (fdGone(n)) return rescind(s)
        // EAGAIN (the emulated device's socket is full) or EINTR: a signal must not be lost.
        setTimeout(write, 1)
      }
      return write
    }

    const openSession = (): Effect.Effect<Session, OpenFailure, Scope.Scope> =>
      Effect.acquireRelease(
        Effect.gen(function*() {
          const fd = yield* backend.openDevice(info.devicePath)
          if (fd < 0) return yield* openError(info.devicePath, -fd)
          const s: Session = {
            fd,
            regions: new Set(),
            endpoints: new Set(),
            timers: new Set(),
            unlock: () => {},
            poll: undefined,
            intPage: undefined,
            monitorPage: undefined,
            ended: false
          }
          const fail = (error: OpenFailure) => {
            end(s, "PeerClose")
            return Effect.fail(error)
          }
          if (exclusive) {
            const unlock = backend.lock(fd, info.devicePath)
            if (typeof unlock === "number") return yield* fail(lockError(info.devicePath, -unlock))
            s.unlock = unlock
          }
          if (info.monitorId !== undefined) {
            const pages = signalPages(s)
            if (!("int" in pages)) return yield* fail(pages)
          }
          session = s
          return s
        }),
        (s) => Effect.sync(() => end(s, "PeerClose"))
      )

    const checkRequest = (request: Transport.OpenRequest): OpenFailure | undefined => {
      if (request.interfaceType.toLowerCase() !== info.classId) {
        return new InvalidParameter({
          field: "interfaceType",
          reason: `device ${info.instance} is of class ${info.classId}`,
          value: request.interfaceType
        })
      }
      if (request.interfaceInstance !== undefined && request.interfaceInstance.toLowerCase() !== info.instance) {
        return new InvalidParameter({
          field: "interfaceInstance",
          reason: `this transport serves device ${info.instance}`,
          value: request.interfaceInstance
        })
      }
      if (request.userData !== undefined && request.userData.length > 0) {
        return new Unsupported({ capability: "userData", reason: "the kernel's OPENCHANNEL carries no user data from user space" })
      }
      if (rescinded) return new ChannelClosed({ reason: "Rescinded" })
      return undefined
    }

    /** Registers an endpoint over `region` in the session; its scope removes it and revokes the region. */
    const addEndpoint = (
      s: Session,
      region: MappedRegion,
      identity: Transport.OfferIdentity,
      relid: number,
      monitorId: number | undefined,
      polled: boolean
    ): Effect.Effect<UioEndpoint, never, Scope.Scope> =>
      Effect.acquireRelease(
        Effect.sync(() => {
          const endpoint = new UioEndpoint(identity, relid, region, polled, doorbell(s, relid, monitorId))
          // We are the only writer of TX; a stale space request from an earlier user would make the host
          // signal for nothing. Everything else on the control pages is the kernel's (never re-initialised).
          Atomics.store(new Uint32Array(endpoint.outgoing.buffer, endpoint.outgoing.byteOffset, 32), L.PENDING_SEND_SIZE_WORD, 0)
          if (polled) {
            Atomics.store(new Uint32Array(endpoint.incoming.buffer, endpoint.incoming.byteOffset, 32), L.INTERRUPT_MASK_WORD, 1)
            const timer = setInterval(() => endpoint.notify(), pollMillis)
            s.timers.add(timer)
            endpoint.stopTimer = () => {
              clearInterval(timer)
              s.timers.delete(timer)
            }
          }
          s.endpoints.add(endpoint)
          return endpoint
        }),
        (endpoint) =>
          Effect.sync(() => {
            endpoint.stop()
            endpoint.stopTimer?.()
            s.endpoints.delete(endpoint)
            s.regions.delete(region)
            region.revoke()
          })
      )

    const open: Transport.TransportShape["open"] = (request) =>
      Effect.gen(function*() {
        const problem = checkRequest(request)
        if (problem !== undefined) return yield* problem
        if (session !== undefined) {
          return yield* new TransportError({ reason: "Busy", detail: `${info.devicePath}: the primary channel is already open` })
        }
        const s = yield* openSession()
        const size = info.maps[0]!.size
        const region = backend.mapResource(s.fd, info.devicePath, 0, size)
        if (typeof region === "number") return yield* mapError(what(0), -region)
        s.regions.add(region)
        const endpoint = yield* addEndpoint(
          s,
          region,
          { interfaceType: info.classId, interfaceInstance: info.instance, subChannelIndex: 0 },
          info.relid,
          info.monitorId,
          false
        )
        s.poll = native.poll(s.fd, onReadable(s))
        return endpoint
      })

    const subChannelOpen = (index: number): Transport.TransportShape["open"] => (request) =>
      Effect.gen(function*() {
        const problem = checkRequest(request)
        if (problem !== undefined) return yield* problem
        const s = session
        if (s === undefined) {
          return yield* new TransportError({
            reason: "BadResource",
            detail: "sub-channels exist only while the primary channel is open: open it first"
          })
        }
        // The host offers sub-channels asynchronously and the kernel shows `ring` late (§1.9): retry; the
        // channel layer's open timeout bounds the wait.
        let found: SubChannelInfo | undefined = undefined
        for (;;) {
          if (s.ended) return yield* new ChannelClosed({ reason: rescinded ? "Rescinded" : "PeerClose" })
          found = (yield* listSubChannels(fs, info.dir).pipe(Effect.orElseSucceed(() => []))).find((c) => c.index === index)
          if (found !== undefined) break
          yield* Effect.sleep("10 millis")
        }
        if ([...s.endpoints].some((e) => e.childRelid === found.relid)) {
          return yield* new TransportError({ reason: "Busy", detail: `sub-channel ${index} is already open` })
        }
        const region = yield* mapRingFile(native, found.ringPath)
        if (s.ended) {
          region.revoke()
          return yield* new ChannelClosed({ reason: rescinded ? "Rescinded" : "PeerClose" })
        }
        s.regions.add(region)
        return yield* addEndpoint(
          s,
          region,
          { interfaceType: info.classId, interfaceInstance: info.instance, subChannelIndex: index },
          found.relid,
          found.monitorId,
          pollSubChannels
        )
      })

    const buffer: UioDeviceShape["buffer"] = (which) =>
      Effect.gen(function*() {
        const index = which === "receive" ? 3 : 4
        const map = info.maps[index]
        if (map === undefined || map.gpadl === undefined) {
          return yield* new Unsupported({
            capability: `${which}Buffer`,
            reason: "the kernel made no such map (uio_hv_generic makes them for the network class only, since 6.14)"
          })
        }
        const s = session
        if (s === undefined) {
          return yield* new TransportError({ reason: "BadResource", detail: "the buffers are mapped through the open device: open the primary channel first" })
        }
        const handle = map.gpadl
        const region = yield* Effect.acquireRelease(
          Effect.suspend(() => {
            const region = backend.mapResource(s.fd, info.devicePath, index, map.size)
            if (typeof region === "number") return Effect.fail(mapError(what(index), -region))
            s.regions.add(region)
            return Effect.succeed(region)
          }),
          (region) =>
            Effect.sync(() => {
              s.regions.delete(region)
              region.revoke()
            })
        )
        return bufferView(region, handle, map.size)
      })

    const device: UioDeviceShape = {
      info,
      stats: Effect.sync(() => ({
        open: session !== undefined,
        endpoints: session?.endpoints.size ?? 0,
        mappings: session?.regions.size ?? 0,
        events,
        rescinded
      })),
      buffer,
      subChannels: listSubChannels(fs, info.dir),
      subChannel: (index) => ({
        name: `uio(${info.instance})/sub-channel ${index}`,
        capabilities,
        offer: offerUnsupported,
        open: subChannelOpen(index)
      })
    }
    const transport: Transport.TransportShape = { name: `uio(${info.instance})`, capabilities, offer: offerUnsupported, open }
    return { transport, device }
  })

type OpenFailure = Effect.Effect.Error<ReturnType<Transport.TransportShape["open"]>>

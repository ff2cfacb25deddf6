// The in-memory transport: a simulated VMBus host and guest in one process. The control plane runs
// message for message as on Hyper-V — OFFERCHANNEL, GPADL_HEADER/BODY/CREATED, OPENCHANNEL/RESULT,
// CLOSECHANNEL, GPADL_TEARDOWN/TORNDOWN, RESCIND, RELID_RELEASED — each encoded to its byte layout,
// at most 240 bytes, and decoded (validated) by the receiver. Rings and GPADLs live in GuestMemory.
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as FiberId from "effect/FiberId"
import type * as Scope from "effect/Scope"
import * as ChannelMessage from "../ChannelMessage.js"
import type * as GuestMemory from "../GuestMemory.js"
import * as Ring from "../Ring.js"
import type * as Transport from "../Transport.js"
import type { CloseReason ,
  GpadlTooLarge,
  OutOfMemory
} from "../VmbusError.js"
import {
  ChannelClosed,
  GpadlAlreadyMapped,
  GpadlCreateFailed,
  GpadlUnavailable,
  GpadlWriteMapOfReadOnly,
  InvalidMemoryRange,
  InvalidParameter,
  OpenRejected
} from "../VmbusError.js"
import { Notifier } from "./notifier.js"

const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

export const normalizeGuid = (guid: string): string => guid.toLowerCase()

export const isGuid = (guid: string): boolean => GUID.test(guid.toLowerCase())

/** Status the in-memory host answers a failed open or GPADL with (STATUS_UNSUCCESSFUL). */
export const STATUS_UNSUCCESSFUL = 0xc0000001

// ---------------------------------------------------------------------------------------------
// Endpoints
// ---------------------------------------------------------------------------------------------

class EndpointState implements Transport.Endpoint {
  readonly counters: Transport.EndpointCounters = {
    signalsSent: 0,
    signalsReceived: 0,
    outstandingTransactions: 0,
    outstandingPackets: 0
  }
  peer!: EndpointState
  private signalCallback: (() => void) | undefined = undefined
  private missedSignal = false
  private peerCloseCallback: ((reason: CloseReason) => void) | undefined = undefined
  closedBy: CloseReason | undefined = undefined
  closed = false
  createGpadl: Transport.Endpoint["createGpadl"] = undefined
  mapGpadl: Transport.Endpoint["mapGpadl"] = undefined

  constructor(
    readonly role: "client" | "server",
    readonly identity: Transport.OfferIdentity,
    readonly childRelid: number,
    readonly outgoing: Uint8Array,
    readonly incoming: Uint8Array,
    readonly memory: GuestMemory.GuestMemoryShape
  ) {}

  /** Server: false once the client's close or the rescind released the ring GPADL; client: once closed. */
  readonly ringsValid = (): boolean => !this.closed

  readonly signal = (): void => {
    if (this.closed) return
    this.counters.signalsSent++
    this.peer.receiveSignal()
  }

  receiveSignal(): void {
    if (this.closed) return
    this.counters.signalsReceived++
    const callback = this.signalCallback
    if (callback === undefined) this.missedSignal = true
    else callback()
  }

  readonly onSignal = (callback: () => void): void => {
    this.signalCallback = callback
    if (this.missedSignal) {
      this.missedSignal = false
      callback()
    }
  }

  readonly onPeerClose = (callback: (reason: CloseReason) => void): void => {
    this.peerCloseCallback = callback
    if (this.closedBy !== undefined) callback(this.closedBy)
  }

  peerClosed(reason: CloseReason): void {
    if (this.closedBy !== undefined) return
    this.closedBy = reason
    this.peerCloseCallback?.(reason)
  }
}

// ---------------------------------------------------------------------------------------------
// Host side
// ---------------------------------------------------------------------------------------------

interface HostOffer {
  readonly identity: Transport.OfferIdentity
  readonly childRelid: number
  server: EndpointState | undefined
  /** An open period not yet accepted by the server's channel. */
  unaccepted: EndpointState | undefined
  accepting: Deferred.Deferred<EndpointState, ChannelClosed> | undefined
  /** A server already accepted an open period of this offer (an open no one accepts is then refused). */
  acceptedOnce: boolean
  ringGpadl: number
  rescinded: boolean
}

interface HostGpadl {
  readonly handle: number
  readonly childRelid: number
  readonly pfns: ReadonlyArray<number>
  readonly byteOffset: number
  readonly byteCount: number
  readonly readOnly: boolean
  /** A host mapping (a GpadlView, or the open channel's rings). */
  mappedBy: { revoke: () => void } | undefined
  tearingDown: boolean
}

export interface TransportStats {
  readonly offers: number
  readonly openChannels: number
  readonly channelsOpened: number
  readonly channelsClosed: number
  readonly signalsSent: number
  readonly outstandingTransactions: number
  readonly outstandingPackets: number
  readonly gpadls: number
  readonly gpadlsMapped: number
  /**
   * Views of guest memory still usable: host GPADL mappings (ring GPADLs included) and the external-data
   * and transfer-page views channels hand out. Zero once everything closed.
   */
  readonly liveViews: number
  readonly messagesToHost: number
  readonly messagesToGuest: number
  readonly malformedMessages: number
  /** Offers an isolated guest ignored because their device class is not allowed. */
  readonly offersIgnored: number
}

export interface OpenChannelInfo {
  /** The relative channel id. */
  readonly childRelid: number
  /** The offer's interface type and instance. */
  readonly identity: Transport.OfferIdentity
  /** The guest→host ring (control page and data), to read or corrupt in tests. */
  readonly clientToServer: Uint8Array
  /** The host→guest ring. */
  readonly serverToClient: Uint8Array
  /** The guest endpoint's counters. */
  readonly client: Transport.EndpointCounters
  /** The host endpoint's counters. */
  readonly server: Transport.EndpointCounters
}

export type GpadlView = Transport.GpadlView

export type MessageLogEntry = {
  /** `toHost` for a message the guest sent, `toGuest` for one the host sent. */
  readonly direction: "toHost" | "toGuest"
  /** The message as it was sent. */
  readonly bytes: Uint8Array
}

/** Completes, with `exit`, every wait in `waits` that belongs to channel `relid`. */
const endWaits = <A>(
  waits: Map<number, { readonly relid: number; readonly deferred: Deferred.Deferred<A> }>,
  relid: number,
  exit: Exit.Exit<A>
): void => {
  for (const [handle, pending] of waits) {
    if (pending.relid !== relid) continue
    waits.delete(handle)
    Deferred.unsafeDone(pending.deferred, exit)
  }
}

// ---------------------------------------------------------------------------------------------
// The bus: host and guest state joined by a message connection
// ---------------------------------------------------------------------------------------------

interface GuestOpen {
  readonly childRelid: number
  deferred: Deferred.Deferred<number>
}

interface GuestChannel {
  readonly childRelid: number
  readonly client: EndpointState
  readonly gpadls: Set<number>
  rescinded: boolean
}

export class Bus {
  // host
  private nextRelid = 1
  private readonly hostOffers = new Map<number, HostOffer>()
  private readonly hostGpadls = new Map<number, HostGpadl>()
  private readonly reassembler = new ChannelMessage.GpadlReassembler()
  /** child_relid of each GPADL being reassembled (bodies do not carry it). */
  private readonly gpadlRelids = new Map<number, number>()
  /** Creation flags are not on the wire (Linux has none); the simulated host learns them here. */
  private readonly readOnlyHint = new Set<number>()
  // guest
  private readonly guestOffers = new Map<number, ChannelMessage.OfferChannel>()
  private readonly guestOffersChanged = new Notifier()
  private readonly guestChannels = new Map<number, GuestChannel>()
  private nextGpadlHandle = ChannelMessage.FIRST_GPADL_HANDLE
  /** Waits for GPADL_CREATED / GPADL_TORNDOWN, by handle, with the channel they belong to. */
  private readonly pendingCreated = new Map<number, { readonly relid: number; readonly deferred: Deferred.Deferred<number> }>()
  private readonly pendingTorndown = new Map<number, { readonly relid: number; readonly deferred: Deferred.Deferred<void> }>()
  private readonly pendingOpens = new Map<number, GuestOpen>()
  private readonly liveGpadls = new Set<number>()
  /** Every endpoint that may still count live views (dropped once closed with none left). */
  private readonly endpoints = new Set<EndpointState>()
  // connection
  private readonly toHost: Array<Uint8Array> = []
  private readonly toGuest: Array<Uint8Array> = []
  private pumping = false
  private opened = 0
  private closedCount = 0
  private retiredSignals = 0
  private messagesToHost = 0
  private messagesToGuest = 0
  private malformed = 0
  readonly log: Array<MessageLogEntry> | undefined

  /** Isolated guests accept offers of these device classes only (Linux vmbus_is_valid_offer). */
  private readonly allowedTypes: ReadonlySet<string> | undefined
  private offersIgnored = 0

  constructor(
    readonly memory: GuestMemory.GuestMemoryShape,
    options?: { readonly recordMessages?: boolean; readonly allowedInterfaceTypes?: ReadonlyArray<string> | undefined }
  ) {
    this.log = options?.recordMessages === true ? [] : undefined
    this.allowedTypes = options?.allowedInterfaceTypes === undefined
      ? undefined
      : new Set(options.allowedInterfaceTypes.map(normalizeGuid))
  }

  // ----- message connection ------------------------------------------------------------------

  private post(direction: "toHost" | "toGuest", message: ChannelMessage.ChannelMessage): void {
    const bytes = ChannelMessage.encode(message)
    this.postBytes(direction, bytes)
  }

  /** The control-plane hook (`Transport.interceptMessages`), if one is installed. */
  interceptor: Transport.MessageInterceptor | undefined = undefined

  /** Delivers raw bytes as a channel message (tests use it to inject malformed messages). */
  postBytes(direction: "toHost" | "toGuest", bytes: Uint8Array): void {
    const interceptor = this.interceptor
    if (interceptor === undefined) return this.enqueue(direction, bytes)
    interceptor({ direction, bytes: bytes.slice() }, (delivered) => this.enqueue(direction, delivered))
  }

  private enqueue(direction: "toHost" | "toGuest", bytes: Uint8Array): void {
    this.log?.push({ direction, bytes: bytes.slice() })
    if (direction === "toHost") {
      this.messagesToHost++
      this.toHost.push(bytes.slice())
    } else {
      this.messagesToGuest++
      this.toGuest.push(bytes.slice())
    }
    this.pump()
  }

  /** Processes queued messages in order; re-entrant posts are queued, never recursed into. */
  private pump(): void {
    if (this.pumping) return
    this.pumping = true
    try {
      for (;;) {
        const bytes = this.toHost.shift()
        if (bytes !== undefined) {
          this.hostReceive(bytes)
          continue
        }
        const back = this.toGuest.shift()
        if (back !== undefined) {
          this.guestReceive(back)
          continue
        }
        break
      }
    } finally {
      this.pumping = false
    }
  }

  // ----- host: message handling --------------------------------------------------------------

  private hostReceive(bytes: Uint8Array): void {
    const decoded = ChannelMessage.decode(bytes)
    if (Either.isLeft(decoded)) {
      this.malformed++
      return
    }
    const message = decoded.right
    switch (message._tag) {
      case "GpadlHeader":
      case "GpadlBody": {
        if (message._tag === "GpadlHeader") this.gpadlRelids.set(message.handle, message.childRelid)
        const progress = this.reassembler.push(message)
        if (Either.isLeft(progress)) {
          this.malformed++
          const handle = message.handle
          // Answer with the relid of the header, so the guest's wait (matched on both ids) ends.
          const relid = message._tag === "GpadlHeader" ? message.childRelid : this.gpadlRelids.get(handle) ?? 0
          this.gpadlRelids.delete(handle)
          if (handle !== 0) {
            this.post("toGuest", {
              _tag: "GpadlCreated",
              childRelid: relid,
              handle,
              creationStatus: STATUS_UNSUCCESSFUL
            })
          }
          return
        }
        if (progress.right._tag === "Pending") return
        const gpadl = progress.right.gpadl
        this.gpadlRelids.delete(gpadl.handle)
        let status = 0
        if (this.hostGpadls.has(gpadl.handle)) status = STATUS_UNSUCCESSFUL
        // A GPADL for a channel the host no longer offers (rescinded while the header was in flight)
        // would never be released: the guest drops its GPADLs without GPADL_TEARDOWN after a rescind.
        if (!this.hostOffers.has(gpadl.childRelid)) status = STATUS_UNSUCCESSFUL
        for (const pfn of gpadl.pfns) if (!this.memory.isAllocated(pfn)) status = STATUS_UNSUCCESSFUL
        if (status === 0) {
          this.hostGpadls.set(gpadl.handle, {
            handle: gpadl.handle,
            childRelid: gpadl.childRelid,
            pfns: gpadl.pfns,
            byteOffset: gpadl.byteOffset,
            byteCount: gpadl.byteCount,
            readOnly: this.readOnlyHint.has(gpadl.handle),
            mappedBy: undefined,
            tearingDown: false
          })
        }
        this.readOnlyHint.delete(gpadl.handle)
        this.post("toGuest", { _tag: "GpadlCreated", childRelid: gpadl.childRelid, handle: gpadl.handle, creationStatus: status })
        return
      }
      case "GpadlTeardown": {
        const gpadl = this.hostGpadls.get(message.handle)
        // An unknown handle is not fatal (hardening §1.4): answer so the guest does not hang.
        if (gpadl === undefined) {
          this.post("toGuest", { _tag: "GpadlTorndown", handle: message.handle })
          return
        }
        gpadl.tearingDown = true
        if (gpadl.mappedBy === undefined) this.finishTeardown(gpadl)
        return
      }
      case "OpenChannel":
        this.hostOpen(message)
        return
      case "CloseChannel": {
        const offer = this.hostOffers.get(message.childRelid)
        if (offer === undefined || (offer.server === undefined && offer.unaccepted === undefined)) return
        this.hostEndOpenPeriod(offer, "PeerClose")
        return
      }
      case "RelidReleased":
      case "RequestOffers":
      case "InitiateContact":
      case "Unload":
        return
      default:
        // A host→guest message sent to the host.
        this.malformed++
        return
    }
  }

  private finishTeardown(gpadl: HostGpadl): void {
    this.hostGpadls.delete(gpadl.handle)
    this.post("toGuest", { _tag: "GpadlTorndown", handle: gpadl.handle })
  }

  private unmapHost(gpadl: HostGpadl): void {
    gpadl.mappedBy = undefined
    if (gpadl.tearingDown) this.finishTeardown(gpadl)
  }

  private hostOpen(message: ChannelMessage.OpenChannel): void {
    const reject = () =>
      this.post("toGuest", { _tag: "OpenChannelResult", childRelid: message.childRelid, openId: message.openId, status: STATUS_UNSUCCESSFUL })
    const offer = this.hostOffers.get(message.childRelid)
    if (offer === undefined || offer.rescinded || offer.server !== undefined || offer.unaccepted !== undefined) return reject()
    // Once the offer's server accepted an open period, a new one is taken only while it accepts again:
    // otherwise the open would "succeed" with nobody at the other end (the client gets OpenRejected).
    if (offer.acceptedOnce && offer.accepting === undefined) return reject()
    const gpadl = this.hostGpadls.get(message.ringBufferGpadlHandle)
    if (gpadl === undefined || gpadl.tearingDown || gpadl.mappedBy !== undefined || gpadl.byteOffset !== 0) return reject()
    const pages = gpadl.pfns.length
    const split = message.downstreamRingBufferPageOffset
    if (split < 2 || pages - split < 2 || gpadl.byteCount !== pages * Ring.PAGE_SIZE) return reject()
    const view = this.memory.contiguousView(gpadl.pfns, 0, gpadl.byteCount)
    // The simulated host maps rings flat, so it needs them contiguous in guest memory.
    if (Either.isLeft(view)) return reject()
    const clientToServer = view.right.subarray(0, split * Ring.PAGE_SIZE)
    const serverToClient = view.right.subarray(split * Ring.PAGE_SIZE)
    const server = new EndpointState("server", offer.identity, offer.childRelid, serverToClient, clientToServer, this.memory)
    server.mapGpadl = (handle, options) => this.mapGpadl(server, handle, options)
    this.endpoints.add(server)
    offer.ringGpadl = gpadl.handle
    gpadl.mappedBy = { revoke: () => {} }
    if (offer.accepting !== undefined) {
      offer.acceptedOnce = true
      offer.server = server
      Deferred.unsafeDone(offer.accepting, Exit.succeed(server))
      offer.accepting = undefined
    } else {
      offer.unaccepted = server
    }
    this.opened++
    this.pendingServer.set(offer.childRelid, server)
    this.post("toGuest", { _tag: "OpenChannelResult", childRelid: message.childRelid, openId: message.openId, status: 0 })
  }

  /** Server endpoints created by OPENCHANNEL, to be joined with the guest's endpoint on the result. */
  private readonly pendingServer = new Map<number, EndpointState>()

  private hostEndOpenPeriod(offer: HostOffer, reason: CloseReason): void {
    const server = offer.server ?? offer.unaccepted
    if (server === undefined) return
    server.peerClosed(reason)
    this.retiredSignals += server.counters.signalsSent
    server.closed = true
    offer.server = undefined
    offer.unaccepted = undefined
    // The channel is gone: revoke every host mapping of its GPADLs, then release the ring GPADL.
    for (const gpadl of this.hostGpadls.values()) {
      if (gpadl.childRelid !== offer.childRelid || gpadl.mappedBy === undefined) continue
      const mapping = gpadl.mappedBy
      mapping.revoke()
      this.unmapHost(gpadl)
    }
    const ring = this.hostGpadls.get(offer.ringGpadl)
    if (ring !== undefined && ring.mappedBy !== undefined) this.unmapHost(ring)
    this.closedCount++
  }

  private mapGpadl(
    server: EndpointState,
    handle: number,
    options?: { readonly write?: boolean | undefined }
  ): Effect.Effect<GpadlView, GpadlUnavailable | GpadlAlreadyMapped | GpadlWriteMapOfReadOnly | ChannelClosed, Scope.Scope> {
    const write = options?.write !== false
    const childRelid = server.childRelid
    type Mapped = { gpadl: HostGpadl; mapping: { revoke: () => void }; view: GpadlView }
    return Effect.acquireRelease(
      Effect.suspend((): Effect.Effect<Mapped, GpadlUnavailable | GpadlAlreadyMapped | GpadlWriteMapOfReadOnly | ChannelClosed> => {
        // The endpoint's open period bounds its mappings: after it, the relid names the next period's GPADLs.
        if (server.closed) return Effect.fail(new ChannelClosed({ reason: server.closedBy ?? "PeerClose" }))
        const gpadl = this.hostGpadls.get(handle)
        if (gpadl === undefined || gpadl.childRelid !== childRelid) {
          return Effect.fail(new GpadlUnavailable({ handle, reason: "Unknown" }))
        }
        if (gpadl.tearingDown) return Effect.fail(new GpadlUnavailable({ handle, reason: "TearingDown" }))
        if (gpadl.mappedBy !== undefined) return Effect.fail(new GpadlAlreadyMapped({ handle }))
        if (write && gpadl.readOnly) return Effect.fail(new GpadlWriteMapOfReadOnly({ handle }))
        let valid = true
        const mapping = { revoke: () => { valid = false } }
        gpadl.mappedBy = mapping
        const revoked = () => Either.left(new GpadlUnavailable({ handle, reason: "TearingDown" }))
        const check = (offset: number, length: number): InvalidMemoryRange | undefined =>
          Number.isSafeInteger(offset) && Number.isSafeInteger(length) && offset >= 0 && length >= 0 &&
            offset + length <= gpadl.byteCount
            ? undefined
            : new InvalidMemoryRange({ reason: "outside the GPADL", offset, length })
        const view: GpadlView = {
          handle,
          byteLength: gpadl.byteCount,
          writable: write,
          read: (offset, length) => {
            if (!valid) return revoked()
            const bad = check(offset, length)
            if (bad !== undefined) return Either.left(bad)
            return this.memory.readSync(gpadl.pfns, gpadl.byteOffset + offset, length)
          },
          write: (offset, data) => {
            if (!valid) return revoked()
            if (!write) return Either.left(new GpadlWriteMapOfReadOnly({ handle }))
            const bad = check(offset, data.length)
            if (bad !== undefined) return Either.left(bad)
            return this.memory.writeSync(gpadl.pfns, gpadl.byteOffset + offset, data)
          }
        }
        return Effect.succeed({ gpadl, mapping, view })
      }),
      ({ gpadl, mapping }) =>
        Effect.sync(() => {
          mapping.revoke()
          if (gpadl.mappedBy === mapping) this.unmapHost(gpadl)
        })
    ).pipe(Effect.map(({ view }) => view))
  }

  // ----- host: offers ------------------------------------------------------------------------

  offer(identity: Transport.OfferIdentity): Effect.Effect<Transport.Offer, InvalidParameter, Scope.Scope> {
    return Effect.acquireRelease(
      Effect.suspend(() => {
        for (const [field, value] of [["interfaceType", identity.interfaceType], ["interfaceInstance", identity.interfaceInstance]] as const) {
          if (!isGuid(value)) return Effect.fail(new InvalidParameter({ field, reason: "not a GUID", value }))
        }
        const normalized: Transport.OfferIdentity = {
          interfaceType: normalizeGuid(identity.interfaceType),
          interfaceInstance: normalizeGuid(identity.interfaceInstance),
          subChannelIndex: identity.subChannelIndex ?? 0
        }
        for (const existing of this.hostOffers.values()) {
          if (
            existing.identity.interfaceInstance === normalized.interfaceInstance &&
            existing.identity.subChannelIndex === normalized.subChannelIndex
          ) {
            return Effect.fail(
              new InvalidParameter({ field: "interfaceInstance", reason: "already offered", value: identity.interfaceInstance })
            )
          }
        }
        const record: HostOffer = {
          identity: normalized,
          childRelid: this.nextRelid++,
          server: undefined,
          unaccepted: undefined,
          accepting: undefined,
          acceptedOnce: false,
          ringGpadl: 0,
          rescinded: false
        }
        this.hostOffers.set(record.childRelid, record)
        this.post("toGuest", {
          _tag: "OfferChannel",
          interfaceType: normalized.interfaceType,
          interfaceInstance: normalized.interfaceInstance,
          reserved1: 0n,
          reserved2: 0n,
          reserved3: 0,
          channelFlags: 0,
          mmioMegabytes: 0,
          userDefined: new Uint8Array(120),
          subChannelIndex: normalized.subChannelIndex ?? 0,
          childRelid: record.childRelid,
          monitorId: 0xff,
          monitorAllocated: false,
          isDedicatedInterrupt: false,
          connectionId: 0x2000 + record.childRelid
        })
        const accept: Effect.Effect<Transport.Endpoint, ChannelClosed> = Effect.suspend(() => {
          if (record.rescinded) return Effect.fail(new ChannelClosed({ reason: "Rescinded" }))
          if (record.unaccepted !== undefined) {
            const server = record.unaccepted
            record.unaccepted = undefined
            record.acceptedOnce = true
            record.server = server
            return Effect.succeed(server)
          }
          return Effect.flatMap(Deferred.make<EndpointState, ChannelClosed>(), (deferred) => {
            record.accepting = deferred
            return Deferred.await(deferred)
          })
        })
        return Effect.succeed({ record, offer: { identity: normalized, childRelid: record.childRelid, accept } })
      }),
      ({ record }) => Effect.sync(() => this.rescind(record))
    ).pipe(Effect.map(({ offer }) => offer))
  }

  private rescind(record: HostOffer): void {
    if (record.rescinded) return
    record.rescinded = true
    if (record.accepting !== undefined) {
      Deferred.unsafeDone(record.accepting, Exit.fail(new ChannelClosed({ reason: "Rescinded" })))
      record.accepting = undefined
    }
    this.hostEndOpenPeriod(record, "Rescinded")
    // The channel's GPADLs go with it: the guest releases them without GPADL_TEARDOWN after a rescind.
    for (const gpadl of Array.from(this.hostGpadls.values())) {
      if (gpadl.childRelid !== record.childRelid) continue
      gpadl.mappedBy?.revoke()
      this.hostGpadls.delete(gpadl.handle)
    }
    this.hostOffers.delete(record.childRelid)
    this.post("toGuest", { _tag: "RescindChannelOffer", childRelid: record.childRelid })
  }

  rescindByInstance(interfaceInstance: string): boolean {
    for (const record of this.hostOffers.values()) {
      if (record.identity.interfaceInstance === normalizeGuid(interfaceInstance)) {
        this.rescind(record)
        return true
      }
    }
    return false
  }

  // ----- guest: message handling -------------------------------------------------------------

  private guestReceive(bytes: Uint8Array): void {
    const decoded = ChannelMessage.decode(bytes)
    if (Either.isLeft(decoded)) {
      this.malformed++
      return
    }
    const message = decoded.right
    switch (message._tag) {
      case "OfferChannel":
        if (this.allowedTypes !== undefined && !this.allowedTypes.has(message.interfaceType)) {
          this.offersIgnored++
          return
        }
        this.guestOffers.set(message.childRelid, message)
        this.guestOffersChanged.notifyAll()
        return
      case "RescindChannelOffer": {
        this.guestOffers.delete(message.childRelid)
        const channel = this.guestChannels.get(message.childRelid)
        if (channel !== undefined) {
          channel.rescinded = true
          channel.client.peerClosed("Rescinded")
        }
        const open = this.pendingOpens.get(message.childRelid)
        if (open !== undefined) Deferred.unsafeDone(open.deferred, Exit.succeed(STATUS_UNSUCCESSFUL))
        // Every wait on this channel ends now (Linux vmbus_rescind_cleanup): a host that rescinded
        // answers nothing more for it.
        endWaits(this.pendingCreated, message.childRelid, Exit.succeed(STATUS_UNSUCCESSFUL))
        endWaits(this.pendingTorndown, message.childRelid, Exit.void)
        this.guestOffersChanged.notifyAll()
        return
      }
      case "GpadlCreated":
        // Matched on (child_relid, gpadl), as Linux vmbus_ongpadl_created does.
        this.answer(this.pendingCreated, message.handle, (p) => p.relid === message.childRelid, message.creationStatus)
        return
      case "GpadlTorndown":
        this.answer<void, { readonly relid: number; readonly deferred: Deferred.Deferred<void> }>(
          this.pendingTorndown,
          message.handle,
          () => true,
          undefined
        )
        return
      case "OpenChannelResult":
        // Matched on (child_relid, openid), as Linux vmbus_onopen_result does; openid = relid here.
        this.answer(this.pendingOpens, message.childRelid, () => message.openId === message.childRelid, message.status)
        return
      case "AllOffersDelivered":
      case "VersionResponse":
      case "UnloadResponse":
        return
      default:
        this.malformed++
        return
    }
  }

  /** Completes the wait an answer is for; an answer nobody waits for (or that does not match) is counted. */
  private answer<A, W extends { readonly deferred: Deferred.Deferred<A> }>(
    waits: Map<number, W>,
    key: number,
    matches: (wait: W) => boolean,
    value: A
  ): void {
    const wait = waits.get(key)
    if (wait === undefined || !matches(wait)) {
      this.malformed++
      return
    }
    waits.delete(key)
    Deferred.unsafeDone(wait.deferred, Exit.succeed(value))
  }

  // ----- guest: GPADLs -----------------------------------------------------------------------

  /**
   * Creates a GPADL: header and body messages, then waits for GPADL_CREATED. Closing the scope sends
   * GPADL_TEARDOWN and waits for GPADL_TORNDOWN (the host defers it while it has the GPADL mapped).
   * `channel` lets the channel's close tear it down early (KMCL: all GPADLs go before Closed).
   */
  createGpadl(
    childRelid: number,
    range: { readonly pfns: ReadonlyArray<number>; readonly byteOffset?: number | undefined; readonly byteCount?: number | undefined },
    options?: { readonly readOnly?: boolean | undefined; readonly buffer?: GuestMemory.GuestBuffer | undefined },
    channel?: GuestChannel
  ): Effect.Effect<number, GpadlCreateFailed | GpadlTooLarge | InvalidParameter | ChannelClosed, Scope.Scope> {
    const teardown = (handle: number): Effect.Effect<void> =>
      Effect.suspend(() => {
        channel?.gpadls.delete(handle)
        return this.releaseGpadl(handle, childRelid, channel?.rescinded === true)
      })
    type Created = { handle: number; created: Deferred.Deferred<number>; unpin: (() => void) | undefined }
    return Effect.acquireRelease(
      Effect.suspend((): Effect.Effect<Created, GpadlCreateFailed | GpadlTooLarge | InvalidParameter | ChannelClosed> => {
        if (channel !== undefined && (channel.rescinded || channel.client.closed)) {
          return Effect.fail(new ChannelClosed({ reason: channel.rescinded ? "Rescinded" : "LocalClose" }))
        }
        const handle = this.nextGpadlHandle++
        const messages = ChannelMessage.gpadlMessages({
          childRelid,
          handle,
          pfns: range.pfns,
          ...(range.byteOffset === undefined ? {} : { byteOffset: range.byteOffset }),
          ...(range.byteCount === undefined ? {} : { byteCount: range.byteCount })
        })
        if (Either.isLeft(messages)) return Effect.fail(messages.left)
        // KMCL: the pages stay locked until teardown, even if their owner's scope closes first. Only live
        // allocations can be pinned: a released buffer's pages may already be someone else's.
        const buffer = options?.buffer
        if (buffer !== undefined && !this.memory.isLive(buffer)) {
          return Effect.fail(
            new InvalidParameter({ field: "buffer", reason: "the guest buffer was released (its scope closed)", value: buffer.firstPfn })
          )
        }
        const pinned = buffer !== undefined ? Either.right(this.memory.pin(buffer)) : this.memory.pinRange(range.pfns)
        if (Either.isLeft(pinned)) {
          return Effect.fail(new InvalidParameter({ field: "range", reason: pinned.left.reason, value: pinned.left.pfn }))
        }
        const created = Deferred.unsafeMake<number>(FiberId.none)
        this.pendingCreated.set(handle, { relid: childRelid, deferred: created })
        if (options?.readOnly === true) this.readOnlyHint.add(handle)
        this.liveGpadls.add(handle)
        channel?.gpadls.add(handle)
        const unpin = pinned.right
        for (const message of messages.right) this.post("toHost", message)
        return Effect.succeed({ handle, created, unpin })
      }),
      // One finalizer for both, so an interrupted close cannot skip the unpin.
      ({ handle, unpin }) => Effect.ensuring(teardown(handle), Effect.sync(() => unpin?.()))
    ).pipe(
      Effect.flatMap(({ created, handle }) =>
        Effect.flatMap(Deferred.await(created), (status): Effect.Effect<number, GpadlCreateFailed> =>
          status === 0
            ? Effect.succeed(handle)
            : Effect.suspend(() => {
              // The host refused it: nothing to tear down.
              this.liveGpadls.delete(handle)
              channel?.gpadls.delete(handle)
              return Effect.fail(new GpadlCreateFailed({ handle, status }))
            }))
      )
    )
  }

  /**
   * Ends one GPADL: GPADL_TEARDOWN and the wait for GPADL_TORNDOWN — or, once the channel was rescinded,
   * nothing on the wire (Linux vmbus_teardown_gpadl skips the message after a rescind).
   */
  private releaseGpadl(handle: number, childRelid: number, rescinded: boolean): Effect.Effect<void> {
    return Effect.suspend(() => {
      if (!this.liveGpadls.has(handle)) return Effect.void
      this.liveGpadls.delete(handle)
      if (rescinded) return Effect.void
      const deferred = Deferred.unsafeMake<void>(FiberId.none)
      this.pendingTorndown.set(handle, { relid: childRelid, deferred })
      this.post("toHost", { _tag: "GpadlTeardown", childRelid, handle })
      return Deferred.await(deferred)
    })
  }

  /** Tears down every GPADL still alive on a channel (KMCL: before the close completes). */
  private teardownChannelGpadls(channel: GuestChannel): Effect.Effect<void> {
    return Effect.forEach(Array.from(channel.gpadls), (handle) =>
      Effect.suspend(() => {
        channel.gpadls.delete(handle)
        return this.releaseGpadl(handle, channel.childRelid, channel.rescinded)
      }), { discard: true })
  }

  // ----- guest: open and close ---------------------------------------------------------------

  private findOffer(request: Transport.OpenRequest): ChannelMessage.OfferChannel | undefined {
    const type = normalizeGuid(request.interfaceType)
    const instance = request.interfaceInstance === undefined ? undefined : normalizeGuid(request.interfaceInstance)
    for (const offer of this.guestOffers.values()) {
      if (this.guestChannels.has(offer.childRelid) || this.pendingOpens.has(offer.childRelid)) continue
      if (offer.interfaceType !== type) continue
      if (instance !== undefined && offer.interfaceInstance !== instance) continue
      return offer
    }
    return undefined
  }

  open(
    request: Transport.OpenRequest
  ): Effect.Effect<
    Transport.Endpoint,
    InvalidParameter | OpenRejected | OutOfMemory | GpadlCreateFailed | GpadlTooLarge | ChannelClosed,
    Scope.Scope
  > {
    const validate = Effect.suspend(() => {
      if (!isGuid(request.interfaceType)) {
        return Effect.fail(new InvalidParameter({ field: "interfaceType", reason: "not a GUID", value: request.interfaceType }))
      }
      if (request.interfaceInstance !== undefined && !isGuid(request.interfaceInstance)) {
        return Effect.fail(new InvalidParameter({ field: "interfaceInstance", reason: "not a GUID", value: request.interfaceInstance }))
      }
      for (const [field, pages] of [["outgoingRingPages", request.outgoingRingPages], ["incomingRingPages", request.incomingRingPages]] as const) {
        if (!Number.isSafeInteger(pages) || pages < 2 || pages > 0x10_0000) {
          return Effect.fail(new InvalidParameter({ field, reason: "a ring needs 2..2^20 pages (control page included)", value: pages }))
        }
      }
      return Effect.void
    })
    // Claim an offer (interruptible wait; the claim itself is one synchronous step).
    const claim: Effect.Effect<ChannelMessage.OfferChannel, never, Scope.Scope> = Effect.suspend(() => {
      const seen = this.guestOffersChanged.current
      return Effect.acquireRelease(
        Effect.sync(() => {
          const offer = this.findOffer(request)
          if (offer !== undefined) this.pendingOpens.set(offer.childRelid, { childRelid: offer.childRelid, deferred: Deferred.unsafeMake<number>(FiberId.none) })
          return offer
        }),
        (offer) =>
          Effect.sync(() => {
            if (offer === undefined) return
            this.pendingOpens.delete(offer.childRelid)
            this.guestOffersChanged.notifyAll()
          })
      ).pipe(
        Effect.flatMap((offer) =>
          offer === undefined ? Effect.zipRight(this.guestOffersChanged.waitAfter(seen), claim) : Effect.succeed(offer)
        )
      )
    })
    return Effect.gen(this, function*() {
      yield* validate
      const offer = yield* claim
      const relid = offer.childRelid
      const pages = request.outgoingRingPages + request.incomingRingPages
      // Rings: one contiguous donation, send ring first, described by one GPADL (as Linux does).
      const buffer = yield* this.memory.allocate(pages)
      const channel: GuestChannel = {
        childRelid: relid,
        client: undefined as unknown as EndpointState,
        gpadls: new Set(),
        rescinded: false
      }
      const ringGpadl = yield* this.createGpadl(relid, { pfns: buffer.pfns }, undefined)
      // Torn down by the close itself, before RELID_RELEASED (the acquisition's own release is then a no-op).
      channel.gpadls.add(ringGpadl)
      const clientToServer = buffer.bytes.subarray(0, request.outgoingRingPages * Ring.PAGE_SIZE)
      const serverToClient = buffer.bytes.subarray(request.outgoingRingPages * Ring.PAGE_SIZE)
      Ring.initialize(clientToServer)
      Ring.initialize(serverToClient)
      const pending = this.pendingOpens.get(relid)!
      const userData = new Uint8Array(120)
      if (request.userData !== undefined) userData.set(request.userData.subarray(0, 120))
      this.post("toHost", {
        _tag: "OpenChannel",
        childRelid: relid,
        openId: relid,
        ringBufferGpadlHandle: ringGpadl,
        targetVp: 0,
        downstreamRingBufferPageOffset: request.outgoingRingPages,
        userData
      })
      const status = yield* Deferred.await(pending.deferred)
      if (status !== 0) return yield* new OpenRejected({ status })
      const server = this.pendingServer.get(relid)!
      this.pendingServer.delete(relid)
      const client = new EndpointState("client", {
        interfaceType: offer.interfaceType,
        interfaceInstance: offer.interfaceInstance,
        subChannelIndex: offer.subChannelIndex
      }, relid, clientToServer, serverToClient, this.memory)
      this.endpoints.add(client)
      client.peer = server
      server.peer = client
      ;(channel as { client: EndpointState }).client = client
      client.createGpadl = (range, options) => this.createGpadl(relid, range, options, channel)
      this.guestChannels.set(relid, channel)
      // Close as Linux vmbus_close_internal: CLOSECHANNEL always; GPADLs torn down (released locally after
      // a rescind, with no message); RELID_RELEASED last after a rescind.
      yield* Effect.addFinalizer(() =>
        Effect.suspend(() => {
          this.retiredSignals += client.counters.signalsSent
          client.closed = true
          this.guestChannels.delete(relid)
          this.post("toHost", { _tag: "CloseChannel", childRelid: relid })
          return this.teardownChannelGpadls(channel).pipe(
            Effect.zipRight(Effect.sync(() => {
              if (channel.rescinded) this.post("toHost", { _tag: "RelidReleased", childRelid: relid })
              this.guestOffersChanged.notifyAll()
            }))
          )
        })
      )
      return client as Transport.Endpoint
    })
  }

  // ----- diagnostics -------------------------------------------------------------------------

  stats(): TransportStats {
    let openChannels = 0
    let signalsSent = this.retiredSignals
    let outstandingTransactions = 0
    let outstandingPackets = 0
    for (const channel of this.guestChannels.values()) {
      openChannels++
      for (const endpoint of [channel.client, channel.client.peer]) {
        signalsSent += endpoint.counters.signalsSent
        outstandingTransactions += endpoint.counters.outstandingTransactions
        outstandingPackets += endpoint.counters.outstandingPackets
      }
    }
    let mapped = 0
    for (const gpadl of this.hostGpadls.values()) if (gpadl.mappedBy !== undefined) mapped++
    let channelViews = 0
    for (const endpoint of this.endpoints) {
      const views = endpoint.counters.liveViews ?? 0
      channelViews += views
      if (endpoint.closed && views === 0) this.endpoints.delete(endpoint)
    }
    return {
      offers: this.hostOffers.size,
      openChannels,
      channelsOpened: this.opened,
      channelsClosed: this.closedCount,
      signalsSent,
      outstandingTransactions,
      outstandingPackets,
      gpadls: this.hostGpadls.size,
      gpadlsMapped: mapped,
      liveViews: mapped + channelViews,
      messagesToHost: this.messagesToHost,
      messagesToGuest: this.messagesToGuest,
      malformedMessages: this.malformed,
      offersIgnored: this.offersIgnored
    }
  }

  openChannels(): ReadonlyArray<OpenChannelInfo> {
    const result: Array<OpenChannelInfo> = []
    for (const channel of this.guestChannels.values()) {
      result.push({
        childRelid: channel.childRelid,
        identity: channel.client.identity,
        clientToServer: channel.client.outgoing,
        serverToClient: channel.client.incoming,
        client: channel.client.counters,
        server: channel.client.peer.counters
      })
    }
    return result
  }
}

// The in-memory transport: both endpoints in one process, over byte-exact rings in a SharedArrayBuffer
// laid out as Linux donates them (send ring, then receive ring, in one buffer). Signals are counted.
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as Ring from "../Ring.js"
import type * as Transport from "../Transport.js"
import type { CloseReason } from "../VmbusError.js"
import { ChannelClosed, InvalidParameter } from "../VmbusError.js"
import { Notifier } from "./notifier.js"

const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

export const normalizeGuid = (guid: string): string => guid.toLowerCase()

export const isGuid = (guid: string): boolean => GUID.test(guid.toLowerCase())

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

  constructor(
    readonly role: "client" | "server",
    readonly identity: Transport.OfferIdentity,
    readonly childRelid: number,
    readonly outgoing: Uint8Array,
    readonly incoming: Uint8Array
  ) {}

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

  /** The other side closed or rescinded: tell the channel once. */
  peerClosed(reason: CloseReason): void {
    if (this.closedBy !== undefined) return
    this.closedBy = reason
    this.peerCloseCallback?.(reason)
  }
}

interface OfferRecord {
  readonly identity: Transport.OfferIdentity
  readonly childRelid: number
  /** The server endpoint of the current open period, once a client opened it. */
  server: EndpointState | undefined
  client: EndpointState | undefined
  accepting: Deferred.Deferred<EndpointState, ChannelClosed> | undefined
  rescinded: boolean
}

export interface TransportStats {
  readonly offers: number
  readonly openChannels: number
  readonly channelsOpened: number
  readonly channelsClosed: number
  readonly signalsSent: number
  readonly outstandingTransactions: number
  readonly outstandingPackets: number
}

export interface OpenChannelInfo {
  readonly childRelid: number
  readonly identity: Transport.OfferIdentity
  /** The guest→host ring (control page + data). */
  readonly clientToServer: Uint8Array
  /** The host→guest ring. */
  readonly serverToClient: Uint8Array
  readonly client: Transport.EndpointCounters
  readonly server: Transport.EndpointCounters
}

export class Bus {
  private nextRelid = 1
  private readonly offers = new Map<number, OfferRecord>()
  private readonly offersChanged = new Notifier()
  private opened = 0
  private closed = 0
  private retiredSignals = 0

  stats(): TransportStats {
    let openChannels = 0
    let signalsSent = this.retiredSignals
    let outstandingTransactions = 0
    let outstandingPackets = 0
    for (const record of this.offers.values()) {
      for (const endpoint of [record.server, record.client]) {
        if (endpoint === undefined) continue
        signalsSent += endpoint.counters.signalsSent
        outstandingTransactions += endpoint.counters.outstandingTransactions
        outstandingPackets += endpoint.counters.outstandingPackets
      }
      if (record.client !== undefined) openChannels++
    }
    return {
      offers: this.offers.size,
      openChannels,
      channelsOpened: this.opened,
      channelsClosed: this.closed,
      signalsSent,
      outstandingTransactions,
      outstandingPackets
    }
  }

  openChannels(): ReadonlyArray<OpenChannelInfo> {
    const result: Array<OpenChannelInfo> = []
    for (const record of this.offers.values()) {
      if (record.client === undefined || record.server === undefined) continue
      result.push({
        childRelid: record.childRelid,
        identity: record.identity,
        clientToServer: record.client.outgoing,
        serverToClient: record.client.incoming,
        client: record.client.counters,
        server: record.server.counters
      })
    }
    return result
  }

  offer(identity: Transport.OfferIdentity): Effect.Effect<Transport.Offer, InvalidParameter, Scope.Scope> {
    return Effect.acquireRelease(
      Effect.suspend(() => {
        if (!isGuid(identity.interfaceType)) {
          return Effect.fail(new InvalidParameter({ field: "interfaceType", reason: "not a GUID", value: identity.interfaceType }))
        }
        if (!isGuid(identity.interfaceInstance)) {
          return Effect.fail(
            new InvalidParameter({ field: "interfaceInstance", reason: "not a GUID", value: identity.interfaceInstance })
          )
        }
        const normalized: Transport.OfferIdentity = {
          interfaceType: normalizeGuid(identity.interfaceType),
          interfaceInstance: normalizeGuid(identity.interfaceInstance),
          subChannelIndex: identity.subChannelIndex ?? 0
        }
        for (const existing of this.offers.values()) {
          if (
            existing.identity.interfaceInstance === normalized.interfaceInstance &&
            existing.identity.subChannelIndex === normalized.subChannelIndex
          ) {
            return Effect.fail(
              new InvalidParameter({ field: "interfaceInstance", reason: "already offered", value: identity.interfaceInstance })
            )
          }
        }
        const record: OfferRecord = {
          identity: normalized,
          childRelid: this.nextRelid++,
          server: undefined,
          client: undefined,
          accepting: undefined,
          rescinded: false
        }
        this.offers.set(record.childRelid, record)
        this.offersChanged.notifyAll()
        const accept: Effect.Effect<Transport.Endpoint, ChannelClosed> = Effect.suspend(() => {
          if (record.rescinded) return Effect.fail(new ChannelClosed({ reason: "Rescinded" }))
          if (record.server !== undefined && record.client !== undefined && record.server.closedBy === undefined) {
            // An open period is waiting to be accepted already.
            return Effect.succeed(record.server)
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

  private rescind(record: OfferRecord): void {
    record.rescinded = true
    if (record.accepting !== undefined) {
      Deferred.unsafeDone(record.accepting, Effect.fail(new ChannelClosed({ reason: "Rescinded" })))
      record.accepting = undefined
    }
    if (record.client !== undefined) {
      record.client.peerClosed("Rescinded")
      this.retire(record)
    }
    this.offers.delete(record.childRelid)
    this.offersChanged.notifyAll()
  }

  /** Rescinds an offer from the host side without closing the server's scope (test control). */
  rescindByInstance(interfaceInstance: string): boolean {
    for (const record of this.offers.values()) {
      if (record.identity.interfaceInstance === normalizeGuid(interfaceInstance)) {
        this.rescind(record)
        return true
      }
    }
    return false
  }

  private retire(record: OfferRecord): void {
    for (const endpoint of [record.client, record.server]) {
      if (endpoint === undefined) continue
      this.retiredSignals += endpoint.counters.signalsSent
      endpoint.closed = true
    }
    record.client = undefined
    record.server = undefined
    this.closed++
  }

  private findOffer(request: Transport.OpenRequest): OfferRecord | undefined {
    const type = normalizeGuid(request.interfaceType)
    const instance = request.interfaceInstance === undefined ? undefined : normalizeGuid(request.interfaceInstance)
    for (const record of this.offers.values()) {
      if (record.rescinded || record.client !== undefined) continue
      if (record.identity.interfaceType !== type) continue
      if (instance !== undefined && record.identity.interfaceInstance !== instance) continue
      return record
    }
    return undefined
  }

  open(request: Transport.OpenRequest): Effect.Effect<Transport.Endpoint, InvalidParameter, Scope.Scope> {
    const validate = Effect.suspend(() => {
      if (!isGuid(request.interfaceType)) {
        return Effect.fail(new InvalidParameter({ field: "interfaceType", reason: "not a GUID", value: request.interfaceType }))
      }
      if (request.interfaceInstance !== undefined && !isGuid(request.interfaceInstance)) {
        return Effect.fail(
          new InvalidParameter({ field: "interfaceInstance", reason: "not a GUID", value: request.interfaceInstance })
        )
      }
      for (const [field, pages] of [["outgoingRingPages", request.outgoingRingPages], ["incomingRingPages", request.incomingRingPages]] as const) {
        if (!Number.isSafeInteger(pages) || pages < 2 || pages > 0x10_0000) {
          return Effect.fail(new InvalidParameter({ field, reason: "a ring needs 2..2^20 pages (control page included)", value: pages }))
        }
      }
      return Effect.void
    })
    // Wait (interruptibly) for a matching offer; connect in one synchronous step, retry if it was taken.
    const attempt: Effect.Effect<EndpointState, never, Scope.Scope> = Effect.suspend(() => {
      const seen = this.offersChanged.current
      return Effect.acquireRelease(
        Effect.sync(() => {
          const record = this.findOffer(request)
          return record === undefined ? undefined : this.connect(record, request)
        }),
        (connected) =>
          Effect.sync(() => {
            if (connected === undefined) return
            const { client, record } = connected
            if (record.client !== client) return
            record.server?.peerClosed("PeerClose")
            this.retire(record)
            this.offersChanged.notifyAll()
          })
      ).pipe(
        Effect.flatMap((connected) =>
          connected === undefined
            ? Effect.zipRight(this.offersChanged.waitAfter(seen), attempt)
            : Effect.succeed(connected.client)
        )
      )
    })
    return Effect.zipRight(validate, attempt)
  }

  private connect(record: OfferRecord, request: Transport.OpenRequest): { record: OfferRecord; client: EndpointState } {
    const page = Ring.PAGE_SIZE
    const sendBytes = request.outgoingRingPages * page
    const receiveBytes = request.incomingRingPages * page
    // One buffer, send ring then receive ring: the layout of the ring GPADL Linux creates.
    const memory = new Uint8Array(new SharedArrayBuffer(sendBytes + receiveBytes))
    const clientToServer = memory.subarray(0, sendBytes)
    const serverToClient = memory.subarray(sendBytes)
    Ring.initialize(clientToServer)
    Ring.initialize(serverToClient)
    const client = new EndpointState("client", record.identity, record.childRelid, clientToServer, serverToClient)
    const server = new EndpointState("server", record.identity, record.childRelid, serverToClient, clientToServer)
    client.peer = server
    server.peer = client
    record.client = client
    record.server = server
    this.opened++
    if (record.accepting !== undefined) {
      Deferred.unsafeDone(record.accepting, Effect.succeed(server))
      record.accepting = undefined
    }
    return { record, client }
  }

  /** Closes the server side of an open period (the host closing its end, as on a device reset). */
  closeServerSide(endpoint: Transport.Endpoint): void {
    for (const record of this.offers.values()) {
      if (record.server === endpoint) {
        record.client?.peerClosed("PeerClose")
        this.retire(record)
        this.offersChanged.notifyAll()
        return
      }
    }
  }
}

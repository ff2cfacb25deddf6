// The shared-memory transport: the data path of a channel across threads. The host thread keeps the
// in-memory bus (control plane, host endpoints) and opens channels on a remote guest's behalf; the guest
// thread gets `Endpoint`s whose rings are views on the same GuestMemory SharedArrayBuffer. Control
// requests (open, close) and lifecycle events (peer close) travel over a MessagePort; signals travel
// through a shared Int32Array of doorbell words, two per channel slot (to host, to guest; see
// ./doorbell.ts for how they are rung and waited for).
import * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Queue from "effect/Queue"
import * as Scope from "effect/Scope"
import type { MessagePort } from "node:worker_threads"
import { MessageChannel } from "node:worker_threads"
import * as GuestMemory from "../GuestMemory.js"
import * as Doorbell from "./doorbell.js"
import * as Transport from "../Transport.js"
import type { CloseReason } from "../VmbusError.js"
import {
  ChannelClosed,
  GpadlCreateFailed,
  GpadlTooLarge,
  InvalidParameter,
  OpenRejected,
  OpenTimeout,
  OutOfMemory,
  TransportError,
  Unsupported
} from "../VmbusError.js"

// ---------------------------------------------------------------------------------------------
// Shared state and wire messages
// ---------------------------------------------------------------------------------------------

export interface SharedBuffers {
  /** The GuestMemory pages (`GuestMemoryShape.buffer`): the rings live here. */
  readonly memory: SharedArrayBuffer
  /** Two Int32 doorbell words per channel slot (`[2 * slot]` to host, `[2 * slot + 1]` to guest), then four more (./doorbell.ts). */
  readonly doorbells: SharedArrayBuffer
}

export interface Connection {
  /** The host thread's end: give it to `serveGuest`. */
  readonly hostPort: MessagePort
  /** The guest thread's end: transfer it to the worker (`transferList`) and give it to `make`/`layerGuest`. */
  readonly guestPort: MessagePort
  /** Structured-cloneable (shared, not copied): pass it in `workerData`. */
  readonly shared: SharedBuffers
}

export type OpenError =
  | OpenRejected
  | OpenTimeout
  | Unsupported
  | InvalidParameter
  | TransportError
  | OutOfMemory
  | GpadlCreateFailed
  | GpadlTooLarge
  | ChannelClosed

interface RingLocation {
  readonly byteOffset: number
  readonly byteLength: number
}

interface EncodedError {
  readonly _tag: string
  readonly fields: Record<string, unknown>
}

type GuestMessage =
  | { readonly _tag: "Open"; readonly id: number; readonly request: Transport.OpenRequest }
  | { readonly _tag: "Close"; readonly id: number }

type HostMessage =
  | {
    readonly _tag: "Opened"
    readonly id: number
    readonly childRelid: number
    readonly identity: Transport.OfferIdentity
    readonly outgoing: RingLocation
    readonly incoming: RingLocation
    readonly slot: number
  }
  | { readonly _tag: "OpenFailed"; readonly id: number; readonly error: EncodedError }
  | { readonly _tag: "PeerClosed"; readonly id: number; readonly reason: CloseReason }
  | { readonly _tag: "Closed"; readonly id: number }

const DEFAULT_MAX_CHANNELS = 64

export const makeConnection = (
  options?: { readonly maxChannels?: number | undefined }
): Effect.Effect<Connection, InvalidParameter, GuestMemory.GuestMemory> =>
  Effect.flatMap(GuestMemory.GuestMemory, (memory) => {
    const maxChannels = options?.maxChannels ?? DEFAULT_MAX_CHANNELS
    if (!Number.isSafeInteger(maxChannels) || maxChannels < 1 || maxChannels > 65536) {
      return Effect.fail(
        new InvalidParameter({ field: "maxChannels", reason: "must be an integer in 1..65536", value: maxChannels })
      )
    }
    return Effect.sync(() => {
      const { port1, port2 } = new MessageChannel()
      return {
        hostPort: port1,
        guestPort: port2,
        shared: { memory: memory.buffer, doorbells: new SharedArrayBuffer(Doorbell.doorbellBytes(maxChannels)) }
      }
    })
  })

// ---------------------------------------------------------------------------------------------
// Errors across the port
// ---------------------------------------------------------------------------------------------

const errorClasses: Record<string, new(fields: any) => OpenError> = {
  OpenRejected,
  OpenTimeout,
  Unsupported,
  InvalidParameter,
  TransportError,
  OutOfMemory,
  GpadlCreateFailed,
  GpadlTooLarge,
  ChannelClosed
}

const isCloneable = (value: unknown): boolean =>
  value === undefined || value === null || typeof value === "string" || typeof value === "number" ||
  typeof value === "boolean" || value instanceof Uint8Array

const encodeError = (error: unknown): EncodedError => {
  if (typeof error === "object" && error !== null && "_tag" in error && typeof error._tag === "string") {
    const fields: Record<string, unknown> = {}
    for (const [key, value] of Object.entries(error)) {
      if (key !== "_tag" && key !== "cause" && isCloneable(value)) fields[key] = value
    }
    return { _tag: error._tag, fields }
  }
  return { _tag: "TransportError", fields: { reason: "Unknown", detail: String(error) } }
}

const decodeError = (encoded: EncodedError): OpenError => {
  const Class = errorClasses[encoded._tag]
  if (Class !== undefined) {
    try {
      return new Class(encoded.fields)
    } catch {
      // fall through: the fields did not validate
    }
  }
  return new TransportError({ reason: "Unknown", detail: `host failed the open with ${encoded._tag}` })
}

const connectionClosed = (): TransportError =>
  new TransportError({ reason: "UnexpectedEof", detail: "the shared-memory connection is closed" })

// ---------------------------------------------------------------------------------------------
// Host side
// ---------------------------------------------------------------------------------------------

export interface GuestServer {
  /** Remote channels open (or opening) right now. */
  readonly openChannels: Effect.Effect<number>
  /** Completes when the guest is gone (the port closed) and every remote channel has been closed. */
  readonly closed: Effect.Effect<void>
}

interface RemoteChannel {
  readonly id: number
  readonly scope: Scope.CloseableScope
  opening: Fiber.RuntimeFiber<void> | undefined
}

type Inbox = GuestMessage | { readonly _tag: "PortClosed" }

export const serveGuest = (
  port: MessagePort,
  shared: SharedBuffers,
  options?: Doorbell.WaitOptions
): Effect.Effect<GuestServer, InvalidParameter, Transport.Transport | Scope.Scope> =>
  Effect.gen(function*() {
    const wait = Doorbell.validateWaitOptions(options)
    if (wait instanceof InvalidParameter) return yield* wait
    const transport = yield* Transport.Transport
    // The dispatcher and the per-channel fibers live in a scope of their own, closed last: the guest's
    // channels usually close while the caller's scope is already closing (they were opened after this),
    // and a fiber forked into a closing scope would be interrupted before it starts.
    const serverScope = yield* Scope.make()
    const words = new Int32Array(shared.doorbells)
    const waiter = new Doorbell.Waiter(words, Doorbell.TO_HOST, wait)
    const free: Array<number> = []
    for (let slot = Doorbell.slotCount(words) - 1; slot >= 0; slot--) free.push(slot)
    const channels = new Map<number, RemoteChannel>()
    const done = yield* Deferred.make<void>()
    const inbox = yield* Queue.unbounded<Inbox>()
    let portOpen = true

    const post = (message: HostMessage): void => {
      if (portOpen) port.postMessage(message)
    }

    const closeRemote = (remote: RemoteChannel): Effect.Effect<void> =>
      Effect.suspend(() => {
        channels.delete(remote.id)
        const opening = remote.opening
        return (opening === undefined ? Effect.void : Fiber.interrupt(opening)).pipe(
          Effect.zipRight(Scope.close(remote.scope, Exit.void))
        )
      })

    const closeAll = (notifyGuest: boolean): Effect.Effect<void> =>
      Effect.suspend(() => {
        const all = [...channels.values()]
        if (notifyGuest) for (const remote of all) post({ _tag: "PeerClosed", id: remote.id, reason: "PeerClose" })
        return Effect.forEach(all, closeRemote, { concurrency: "unbounded", discard: true })
      })

    let closing = false
    let dispatcher: Fiber.RuntimeFiber<never> | undefined = undefined
    // Stop taking messages first, so no open can slip in while the remote channels are being closed.
    yield* Effect.addFinalizer(() =>
      Effect.suspend(() => {
        closing = true
        return dispatcher === undefined ? Effect.void : Fiber.interrupt(dispatcher)
      }).pipe(
        Effect.zipRight(closeAll(true)),
        Effect.zipRight(Effect.sync(() => {
          port.off("message", onMessage)
          port.off("close", onClose)
          portOpen = false
          port.close()
        })),
        Effect.zipRight(Scope.close(serverScope, Exit.void)),
        Effect.zipRight(Deferred.done(done, Exit.void))
      )
    )

    const bridge = (remote: RemoteChannel, endpoint: Transport.Endpoint) =>
      Effect.gen(function*() {
        for (const [name, ring] of [["outgoing", endpoint.outgoing], ["incoming", endpoint.incoming]] as const) {
          if (ring.buffer !== shared.memory) {
            return yield* new TransportError({
              reason: "BadResource",
              detail: `the ${name} ring is not in the shared guest memory (serve the bus of that GuestMemory)`
            })
          }
        }
        const slot = free.pop()
        if (slot === undefined) {
          return yield* new TransportError({ reason: "Busy", detail: "no free doorbell slot (raise maxChannels)" })
        }
        Atomics.store(words, Doorbell.channelWord(slot, Doorbell.TO_HOST), 0)
        Atomics.store(words, Doorbell.channelWord(slot, Doorbell.TO_GUEST), 0)
        let stopped = false
        const watcher = waiter.watch(slot, 0, () => endpoint.signal())
        yield* Scope.addFinalizer(
          remote.scope,
          Effect.sync(() => {
            stopped = true
            watcher.stop()
            free.push(slot)
          })
        )
        endpoint.onSignal(() => {
          if (!stopped) Doorbell.ring(words, slot, Doorbell.TO_GUEST)
        })
        watcher.start()
        // Installed by `open` once Opened is posted: a close the peer already made is then sent after it.
        const forwardPeerClose = () =>
          endpoint.onPeerClose((reason) => {
            if (!stopped) post({ _tag: "PeerClosed", id: remote.id, reason })
          })
        return { slot, forwardPeerClose }
      })

    const open = (remote: RemoteChannel, request: Transport.OpenRequest): Effect.Effect<void> =>
      Effect.gen(function*() {
        const endpoint = yield* transport.open(request).pipe(Scope.extend(remote.scope))
        const { forwardPeerClose, slot } = yield* bridge(remote, endpoint)
        const location = (view: Uint8Array): RingLocation => ({
          byteOffset: view.byteOffset,
          byteLength: view.byteLength
        })
        post({
          _tag: "Opened",
          id: remote.id,
          childRelid: endpoint.childRelid,
          identity: { ...endpoint.identity },
          outgoing: location(endpoint.outgoing),
          incoming: location(endpoint.incoming),
          slot
        })
        forwardPeerClose()
      }).pipe(
        Effect.catchAllCause((cause) =>
          Cause.isInterruptedOnly(cause) ? Effect.void : Effect.suspend(() => {
            const failure = Cause.failureOption(cause)
            const error = failure._tag === "Some"
              ? encodeError(failure.value)
              : encodeError(new TransportError({ reason: "Unknown", detail: Cause.pretty(cause) }))
            channels.delete(remote.id)
            post({ _tag: "OpenFailed", id: remote.id, error })
            return Scope.close(remote.scope, Exit.void)
          })
        ),
        Effect.ensuring(Effect.sync(() => {
          remote.opening = undefined
        }))
      )

    const handle = (message: Inbox): Effect.Effect<void> => {
      switch (message._tag) {
        case "Open":
          return Effect.gen(function*() {
            if (closing || channels.has(message.id)) {
              const detail = closing ? "the host is shutting down" : `channel id ${message.id} is already in use`
              post({ _tag: "OpenFailed", id: message.id, error: encodeError(new TransportError({ reason: "Busy", detail })) })
              return
            }
            const remote: RemoteChannel = { id: message.id, scope: yield* Scope.make(), opening: undefined }
            channels.set(remote.id, remote)
            remote.opening = yield* Effect.forkIn(open(remote, message.request), serverScope)
          })
        case "Close": {
          const remote = channels.get(message.id)
          if (remote === undefined) return Effect.sync(() => post({ _tag: "Closed", id: message.id }))
          return Effect.asVoid(Effect.forkIn(
            Effect.ensuring(closeRemote(remote), Effect.sync(() => post({ _tag: "Closed", id: message.id }))),
            serverScope
          ))
        }
        case "PortClosed":
          return Effect.suspend(() => {
            portOpen = false
            return closeAll(false)
          }).pipe(Effect.zipRight(Deferred.done(done, Exit.void)))
        default:
          // A message this host does not know: ignored, never fatal to the dispatcher.
          return Effect.void
      }
    }

    const onMessage = (message: GuestMessage): void => {
      Queue.unsafeOffer(inbox, message)
    }
    const onClose = (): void => {
      Queue.unsafeOffer(inbox, { _tag: "PortClosed" })
    }
    port.on("message", onMessage)
    port.on("close", onClose)
    dispatcher = yield* Effect.forkIn(
      Effect.forever(Effect.flatMap(Queue.take(inbox), (message) => Effect.catchAllCause(handle(message), () => Effect.void))),
      serverScope
    )

    return {
      openChannels: Effect.sync(() => channels.size),
      closed: Deferred.await(done)
    }
  })

// ---------------------------------------------------------------------------------------------
// Guest side
// ---------------------------------------------------------------------------------------------

class GuestEndpoint implements Transport.Endpoint {
  readonly role = "client" as const
  readonly counters: Transport.EndpointCounters = {
    signalsSent: 0,
    signalsReceived: 0,
    outstandingTransactions: 0,
    outstandingPackets: 0
  }
  readonly memory = undefined
  readonly createGpadl = undefined
  readonly mapGpadl = undefined
  private watcher: Doorbell.Watcher | undefined = undefined
  private signalCallback: (() => void) | undefined = undefined
  private peerCloseCallback: ((reason: CloseReason) => void) | undefined = undefined
  private closedBy: CloseReason | undefined = undefined
  private stopped = false

  constructor(
    readonly identity: Transport.OfferIdentity,
    readonly childRelid: number,
    readonly outgoing: Uint8Array,
    readonly incoming: Uint8Array,
    private readonly waiter: Doorbell.Waiter,
    private readonly slot: number
  ) {}

  readonly signal = (): void => {
    if (this.stopped) return
    this.counters.signalsSent++
    Doorbell.ring(this.waiter.words, this.slot, Doorbell.TO_HOST)
  }

  readonly onSignal = (callback: () => void): void => {
    this.signalCallback = callback
    if (this.watcher !== undefined || this.stopped) return
    // The host resets both words before it answers the open, so 0 is "nothing seen yet": a signal that
    // arrived before the callback was installed is delivered now.
    this.watcher = this.waiter.watch(this.slot, 0, () => {
      this.counters.signalsReceived++
      this.signalCallback?.()
    })
    this.watcher.start()
  }

  readonly onPeerClose = (callback: (reason: CloseReason) => void): void => {
    this.peerCloseCallback = callback
    if (this.closedBy !== undefined) callback(this.closedBy)
  }

  /**
   * The close reaches this thread after the host may already have freed the rings (it closes its side
   * right after posting it), so from then on they are not touched — not even to read last completions.
   */
  readonly ringsValid = (): boolean => this.closedBy === undefined && !this.stopped

  peerClosed(reason: CloseReason): void {
    if (this.closedBy !== undefined || this.stopped) return
    this.closedBy = reason
    this.peerCloseCallback?.(reason)
  }

  stop(): void {
    this.stopped = true
    this.watcher?.stop()
  }
}

export const make = (
  port: MessagePort,
  shared: SharedBuffers,
  options?: Doorbell.WaitOptions
): Effect.Effect<Transport.TransportShape, InvalidParameter, Scope.Scope> =>
  Effect.gen(function*() {
    const wait = Doorbell.validateWaitOptions(options)
    if (wait instanceof InvalidParameter) return yield* wait
    const words = new Int32Array(shared.doorbells)
    const waiter = new Doorbell.Waiter(words, Doorbell.TO_GUEST, wait)
    const pendingOpens = new Map<number, (message: HostMessage) => void>()
    const pendingCloses = new Map<number, () => void>()
    const endpoints = new Map<number, GuestEndpoint>()
    /** Opened, endpoint not built yet: a PeerClosed arriving meanwhile is kept for it. */
    const awaitingEndpoint = new Set<number>()
    const earlyCloses = new Map<number, CloseReason>()
    let nextId = 1
    let portOpen = true
    // A pending Atomics.waitAsync does not keep a thread alive: the port does, while a channel is open
    // or an open/close is under way, and lets the thread exit once none is.
    let portHeld = true
    const holdPort = (): void => {
      const busy = portOpen && pendingOpens.size + endpoints.size + pendingCloses.size > 0
      if (busy === portHeld) return
      portHeld = busy
      if (busy) port.ref()
      else port.unref()
    }

    const onMessage = (message: HostMessage): void => {
      switch (message._tag) {
        case "Opened":
        case "OpenFailed": {
          const resume = pendingOpens.get(message.id)
          pendingOpens.delete(message.id)
          if (resume !== undefined && message._tag === "Opened") awaitingEndpoint.add(message.id)
          resume?.(message)
          holdPort()
          return
        }
        case "PeerClosed": {
          const endpoint = endpoints.get(message.id)
          if (endpoint !== undefined) endpoint.peerClosed(message.reason)
          else if (awaitingEndpoint.has(message.id)) earlyCloses.set(message.id, message.reason)
          return
        }
        case "Closed": {
          const resume = pendingCloses.get(message.id)
          pendingCloses.delete(message.id)
          resume?.()
          holdPort()
          return
        }
      }
    }
    const onClose = (): void => {
      if (!portOpen) return
      portOpen = false
      port.off("message", onMessage)
      port.off("close", onClose)
      for (const resume of pendingOpens.values()) resume({ _tag: "OpenFailed", id: 0, error: encodeError(connectionClosed()) })
      pendingOpens.clear()
      for (const resume of pendingCloses.values()) resume()
      pendingCloses.clear()
      for (const endpoint of endpoints.values()) endpoint.peerClosed("PeerClose")
    }
    port.on("message", onMessage)
    port.on("close", onClose)
    holdPort()
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        for (const endpoint of endpoints.values()) endpoint.stop()
        onClose()
        port.close()
      })
    )

    /** Sends `Close` and waits for the host's answer (or for the connection to end). */
    const closeRemote = (id: number): Effect.Effect<void> =>
      Effect.async<void>((resume) => {
        const endpoint = endpoints.get(id)
        endpoints.delete(id)
        endpoint?.stop()
        if (!portOpen) {
          holdPort()
          return resume(Effect.void)
        }
        pendingCloses.set(id, () => resume(Effect.void))
        holdPort()
        port.postMessage({ _tag: "Close", id } satisfies GuestMessage)
      })

    const open = (request: Transport.OpenRequest): Effect.Effect<Transport.Endpoint, OpenError, Scope.Scope> =>
      Effect.gen(function*() {
        if (!portOpen) return yield* connectionClosed()
        const id = nextId++
        let failed = false
        // Before the request, so an interrupted open (OpenTimeout) still closes what the host opened.
        yield* Effect.addFinalizer(() => failed ? Effect.void : closeRemote(id))
        const reply = yield* Effect.async<HostMessage>((resume) => {
          pendingOpens.set(id, (message) => resume(Effect.succeed(message)))
          holdPort()
          port.postMessage({ _tag: "Open", id, request } satisfies GuestMessage)
          return Effect.sync(() => {
            pendingOpens.delete(id)
            holdPort()
          })
        })
        if (reply._tag !== "Opened") {
          failed = true
          return yield* Effect.fail(reply._tag === "OpenFailed" ? decodeError(reply.error) : connectionClosed())
        }
        awaitingEndpoint.delete(id)
        const early = earlyCloses.get(id)
        earlyCloses.delete(id)
        // What the host sends is checked before any view is built on it.
        const size = shared.memory.byteLength
        const bad = [reply.outgoing, reply.incoming].some((l) =>
          !Number.isSafeInteger(l.byteOffset) || !Number.isSafeInteger(l.byteLength) || l.byteOffset < 0 ||
          l.byteLength <= 0 || l.byteOffset + l.byteLength > size || l.byteOffset % 8 !== 0
        ) || !Number.isSafeInteger(reply.slot) || reply.slot < 0 || reply.slot >= Doorbell.slotCount(words)
        if (bad) {
          return yield* new TransportError({ reason: "InvalidData", detail: "the host described rings or a doorbell outside the shared buffers" })
        }
        const view = (location: RingLocation) => new Uint8Array(shared.memory, location.byteOffset, location.byteLength)
        const endpoint = new GuestEndpoint(
          reply.identity,
          reply.childRelid,
          view(reply.outgoing),
          view(reply.incoming),
          waiter,
          reply.slot
        )
        endpoints.set(id, endpoint)
        holdPort()
        if (early !== undefined) endpoint.peerClosed(early)
        return endpoint
      })

    const transport: Transport.TransportShape = {
      name: "shared-memory-guest",
      capabilities: { ringGeometry: true, serverRole: false, gpadl: false },
      offer: () =>
        Effect.fail(
          new Unsupported({ capability: "serverRole", reason: "the shared-memory guest transport cannot offer channels" })
        ),
      open
    }
    return transport
  })

// Review tests for src/internal/sharedMemoryTransport.ts: the first three pin down bugs the review found
// (now fixed); the others pin behaviour found sound.
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber, Option, Scope } from "effect"
import * as InMemoryTransport from "../src/InMemoryTransport.js"
import * as SharedMemoryTransport from "../src/SharedMemoryTransport.js"
import * as Transport from "../src/Transport.js"
import type { CloseReason } from "../src/VmbusError.js"
import { busStats, INSTANCE, TYPE } from "./utils/channels.js"

const INSTANCE2 = "9e5e1a6f-2c34-4b8e-9d2a-0b1c2d3e4f51"
const RINGS = { interfaceType: TYPE, outgoingRingPages: 2, incomingRingPages: 2 } as const

const withBus = <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.provide(self, InMemoryTransport.layer)

/** Live-clock polling: true once `check` holds, false after `millis`. */
const holdsWithin = <E, R>(check: Effect.Effect<boolean, E, R>, millis: number): Effect.Effect<boolean, E, R> => {
  const loop = (left: number): Effect.Effect<boolean, E, R> =>
    Effect.flatMap(check, (ok) =>
      ok ? Effect.succeed(true) : left <= 0 ? Effect.succeed(false) : Effect.zipRight(Effect.sleep("5 millis"), loop(left - 5)))
  return loop(millis)
}

describe("SharedMemoryTransport review", () => {
  it.live("a host signal rung before the guest's onSignal is delivered at installation (sound)", () =>
    Effect.gen(function*() {
      const inner = yield* Transport.Transport
      const connection = yield* SharedMemoryTransport.makeConnection({ maxChannels: 2 })
      yield* SharedMemoryTransport.serveGuest(connection.hostPort, connection.shared)
      const guest = yield* SharedMemoryTransport.make(connection.guestPort, connection.shared)
      const offer = yield* inner.offer({ interfaceType: TYPE, interfaceInstance: INSTANCE })
      const accepting = yield* Effect.fork(offer.accept)
      const endpoint = yield* guest.open(RINGS)
      const server = yield* Fiber.join(accepting)
      server.signal()
      yield* Effect.sleep("20 millis")
      const got = yield* Deferred.make<void>()
      endpoint.onSignal(() => Deferred.unsafeDone(got, Exit.void))
      const delivered = yield* Deferred.await(got).pipe(Effect.timeout("1 second"), Effect.option)
      assert.isTrue(Option.isSome(delivered))
    }).pipe(Effect.scoped, withBus))

  // Regression: bridge() installs onPeerClose before posting "Opened"; an endpoint whose peer already closed
  // calls back at installation (Transport contract), so "PeerClosed" is posted BEFORE "Opened" and the
  // guest drops it (no endpoint registered for that id yet). The guest channel never learns of the close.
  it.live("a peer close that happened before the host's bridge is lost by the guest", () =>
    Effect.gen(function*() {
      const inner = yield* Transport.Transport
      const gate = yield* Deferred.make<void>()
      // A host transport whose open takes a moment longer to hand over its endpoint.
      const hostTransport: Transport.TransportShape = {
        ...inner,
        open: (request) => Effect.tap(inner.open(request), () => Deferred.await(gate))
      }
      const connection = yield* SharedMemoryTransport.makeConnection({ maxChannels: 2 })
      yield* SharedMemoryTransport.serveGuest(connection.hostPort, connection.shared).pipe(
        Effect.provideService(Transport.Transport, hostTransport)
      )
      const guest = yield* SharedMemoryTransport.make(connection.guestPort, connection.shared)
      const offerScope = yield* Scope.make()
      const offer = yield* inner.offer({ interfaceType: TYPE, interfaceInstance: INSTANCE }).pipe(Scope.extend(offerScope))
      const accepting = yield* Effect.fork(offer.accept)
      const opening = yield* Effect.fork(guest.open(RINGS))
      yield* Fiber.join(accepting)
      // The server goes away while the host is still handing the endpoint over.
      yield* Scope.close(offerScope, Exit.void)
      yield* Effect.sleep("20 millis") // the rescind reaches the host's (in-memory client) endpoint
      yield* Deferred.succeed(gate, undefined)
      const endpoint = yield* Fiber.join(opening)
      const closed = yield* Deferred.make<CloseReason>()
      endpoint.onPeerClose((reason) => Deferred.unsafeDone(closed, Exit.succeed(reason)))
      const reason = yield* Deferred.await(closed).pipe(Effect.timeout("1 second"), Effect.option)
      assert.strictEqual(Option.getOrUndefined(reason), "Rescinded")
    }).pipe(Effect.scoped, withBus))

  // Regression: serveGuest's finalizer snapshots `channels` in closeAll(true) while the dispatcher (in
  // serverScope) keeps handling messages; an Open handled during a slow close gets a remote scope
  // that nothing ever closes (serverScope only interrupts the open fiber). The bus channel leaks.
  it.live("an open arriving while the host's scope closes leaks a channel on the bus", () =>
    Effect.gen(function*() {
      const inner = yield* Transport.Transport
      // A host transport whose channel close takes 100 ms (e.g. waiting for a teardown answer).
      const slowClose: Transport.TransportShape = {
        ...inner,
        open: (request) => Effect.tap(inner.open(request), () => Effect.addFinalizer(() => Effect.sleep("100 millis")))
      }
      const connection = yield* SharedMemoryTransport.makeConnection({ maxChannels: 4 })
      const hostScope = yield* Scope.make()
      yield* SharedMemoryTransport.serveGuest(connection.hostPort, connection.shared).pipe(
        Effect.provideService(Transport.Transport, slowClose),
        Scope.extend(hostScope)
      )
      const guest = yield* SharedMemoryTransport.make(connection.guestPort, connection.shared)
      for (const instance of [INSTANCE, INSTANCE2]) {
        const offer = yield* inner.offer({ interfaceType: TYPE, interfaceInstance: instance })
        yield* Effect.forkScoped(offer.accept)
      }
      yield* guest.open({ ...RINGS, interfaceInstance: INSTANCE })
      const closing = yield* Effect.fork(Scope.close(hostScope, Exit.void))
      yield* Effect.sleep("20 millis")
      yield* Effect.exit(guest.open({ ...RINGS, interfaceInstance: INSTANCE2 }))
      yield* Fiber.join(closing)
      const clean = yield* holdsWithin(Effect.map(busStats, (s) => s.openChannels === 0), 1000)
      assert.isTrue(clean, "every host channel closed once serveGuest's scope closed")
    }).pipe(Effect.scoped, withBus))

  // Regression: `handle` has no default case: an unknown message makes it return undefined, the dispatcher
  // fiber dies silently, and every later Open/Close from the guest is never answered.
  it.live("one malformed guest message stops the host from answering opens", () =>
    Effect.gen(function*() {
      const inner = yield* Transport.Transport
      const connection = yield* SharedMemoryTransport.makeConnection({ maxChannels: 2 })
      yield* SharedMemoryTransport.serveGuest(connection.hostPort, connection.shared)
      const guest = yield* SharedMemoryTransport.make(connection.guestPort, connection.shared)
      const offer = yield* inner.offer({ interfaceType: TYPE, interfaceInstance: INSTANCE })
      yield* Effect.forkScoped(offer.accept)
      connection.guestPort.postMessage({ _tag: "Bogus" })
      // Its own scope, left open: closing it would wait for a Closed the dead dispatcher never sends.
      const openScope = yield* Scope.make()
      const exit = yield* guest.open(RINGS).pipe(Scope.extend(openScope), Effect.timeout("1 second"), Effect.exit)
      assert.isTrue(Exit.isSuccess(exit), "the open is answered")
    }).pipe(Effect.scoped, withBus))

  it.live("an open that fails on the host keeps its tag and fields (sound)", () =>
    Effect.gen(function*() {
      const connection = yield* SharedMemoryTransport.makeConnection({ maxChannels: 2 })
      yield* SharedMemoryTransport.serveGuest(connection.hostPort, connection.shared)
      const guest = yield* SharedMemoryTransport.make(connection.guestPort, connection.shared)
      const error = yield* Effect.flip(Effect.scoped(guest.open({ ...RINGS, interfaceType: "not-a-guid" })))
      assert.strictEqual(error._tag, "InvalidParameter")
      assert.strictEqual((error as { field?: string }).field, "interfaceType")
    }).pipe(Effect.scoped, withBus))
})

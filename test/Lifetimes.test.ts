// Lifetimes of guest memory (issue 8, section A and defects 15–16): every view of guest memory — GPADL
// mapping, external data, transfer page, ring — is valid exactly as long as its owner says; pins are
// released only once the host side can no longer reach the pages; late completions after a pause are
// not false alarms; completions already in the ring settle their requests before a peer close fails
// them; transfer-page packets have a send-and-await form with ids from the request table.
// Each reproduction of the issue is a test here. Time is TestClock time; nothing sleeps.
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Either, ExecutionStrategy, Exit, Fiber, Option, Ref, Scope, Stream } from "effect"
import * as Channel from "../src/Channel.js"
import * as ChannelMessage from "../src/ChannelMessage.js"
import * as Gpadl from "../src/Gpadl.js"
import * as GuestMemory from "../src/GuestMemory.js"
import type * as IncomingPacket from "../src/IncomingPacket.js"
import * as InMemoryTransport from "../src/InMemoryTransport.js"
import * as Transport from "../src/Transport.js"
import { INSTANCE, openPair, TYPE } from "./utils/channels.js"
import { failureOf, leftOf, rightOf, settle, stats, withLeakCheck } from "./utils/gpadl.js"

const FAILURE = new Uint8Array(8).fill(0xee)
const OK = new Uint8Array([0x4f, 0x4b, 0, 0, 0, 0, 0, 0])

/**
 * Acquires `self` in a child scope the test closes itself (or the ambient scope closes, first, if the
 * test fails half-way — so a failure never leaves a mapping or a packet held).
 */
const inScope = <A, E, R>(self: Effect.Effect<A, E, R | Scope.Scope>) =>
  Effect.gen(function*() {
    const scope = yield* Scope.fork(yield* Effect.scope, ExecutionStrategy.sequential)
    const value = yield* Scope.extend(self, scope)
    return { value, scope, close: Scope.close(scope, Exit.void) }
  })

const openServer = (config: Partial<Channel.ChannelConfigInput> = {}) =>
  Channel.open({
    role: "server",
    interfaceType: TYPE,
    interfaceInstance: INSTANCE,
    failureCompletion: FAILURE,
    ...config
  } as Channel.ChannelConfigInput)

const openClient = (config: Partial<Channel.ChannelConfigInput> = {}) =>
  Channel.open({ role: "client", interfaceType: TYPE, failureCompletion: FAILURE, ...config } as Channel.ChannelConfigInput)

/** A server in the ambient scope and a client in a scope of its own (the server waits for the client). */
const openServerAndClient = (
  options: { readonly server?: Partial<Channel.ChannelConfigInput>; readonly client?: Partial<Channel.ChannelConfigInput> } = {}
) =>
  Effect.gen(function*() {
    const opening = yield* Effect.fork(openServer(options.server))
    const client = yield* inScope(openClient(options.client))
    return { server: yield* Fiber.join(opening), client }
  })

/** Every event a channel reports from now on, collected into a Ref. */
const recordEvents = (channel: Channel.OpenedChannel) =>
  Effect.gen(function*() {
    const seen = yield* Ref.make<ReadonlyArray<Channel.ChannelEvent>>([])
    yield* Effect.forkScoped(Stream.runForEach(channel.events, (event) => Ref.update(seen, (all) => [...all, event])))
    yield* settle()
    return seen
  })

/** What a gated handler saw: the bytes it read and the outcome of its write, after the gate opened. */
interface GateResult {
  readonly read: Either.Either<Uint8Array, { readonly _tag: string }>
  readonly write: Either.Either<void, { readonly _tag: string }>
}

/**
 * A server handler that takes the packet's external data, says it entered, waits on `gate`, then reads
 * 4 bytes and writes 4 bytes of 0xAA through the views it took before the wait.
 */
const gatedHandler = (entered: Deferred.Deferred<void>, gate: Deferred.Deferred<void>, result: Deferred.Deferred<GateResult>) =>
(packet: IncomingPacket.IncomingPacket) =>
  Effect.gen(function*() {
    const [view] = yield* packet.externalData
    yield* Deferred.succeed(entered, undefined)
    yield* Deferred.await(gate)
    const read = view!.read(0, 4)
    const write = view!.write(0, new Uint8Array(4).fill(0xaa))
    yield* Deferred.succeed(result, { read, write } as GateResult)
    return OK
  })

const gates = Effect.all({
  entered: Deferred.make<void>(),
  gate: Deferred.make<void>(),
  result: Deferred.make<GateResult>()
})

/** Pinned guest buffers besides the rings (each open channel's ring GPADL pins its ring buffer). */
const extraPins = Effect.map(stats, (s) => s.pinnedBuffers - s.openChannels)

const allBytes = (bytes: Uint8Array, value: number) => bytes.every((b) => b === value)

// ---------------------------------------------------------------------------------------------
// A1: GPA-direct buffers stay pinned while the host can still reach them
// ---------------------------------------------------------------------------------------------

describe("A1: GPA-direct buffers are not released while the host holds the packet", () => {
  it.effect("client pause: the host still reads the request's buffer, not a new allocation; its write stays there", () =>
    withLeakCheck(
      Effect.gen(function*() {
        const { client, server } = yield* openPair({ server: { failureCompletion: FAILURE }, client: { failureCompletion: FAILURE } })
        const events = yield* recordEvents(client)
        const { entered, gate, result } = yield* gates
        yield* Effect.forkScoped(server.serve(gatedHandler(entered, gate, result)))
        const owned = yield* inScope(GuestMemory.allocate(1))
        owned.value.bytes.fill(0x11)
        const request = yield* Effect.fork(client.request(new Uint8Array(8), { external: [owned.value] }))
        yield* Deferred.await(entered)
        // The buffer's own scope closes: the transaction pins it.
        yield* owned.close
        yield* client.pause
        const paused = failureOf(yield* Fiber.await(request))
        assert.strictEqual(paused._tag, "ChannelClosed")
        const other = yield* GuestMemory.allocate(1)
        other.bytes.fill(0x55)
        yield* Deferred.succeed(gate, undefined)
        const seen = yield* Deferred.await(result)
        assert.deepStrictEqual(Array.from(rightOf(seen.read)), [0x11, 0x11, 0x11, 0x11], "the host read the request's buffer")
        rightOf(seen.write)
        assert.isTrue(allBytes(other.bytes, 0x55), "the host's write did not land in another allocation")
        // The late completion frees the id and the pin silently: no DuplicateCompletion false alarm.
        yield* settle()
        const s = yield* client.stats
        assert.strictEqual(s.requestsOutstanding, 0)
        assert.strictEqual(s.unknownCompletions, 0)
        assert.deepStrictEqual((yield* Ref.get(events)).map((e) => e._tag), [])
        assert.strictEqual((yield* extraPins), 0)
      })
    ))

  it.effect("client close: the pages are released after CLOSECHANNEL; the host's views fail with a typed error", () =>
    withLeakCheck(
      Effect.gen(function*() {
        const { client, server } = yield* openServerAndClient()
        const { entered, gate, result } = yield* gates
        yield* Effect.forkScoped(server.serve(gatedHandler(entered, gate, result)))
        const owned = yield* inScope(GuestMemory.allocate(1))
        owned.value.bytes.fill(0x11)
        const request = yield* Effect.fork(client.value.request(new Uint8Array(8), { external: [owned.value] }))
        yield* Deferred.await(entered)
        yield* owned.close
        const pagesWhilePinned = (yield* stats).guestPagesAllocated
        const pinsWhileHeld = yield* extraPins
        yield* client.close
        assert.strictEqual(failureOf(yield* Fiber.await(request))._tag, "ChannelClosed")
        assert.strictEqual(yield* server.closed, "PeerClose")
        const pinsAfterClose = yield* extraPins
        assert.isBelow((yield* stats).guestPagesAllocated, pagesWhilePinned)
        const other = yield* GuestMemory.allocate(1)
        other.bytes.fill(0x55)
        yield* Deferred.succeed(gate, undefined)
        const seen = yield* Deferred.await(result)
        assert.strictEqual(leftOf(seen.read)._tag, "ExternalDataUnavailable")
        assert.strictEqual(leftOf(seen.write)._tag, "ExternalDataUnavailable")
        assert.isTrue(allBytes(other.bytes, 0x55))
        assert.strictEqual(pinsWhileHeld, 1, "pinned while the host held the packet")
        assert.strictEqual(pinsAfterClose, 0, "released once the host could no longer reach them")
      })
    ))

  it.effect("rescind: the host's views die with its open period; the client keeps the pins until its scope closes", () =>
    withLeakCheck(
      Effect.gen(function*() {
        const opening = yield* Effect.fork(inScope(openServer()))
        const client = yield* inScope(openClient())
        const server = yield* Fiber.join(opening)
        const { entered, gate, result } = yield* gates
        const serving = yield* Effect.fork(server.value.serve(gatedHandler(entered, gate, result)))
        const owned = yield* inScope(GuestMemory.allocate(1))
        owned.value.bytes.fill(0x11)
        const request = yield* Effect.fork(client.value.request(new Uint8Array(8), { external: [owned.value] }))
        yield* Deferred.await(entered)
        yield* owned.close
        const control = yield* InMemoryTransport.Control
        assert.isTrue(yield* control.rescind(INSTANCE))
        assert.strictEqual(failureOf(yield* Fiber.await(request))._tag, "ChannelClosed")
        const other = yield* GuestMemory.allocate(1)
        other.bytes.fill(0x55)
        assert.notStrictEqual(other.firstPfn, owned.value.firstPfn, "still pinned: not handed out again")
        yield* Deferred.succeed(gate, undefined)
        const seen = yield* Deferred.await(result)
        assert.strictEqual(leftOf(seen.read)._tag, "ExternalDataUnavailable")
        assert.strictEqual(leftOf(seen.write)._tag, "ExternalDataUnavailable")
        assert.isTrue(allBytes(other.bytes, 0x55))
        yield* Fiber.interrupt(serving)
        yield* client.close
        assert.strictEqual((yield* extraPins), 0)
        yield* server.close
      })
    ))
})

// ---------------------------------------------------------------------------------------------
// A2: no ring access after the endpoint's rings are released
// ---------------------------------------------------------------------------------------------

describe("A2: a closed endpoint never touches its rings again", () => {
  it.effect("after a client close the server's receive loop does not write into the freed ring pages", () =>
    withLeakCheck(
      Effect.gen(function*() {
        const { client, server } = yield* openServerAndClient()
        yield* Effect.forkScoped(server.serve(() => Effect.succeed(OK)))
        assert.deepStrictEqual(Array.from(yield* client.value.request(new Uint8Array(8))), Array.from(OK))
        yield* client.close
        const reused = yield* GuestMemory.allocate(8)
        reused.bytes.fill(0x55)
        yield* settle(256)
        assert.strictEqual(yield* server.closed, "PeerClose")
        assert.deepStrictEqual(Array.from(reused.bytes.subarray(8, 12)), [0x55, 0x55, 0x55, 0x55], "no interrupt mask written")
        assert.isTrue(allBytes(reused.bytes, 0x55), "no byte of the freed rings written")
      })
    ))

  it.effect("a writer waiting for ring space when the peer closes does not clear pending_send_sz in the freed ring", () =>
    withLeakCheck(
      Effect.gen(function*() {
        const { client, server } = yield* openServerAndClient({
          server: { maxPacketSize: 1000, transactionQuota: 1 },
          client: { incomingRingPages: 2, maxPacketSize: 1000, transactionQuota: 1 }
        })
        // The host→guest ring fills: one packet delivered to nobody (quota 1 but no consumer), the rest waits.
        const sender = yield* Effect.fork(Effect.forEach([1, 2, 3, 4, 5], () => server.send(new Uint8Array(1000)), { discard: true }))
        yield* settle()
        assert.isTrue(sender.unsafePoll() === null, "a send waits for ring space")
        yield* client.close
        const reused = yield* GuestMemory.allocate(40)
        reused.bytes.fill(0x55)
        const exit = yield* Fiber.await(sender)
        assert.strictEqual(failureOf(exit)._tag, "ChannelClosed")
        yield* settle(256)
        assert.isTrue(allBytes(reused.bytes, 0x55), "no byte of the freed rings written")
      })
    ))
})

// ---------------------------------------------------------------------------------------------
// A3: transfer-page views end with the set's registration
// ---------------------------------------------------------------------------------------------

describe("A3: transfer-page views are valid only while the set is registered", () => {
  it.effect("a pending packet's views fail once the registration and the buffer's scope closed", () =>
    withLeakCheck(
      Effect.gen(function*() {
        const { client, server } = yield* openPair()
        const buffer = yield* inScope(GuestMemory.allocate(2))
        buffer.value.bytes.fill(0x11)
        const registration = yield* inScope(client.registerTransferPageSet(7, buffer.value))
        yield* server.sendPacket({
          _tag: "TransferPages",
          transactionId: 0n,
          completionRequested: false,
          transferPageSetId: 7,
          senderOwnsSet: false,
          ranges: [{ byteOffset: 0, byteCount: 16 }],
          payload: new Uint8Array(8)
        })
        const held = yield* inScope(client.take)
        const [view] = yield* held.value.externalData
        assert.deepStrictEqual(Array.from(rightOf(view!.read(0, 4))), [0x11, 0x11, 0x11, 0x11])
        yield* registration.close
        yield* buffer.close
        const reused = yield* GuestMemory.allocate(2)
        reused.bytes.fill(0x55)
        assert.strictEqual(leftOf(view!.read(0, 4))._tag, "ExternalDataUnavailable")
        assert.strictEqual(leftOf(view!.write(0, new Uint8Array(4).fill(0xaa)))._tag, "ExternalDataUnavailable")
        assert.isTrue(allBytes(reused.bytes, 0x55))
        assert.strictEqual(failureOf(yield* Effect.exit(held.value.externalData))._tag, "ExternalDataUnavailable")
        yield* held.close
      })
    ))
})

// ---------------------------------------------------------------------------------------------
// A4: mappings belong to one open period; a second client is refused at once
// ---------------------------------------------------------------------------------------------

describe("A4: a server channel's open period bounds its GPADL mappings", () => {
  it.effect("a second client's open is rejected when no server channel can accept it", () =>
    withLeakCheck(
      Effect.gen(function*() {
        const { client: first, server } = yield* openServerAndClient()
        yield* first.close
        assert.strictEqual(yield* server.closed, "PeerClose")
        const second = yield* Effect.exit(Effect.scoped(openClient({ openTimeoutMillis: 1000 })))
        assert.strictEqual(failureOf(second)._tag, "OpenRejected")
        // Mapping on the ended server channel is refused with a typed error.
        const mapped = yield* Effect.exit(Effect.scoped(Gpadl.map(server, Gpadl.FIRST_HANDLE)))
        assert.strictEqual(failureOf(mapped)._tag, "ChannelClosed")
      })
    ))

  it.effect("transport level: an endpoint whose open period ended cannot map a GPADL of the next period", () =>
    withLeakCheck(
      Effect.gen(function*() {
        const transport = yield* Transport.Transport
        const offer = yield* transport.offer({ interfaceType: TYPE, interfaceInstance: INSTANCE })
        const request = { interfaceType: TYPE, outgoingRingPages: 4, incomingRingPages: 4 }
        const firstClient = yield* inScope(transport.open(request))
        const firstServer = yield* offer.accept
        yield* firstClient.close
        // A second accept on the same offer: the next open period.
        const accepting = yield* Effect.fork(offer.accept)
        yield* settle()
        const secondClient = yield* inScope(transport.open(request))
        const secondServer = yield* Fiber.join(accepting)
        assert.strictEqual(secondServer.childRelid, firstServer.childRelid, "the relid is reused")
        const buffer = yield* GuestMemory.allocate(1)
        const gpadl = yield* inScope(secondClient.value.createGpadl!({ pfns: buffer.pfns }, { buffer }))
        const stale = yield* Effect.exit(Effect.scoped(firstServer.mapGpadl!(gpadl.value)))
        assert.strictEqual(failureOf(stale)._tag, "ChannelClosed")
        const view = yield* inScope(secondServer.mapGpadl!(gpadl.value))
        assert.isTrue(Either.isRight(view.value.read(0, 8)))
        yield* view.close
        yield* gpadl.close
        yield* secondClient.close
      })
    ))
})

// ---------------------------------------------------------------------------------------------
// A5: released buffers are refused; explicit ranges are pinned
// ---------------------------------------------------------------------------------------------

describe("A5: what a transaction or a set pins is a live allocation", () => {
  it.effect("a released GuestBuffer as external, as a transfer page set or for a GPADL is InvalidParameter", () =>
    withLeakCheck(
      Effect.gen(function*() {
        const { client, server } = yield* openPair()
        yield* Effect.forkScoped(server.serve(() => Effect.succeed(OK)))
        const memory = yield* GuestMemory.GuestMemory
        const released = yield* inScope(GuestMemory.allocate(8))
        yield* released.close
        // Its pages now belong to two other allocations.
        const b = yield* GuestMemory.allocate(2)
        const c = yield* GuestMemory.allocate(6)
        assert.strictEqual(b.firstPfn, released.value.firstPfn)
        const external = failureOf(yield* Effect.exit(client.request(new Uint8Array(8), { external: [released.value] })))
        assert.strictEqual(external._tag, "InvalidParameter")
        const set = failureOf(yield* Effect.exit(Effect.scoped(client.registerTransferPageSet(1, released.value))))
        assert.strictEqual(set._tag, "InvalidParameter")
        const gpadl = failureOf(yield* Effect.exit(Effect.scoped(Gpadl.create(client, released.value))))
        assert.strictEqual(gpadl._tag, "InvalidParameter")
        assert.strictEqual((yield* extraPins), 0, "nothing pinned")
        // b and c are untouched by any of it.
        const bScope = yield* inScope(GuestMemory.allocate(1))
        yield* bScope.close
        assert.isTrue(memory.isAllocated(b.firstPfn) && memory.isAllocated(c.firstPfn + 5))
        assert.strictEqual((yield* client.stats).requestsOutstanding, 0)
      })
    ))

  it.effect("an explicit sub-range in external is pinned: the host still reads it after the buffer's scope closed", () =>
    withLeakCheck(
      Effect.gen(function*() {
        const { client, server } = yield* openPair()
        const { entered, gate, result } = yield* gates
        yield* Effect.forkScoped(server.serve(gatedHandler(entered, gate, result)))
        const owned = yield* inScope(GuestMemory.allocate(4))
        owned.value.bytes.fill(0x11)
        const range = { pfns: owned.value.pfns.slice(1, 3), byteOffset: 16, byteCount: 4096 }
        const request = yield* Effect.fork(client.request(new Uint8Array(8), { external: [range] }))
        yield* Deferred.await(entered)
        yield* owned.close
        const pinsWhileHeld = yield* extraPins
        const other = yield* GuestMemory.allocate(4)
        other.bytes.fill(0x55)
        assert.notStrictEqual(other.firstPfn, owned.value.firstPfn)
        yield* Deferred.succeed(gate, undefined)
        const seen = yield* Deferred.await(result)
        assert.deepStrictEqual(Array.from(rightOf(seen.read)), [0x11, 0x11, 0x11, 0x11])
        assert.deepStrictEqual(Array.from(yield* Fiber.join(request)), Array.from(OK))
        assert.isTrue(allBytes(other.bytes, 0x55))
        yield* settle()
        assert.strictEqual(pinsWhileHeld, 1)
        assert.strictEqual((yield* extraPins), 0)
      })
    ))

  it.effect("an explicit range naming pages that are not allocated is InvalidParameter", () =>
    withLeakCheck(
      Effect.gen(function*() {
        const { client } = yield* openPair()
        const released = yield* inScope(GuestMemory.allocate(2))
        yield* released.close
        const range = { pfns: released.value.pfns, byteOffset: 0, byteCount: 8192 }
        const error = failureOf(yield* Effect.exit(client.request(new Uint8Array(8), { external: [range] })))
        assert.strictEqual(error._tag, "InvalidParameter")
        assert.strictEqual((yield* client.stats).requestsOutstanding, 0)
      })
    ))

  it.effect("a GPADL over an explicit range pins its pages until the teardown", () =>
    withLeakCheck(
      Effect.gen(function*() {
        const { client, server } = yield* openPair()
        const memory = yield* GuestMemory.GuestMemory
        const owned = yield* inScope(GuestMemory.allocate(4))
        owned.value.bytes.fill(0x11)
        const gpadl = yield* inScope(Gpadl.create(client, { pfns: owned.value.pfns.slice(2), byteOffset: 0, byteCount: 8192 }))
        yield* owned.close
        assert.isTrue(memory.isAllocated(owned.value.firstPfn + 2), "pinned by the GPADL")
        const view = yield* inScope(Gpadl.map(server, gpadl.value.handle))
        assert.deepStrictEqual(Array.from(rightOf(view.value.read(0, 4))), [0x11, 0x11, 0x11, 0x11])
        yield* view.close
        yield* gpadl.close
        assert.isFalse(memory.isAllocated(owned.value.firstPfn + 2), "freed with the teardown")
      })
    ))
})

// ---------------------------------------------------------------------------------------------
// Defect 15: completions already in the ring; late completions after a pause
// ---------------------------------------------------------------------------------------------

describe("15: completions are drained before pending requests fail", () => {
  it.effect("a server that answered and then closed: the answer reaches the client", () =>
    withLeakCheck(
      Effect.gen(function*() {
        const opening = yield* Effect.fork(inScope(openServer()))
        const client = yield* openClient({ transactionQuota: 1 })
        const server = yield* Fiber.join(opening)
        // The client's quota is full (one packet held), so the next packet blocks its ring...
        yield* server.value.send(new Uint8Array(8).fill(1))
        const first = yield* inScope(client.take)
        yield* server.value.send(new Uint8Array(8).fill(2))
        // ...and the completion of its request sits behind it, unread.
        const request = yield* Effect.fork(client.request(new Uint8Array(8)))
        const held = yield* inScope(server.value.take)
        yield* held.value.complete(OK)
        yield* held.close
        yield* settle()
        assert.isNull(request.unsafePoll(), "the completion waits behind a blocked packet")
        yield* server.close
        assert.strictEqual(yield* client.closed, "Rescinded")
        assert.deepStrictEqual(Array.from(yield* Fiber.join(request)), Array.from(OK))
        yield* first.close
      })
    ))

  it.effect("after a client pause, late completions are neither DuplicateCompletion events nor unknown", () =>
    withLeakCheck(
      Effect.gen(function*() {
        const { client, server } = yield* openPair()
        const events = yield* recordEvents(client)
        const requests = yield* Effect.forEach([1, 2, 3], () => Effect.fork(client.request(new Uint8Array(8))))
        const held = yield* Effect.forEach([1, 2, 3], () => inScope(server.take))
        yield* client.pause
        for (const request of requests) assert.strictEqual(failureOf(yield* Fiber.await(request))._tag, "ChannelClosed")
        const reserved = (yield* client.stats).requestsOutstanding
        for (const packet of held) {
          yield* packet.value.complete(OK)
          yield* packet.close
        }
        yield* settle()
        assert.deepStrictEqual((yield* Ref.get(events)).map((e) => e._tag), [])
        const s = yield* client.stats
        assert.strictEqual(s.completionsReceived, 3)
        assert.strictEqual(s.unknownCompletions, 0)
        assert.strictEqual(reserved, 3, "the ids stayed reserved for the late completions")
        assert.strictEqual(s.requestsOutstanding, 0)
        yield* client.start
      })
    ))
})

// ---------------------------------------------------------------------------------------------
// Defect 16: transfer pages, send and await
// ---------------------------------------------------------------------------------------------

describe("16: request with transfer pages", () => {
  it.effect("host → guest: the completion resolves the request; ids come from the same table", () =>
    withLeakCheck(
      Effect.gen(function*() {
        const { client, server } = yield* openPair()
        const events = yield* recordEvents(server)
        const buffer = yield* GuestMemory.allocate(2)
        buffer.bytes.fill(0x33)
        yield* client.registerTransferPageSet(9, buffer)
        const plain = yield* Effect.fork(server.request(new Uint8Array(8)))
        const paged = yield* Effect.fork(
          server.request(new Uint8Array(8), { transferPages: { setId: 9, ranges: [{ byteOffset: 100, byteCount: 8 }] } })
        )
        const p1 = yield* inScope(client.take)
        const p2 = yield* inScope(client.take)
        assert.strictEqual(p1.value.kind, "InBand")
        assert.strictEqual(p2.value.kind, "TransferPages")
        assert.strictEqual(
          Option.getOrThrow(p2.value.transactionId),
          Option.getOrThrow(p1.value.transactionId) + 1n,
          "one id sequence for every request"
        )
        const [view] = yield* p2.value.externalData
        assert.deepStrictEqual(Array.from(rightOf(view!.read())), Array.from(new Uint8Array(8).fill(0x33)))
        yield* p2.value.complete(OK)
        yield* p1.value.complete(FAILURE)
        assert.deepStrictEqual(Array.from(yield* Fiber.join(paged)), Array.from(OK))
        assert.deepStrictEqual(Array.from(yield* Fiber.join(plain)), Array.from(FAILURE))
        yield* p1.close
        yield* p2.close
        yield* settle()
        assert.deepStrictEqual((yield* Ref.get(events)).map((e) => e._tag), [], "no unknown completion")
        assert.strictEqual((yield* server.stats).unknownCompletions, 0)
      })
    ))

  it.effect("guest → host: the server's set is its GPADL mapping; the request resolves with the server's answer", () =>
    withLeakCheck(
      Effect.gen(function*() {
        const { client, server } = yield* openPair()
        const buffer = yield* GuestMemory.allocate(2)
        const gpadl = yield* Gpadl.create(client, buffer)
        const view = yield* Gpadl.map(server, gpadl.handle)
        yield* server.registerTransferPageSet(4, view)
        buffer.bytes.fill(0x44, 4096, 4096 + 16)
        yield* Effect.forkScoped(server.serve((packet) =>
          Effect.map(packet.externalData, (external) => rightOf(external[0]!.read(0, 8)))
        ))
        const reply = yield* client.request(new Uint8Array(8), {
          transferPages: { setId: 4, ranges: [{ byteOffset: 4096, byteCount: 16 }], senderOwnsSet: true }
        })
        assert.deepStrictEqual(Array.from(reply), Array.from(new Uint8Array(8).fill(0x44)))
        assert.strictEqual((yield* client.stats).unknownCompletions, 0)
        assert.strictEqual((yield* client.stats).requestsOutstanding, 0)
      })
    ))

  it.effect("transfer pages together with external data, or a bad set id, are InvalidParameter", () =>
    withLeakCheck(
      Effect.gen(function*() {
        const { client, server } = yield* openPair()
        yield* Effect.forkScoped(server.serve(() => Effect.succeed(OK)))
        const buffer = yield* GuestMemory.allocate(1)
        const both = failureOf(yield* Effect.exit(client.request(new Uint8Array(8), {
          external: [buffer],
          transferPages: { setId: 1, ranges: [{ byteOffset: 0, byteCount: 8 }] }
        })))
        assert.strictEqual(both._tag, "InvalidParameter")
        const badId = failureOf(yield* Effect.exit(client.request(new Uint8Array(8), {
          transferPages: { setId: 0x10000, ranges: [{ byteOffset: 0, byteCount: 8 }] }
        })))
        assert.strictEqual(badId._tag, "InvalidParameter")
        assert.strictEqual((yield* client.stats).requestsOutstanding, 0)
      })
    ))
})

// ---------------------------------------------------------------------------------------------
// Control.stats counts pins and live views
// ---------------------------------------------------------------------------------------------

describe("Control.stats: pinned buffers and live views", () => {
  it.effect("count while held, zero after completion and close", () =>
    withLeakCheck(
      Effect.gen(function*() {
        const { client, server } = yield* openPair()
        const base = yield* stats
        const buffer = yield* GuestMemory.allocate(1)
        const request = yield* Effect.fork(client.request(new Uint8Array(8), { external: [buffer] }))
        const held = yield* inScope(server.take)
        yield* held.value.externalData
        let s = yield* stats
        assert.strictEqual(s.pinnedBuffers - s.openChannels, 1)
        assert.strictEqual(s.liveViews, base.liveViews + 1, "the external-data views")
        const gpadl = yield* inScope(Gpadl.create(client, buffer))
        const mapped = yield* inScope(Gpadl.map(server, gpadl.value.handle))
        const set = yield* inScope(server.registerTransferPageSet(2, mapped.value))
        s = yield* stats
        assert.strictEqual(s.pinnedBuffers - s.openChannels, 1, "one buffer, pinned by two owners")
        assert.strictEqual(s.liveViews, base.liveViews + 3, "+ the GPADL mapping and the transfer page set")
        yield* held.value.complete(OK)
        yield* Fiber.join(request)
        yield* held.close
        yield* set.close
        yield* mapped.close
        s = yield* stats
        assert.strictEqual(s.liveViews, base.liveViews)
        assert.strictEqual(s.pinnedBuffers - s.openChannels, 1, "the GPADL still pins it")
        yield* gpadl.close
        assert.strictEqual((yield* extraPins), 0)
      })
    ))
})

// ---------------------------------------------------------------------------------------------
// Guest memory: allocations, pins, ranges
// ---------------------------------------------------------------------------------------------

describe("GuestMemory pins", () => {
  it.effect("pinRange pins every allocation a range touches; pages are freed at the last of scope close and unpin", () =>
    Effect.gen(function*() {
      const memory = yield* GuestMemory.make({ pages: 16 })
      const a = yield* inScope(memory.allocate(2))
      const b = yield* inScope(memory.allocate(2))
      assert.isTrue(memory.isLive(a.value))
      const unpin = rightOf(memory.pinRange([a.value.pfns[1]!, b.value.pfns[0]!]))
      assert.strictEqual(yield* memory.pinnedBuffers, 2)
      yield* a.close
      yield* b.close
      assert.isFalse(memory.isLive(a.value), "its scope closed")
      assert.strictEqual(yield* memory.allocatedPages, 4, "pinned pages stay allocated")
      assert.strictEqual(leftOf(memory.pinRange([a.value.firstPfn]))._tag, "InvalidMemoryRange", "a released allocation")
      unpin()
      unpin()
      assert.strictEqual(yield* memory.allocatedPages, 0)
      assert.strictEqual(yield* memory.pinnedBuffers, 0)
      assert.strictEqual(leftOf(memory.pinRange([memory.basePfn + 3]))._tag, "InvalidMemoryRange", "a free page")
      assert.strictEqual(leftOf(memory.pinRange([memory.basePfn + 16]))._tag, "InvalidMemoryRange", "outside memory")
    }).pipe(Effect.scoped))

  it.effect("a released buffer pins nothing, even when its pages were handed out again", () =>
    Effect.gen(function*() {
      const memory = yield* GuestMemory.make({ pages: 16 })
      const released = yield* inScope(memory.allocate(8))
      yield* released.close
      const b = yield* inScope(memory.allocate(2))
      const c = yield* memory.allocate(6)
      assert.strictEqual(b.value.firstPfn, released.value.firstPfn)
      assert.isFalse(memory.isLive(released.value))
      const unpin = memory.pin(released.value)
      assert.strictEqual(yield* memory.pinnedBuffers, 0)
      yield* b.close
      unpin()
      assert.isFalse(memory.isAllocated(b.value.firstPfn), "b freed by its own scope")
      assert.isTrue(memory.isAllocated(c.firstPfn) && memory.isAllocated(c.firstPfn + 5), "c untouched")
    }).pipe(Effect.scoped))
})

describe("pins of an ended open period", () => {
  it.effect("a client close releases a pending request's pins (and runs onSettled) only after CLOSECHANNEL", () =>
    withLeakCheck(
      Effect.gen(function*() {
        const control = yield* InMemoryTransport.Control
        const { client, server } = yield* openServerAndClient()
        const held = yield* Effect.fork(inScope(server.take))
        const buffer = yield* GuestMemory.allocate(1)
        const closeSentAtSettle = yield* Ref.make<boolean | undefined>(undefined)
        const request = yield* Effect.fork(client.value.request(new Uint8Array(8), {
          external: [buffer],
          onSettled: () => {
            const log = Effect.runSync(control.messages)
            const sent = log.some((entry) => {
              const message = ChannelMessage.decode(entry.bytes)
              return entry.direction === "toHost" && Either.isRight(message) && message.right._tag === "CloseChannel"
            })
            Effect.runSync(Ref.set(closeSentAtSettle, sent))
          }
        }))
        const packet = yield* Fiber.join(held)
        yield* client.close
        assert.strictEqual(failureOf(yield* Fiber.await(request))._tag, "ChannelClosed")
        assert.isTrue((yield* Ref.get(closeSentAtSettle)) === true, "CLOSECHANNEL went out before the pins were released")
        yield* packet.close
      }),
      { recordMessages: true }
    ))
})

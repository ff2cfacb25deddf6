// External data over the in-memory transport (wire-format.md §2.3, kmcl-model.md C7/C8, hardening.md
// §1.2): GPA-direct requests read and written by the receiver through `externalData`, views that die
// at completion, buffers pinned by pending transactions, peers naming memory they must not, and
// transfer page sets. Every test ends with the leak check of `withLeakCheck`.
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Scope } from "effect"
import * as Channel from "../src/Channel.js"
import * as Gpadl from "../src/Gpadl.js"
import * as GuestMemory from "../src/GuestMemory.js"
import type * as IncomingPacket from "../src/IncomingPacket.js"
import * as InMemoryTransport from "../src/InMemoryTransport.js"
import type * as Packet from "../src/Packet.js"
import { INSTANCE, openPair, TYPE } from "./utils/channels.js"
import {
  assertSameBytes,
  collectEvents,
  failureOf,
  isDone,
  leftOf,
  patchGpaRange,
  pattern,
  rightOf,
  settle,
  stats,
  withLeakCheck,
  writeIndexOf
} from "./utils/gpadl.js"

const FAILURE = new Uint8Array(8).fill(0xee)
const OK = new Uint8Array([0x4f, 0x4b, 0, 0, 0, 0, 0, 0])

/** Acquires `self` in a fresh child scope the test closes itself. */
const inScope = <A, E, R>(self: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const value = yield* Scope.extend(self, scope)
    return { value, scope, close: Scope.close(scope, Exit.void) }
  })

/** Takes one packet into a scope the test closes itself. */
const hold = (channel: Channel.OpenedChannel) => inScope(channel.take)

const pair = (failureCompletion = FAILURE) =>
  openPair({ server: { failureCompletion }, client: { failureCompletion } })

/** The only open channel's raw rings. */
const rings = Effect.gen(function*() {
  const control = yield* InMemoryTransport.Control
  const channels = yield* control.openChannels
  assert.strictEqual(channels.length, 1)
  return channels[0]!
})

const expectInvalidExternalData = (events: ReadonlyArray<Channel.ChannelEvent>) => {
  assert.strictEqual(events.length, 1)
  assert.strictEqual(events[0]!._tag, "InvalidExternalData")
  assert.strictEqual(events[0]!.error._tag, "MalformedPacket")
}

/** Asserts that `channel` has nothing delivered: a `take` stays waiting. */
const assertNothingDelivered = (channel: Channel.OpenedChannel) =>
  Effect.gen(function*() {
    const taker = yield* Effect.fork(Effect.scoped(channel.take))
    yield* settle()
    assert.isFalse(yield* isDone(taker), "nothing delivered")
    yield* Fiber.interrupt(taker)
  })

// ---------------------------------------------------------------------------------------------
// GPA direct: the receiver reads and writes the sender's buffer
// ---------------------------------------------------------------------------------------------

describe("GPA-direct requests", () => {
  for (const size of [64 * 1024, 1024 * 1024]) {
    it.effect(`${size / 1024} KiB: the server reads the client's buffer through externalData`, () =>
      withLeakCheck(
        Effect.gen(function*() {
          const { client, server } = yield* pair()
          const buffer = yield* GuestMemory.allocate(size / 4096)
          const content = pattern(size, size)
          buffer.bytes.set(content)
          const served = yield* Effect.fork(server.serve((packet) =>
            Effect.gen(function*() {
              assert.strictEqual(packet.kind, "GpaDirect")
              assert.isTrue(packet.completionRequested)
              const external = yield* packet.externalData
              assert.strictEqual(external.length, 1)
              assert.strictEqual(external[0]!.byteLength, size)
              assertSameBytes(rightOf(external[0]!.read()), content, "whole range")
              assertSameBytes(rightOf(external[0]!.read(4095, 2)), content.subarray(4095, 4097), "across a page")
              assert.strictEqual(leftOf(external[0]!.read(size - 1, 2))._tag, "InvalidMemoryRange")
              const ranges = (packet.packet as Packet.GpaDirectPacket).ranges
              assert.deepStrictEqual(ranges[0]!.pfns, buffer.pfns)
              return OK
            })
          ))
          const header = new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8])
          const reply = yield* client.request(header, { external: [buffer] })
          assert.deepStrictEqual(Array.from(reply), Array.from(OK))
          yield* Fiber.interrupt(served)
        })
      ))
  }

  it.effect("a read request: the server fills the guest buffer, the client sees it after completion", () =>
    withLeakCheck(
      Effect.gen(function*() {
        const { client, server } = yield* pair()
        const buffer = yield* GuestMemory.allocate(16)
        const fromHost = pattern(buffer.byteLength, 99)
        const served = yield* Effect.fork(server.serve((packet) =>
          Effect.gen(function*() {
            const [external] = yield* packet.externalData
            rightOf(external!.write(0, fromHost.subarray(0, 1000)))
            rightOf(external!.write(1000, fromHost.subarray(1000)))
            assert.strictEqual(leftOf(external!.write(buffer.byteLength, new Uint8Array(1)))._tag, "InvalidMemoryRange")
            return OK
          })
        ))
        const reply = yield* client.request(new Uint8Array(8), { external: [buffer] })
        assert.deepStrictEqual(Array.from(reply), Array.from(OK))
        assertSameBytes(buffer.bytes, fromHost, "guest buffer after completion")
        yield* Fiber.interrupt(served)
      })
    ))

  it.effect("several ranges in one request: guest buffers and explicit sub-page ranges", () =>
    withLeakCheck(
      Effect.gen(function*() {
        const { client, server } = yield* pair()
        const a = yield* GuestMemory.allocate(3)
        const b = yield* GuestMemory.allocate(2)
        a.bytes.set(pattern(a.byteLength, 1))
        b.bytes.set(pattern(b.byteLength, 2))
        const sub: Packet.GpaRange = { pfns: b.pfns, byteOffset: 0xff0, byteCount: 0x20 }
        const check = (expected: ReadonlyArray<Uint8Array>) =>
          Effect.gen(function*() {
            const held = yield* hold(server)
            const external = yield* held.value.externalData
            assert.deepStrictEqual(external.map((e) => e.byteLength), expected.map((e) => e.length))
            expected.forEach((bytes, i) => assertSameBytes(rightOf(external[i]!.read()), bytes, `range ${i}`))
            yield* held.value.complete(OK)
            yield* held.close
          })
        const first = yield* Effect.fork(client.request(new Uint8Array(8), { external: [a, sub, b] }))
        yield* check([a.bytes, b.bytes.subarray(0xff0, 0x1010), b.bytes])
        yield* Fiber.join(first)
        // `ranges` come first, then `external`.
        const second = yield* Effect.fork(client.request(new Uint8Array(8), { ranges: [sub], external: [a] }))
        yield* check([b.bytes.subarray(0xff0, 0x1010), a.bytes])
        yield* Fiber.join(second)
      })
    ))

  it.effect("the views fail with ExternalDataUnavailable once the packet is completed", () =>
    withLeakCheck(
      Effect.gen(function*() {
        const { client, server } = yield* pair()
        const buffer = yield* GuestMemory.allocate(2)
        buffer.bytes.fill(3)
        const request = yield* Effect.fork(client.request(new Uint8Array(8), { external: [buffer] }))
        const held = yield* hold(server)
        const packet: IncomingPacket.IncomingPacket = held.value
        const external = yield* packet.externalData
        assert.strictEqual(rightOf(external[0]!.read(0, 1))[0], 3)
        yield* packet.complete(OK)
        yield* Fiber.join(request)
        assert.strictEqual(leftOf(external[0]!.read())._tag, "ExternalDataUnavailable")
        assert.strictEqual(leftOf(external[0]!.write(0, new Uint8Array(1)))._tag, "ExternalDataUnavailable")
        assert.strictEqual(failureOf(yield* Effect.exit(packet.externalData))._tag, "ExternalDataUnavailable")
        assert.strictEqual(buffer.bytes[0], 3)
        yield* held.close

        // The same after an automatic completion (scope closed without complete).
        const again = yield* Effect.fork(client.request(new Uint8Array(8), { external: [buffer] }))
        const held2 = yield* hold(server)
        const external2 = yield* held2.value.externalData
        yield* held2.close
        assert.deepStrictEqual(Array.from(yield* Fiber.join(again)), Array.from(FAILURE))
        assert.strictEqual(leftOf(external2[0]!.read())._tag, "ExternalDataUnavailable")

        // An in-band packet has no external data.
        const inBand = yield* Effect.fork(client.request(new Uint8Array(8)))
        const held3 = yield* hold(server)
        assert.strictEqual(failureOf(yield* Effect.exit(held3.value.externalData))._tag, "ExternalDataUnavailable")
        yield* held3.value.complete()
        yield* held3.close
        yield* Fiber.join(inBand)
      })
    ))
})

// ---------------------------------------------------------------------------------------------
// Pinning (C8): a pending transaction owns its buffers
// ---------------------------------------------------------------------------------------------

describe("external buffers are pinned while the transaction is pending", () => {
  it.effect("requester interrupted and buffer scope closed: pages stay until the server completes", () =>
    withLeakCheck(
      Effect.gen(function*() {
        const { client, server } = yield* pair()
        const baseline = (yield* stats).guestPagesAllocated
        const owned = yield* inScope(GuestMemory.allocate(16))
        const buffer = owned.value
        buffer.bytes.set(pattern(buffer.byteLength, 16))
        const requester = yield* Effect.fork(client.request(new Uint8Array(8), { external: [buffer] }))
        const held = yield* hold(server)
        yield* Fiber.interrupt(requester)
        yield* owned.close
        yield* settle()
        let s = yield* stats
        assert.strictEqual(s.guestPagesAllocated, baseline + 16, "still pinned by the transaction")
        assert.strictEqual(s.outstandingTransactions, 1)
        // The server still reads the right bytes: the pages were not reused.
        const inBetween = yield* GuestMemory.allocate(16)
        assert.notStrictEqual(inBetween.firstPfn, buffer.firstPfn, "pinned pages are not handed out again")
        const [external] = yield* held.value.externalData
        assertSameBytes(rightOf(external!.read()), pattern(buffer.byteLength, 16))
        yield* held.value.complete(OK)
        yield* held.close
        yield* settle()
        s = yield* stats
        assert.strictEqual(s.outstandingTransactions, 0)
        assert.strictEqual(s.guestPagesAllocated, baseline + 16, "only the later allocation remains")
      })
    ))

  it.effect("a second request on the same buffer keeps it pinned until both settle", () =>
    withLeakCheck(
      Effect.gen(function*() {
        const { client, server } = yield* pair()
        const baseline = (yield* stats).guestPagesAllocated
        const owned = yield* inScope(GuestMemory.allocate(4))
        const r1 = yield* Effect.fork(client.request(new Uint8Array(8), { external: [owned.value] }))
        const r2 = yield* Effect.fork(client.request(new Uint8Array(8), { external: [owned.value] }))
        const p1 = yield* hold(server)
        const p2 = yield* hold(server)
        yield* Fiber.interrupt(r1)
        yield* Fiber.interrupt(r2)
        yield* owned.close
        yield* p1.value.complete(OK)
        yield* p1.close
        yield* settle()
        assert.strictEqual((yield* stats).guestPagesAllocated, baseline + 4, "second pin still holds")
        yield* p2.value.complete(OK)
        yield* p2.close
        yield* settle()
        assert.strictEqual((yield* stats).guestPagesAllocated, baseline)
      })
    ))

  it.effect("the open period ending (client close) releases pinned buffers of pending transactions", () =>
    withLeakCheck(
      Effect.gen(function*() {
        const serverScope = yield* Scope.make()
        const clientScope = yield* Scope.make()
        const [server, client] = yield* Effect.all([
          Channel.open({ role: "server", interfaceType: TYPE, interfaceInstance: INSTANCE }).pipe(Scope.extend(serverScope)),
          Channel.open({ role: "client", interfaceType: TYPE, interfaceInstance: INSTANCE }).pipe(Scope.extend(clientScope))
        ], { concurrency: 2 })
        const baseline = (yield* stats).guestPagesAllocated
        const owned = yield* inScope(GuestMemory.allocate(8))
        const requester = yield* Effect.fork(client.request(new Uint8Array(8), { external: [owned.value] }))
        const held = yield* hold(server)
        yield* owned.close
        assert.strictEqual((yield* stats).guestPagesAllocated, baseline + 8, "pinned")
        yield* Scope.close(clientScope, Exit.void)
        const failure = failureOf(yield* Fiber.await(requester))
        assert.strictEqual(failure._tag, "ChannelClosed")
        yield* held.close
        yield* Scope.close(serverScope, Exit.void)
      })
    ))
})

// ---------------------------------------------------------------------------------------------
// Malicious ranges from the peer
// ---------------------------------------------------------------------------------------------

describe("GPA ranges a peer must not send", () => {
  it.effect("server → client: PFNs outside guest memory or free → not delivered, failure completion", () =>
    withLeakCheck(
      Effect.gen(function*() {
        const { client, server } = yield* pair()
        const memory = yield* GuestMemory.GuestMemory
        const good = yield* GuestMemory.allocate(1)
        const freed = yield* inScope(GuestMemory.allocate(1))
        const freedPfn = freed.value.firstPfn
        yield* freed.close
        assert.isFalse(memory.isAllocated(freedPfn))
        const cases: ReadonlyArray<ReadonlyArray<Packet.GpaRange>> = [
          [{ pfns: [memory.basePfn + memory.totalPages], byteOffset: 0, byteCount: 8 }],
          [{ pfns: [1], byteOffset: 0, byteCount: 4096 }],
          [{ pfns: [freedPfn], byteOffset: 0, byteCount: 16 }],
          [{ pfns: [good.firstPfn], byteOffset: 0, byteCount: 16 }, { pfns: [0xf_ffff_ffff], byteOffset: 8, byteCount: 8 }]
        ]
        for (const ranges of cases) {
          const events = yield* collectEvents(client, 1)
          const reply = yield* server.request(new Uint8Array(8), { ranges })
          assert.deepStrictEqual(Array.from(reply), Array.from(FAILURE), "the client's failure payload")
          expectInvalidExternalData(yield* events)
          yield* assertNothingDelivered(client)
        }
        const clientStats = yield* client.stats
        assert.strictEqual(clientStats.autoCompleted, cases.length)
        // The channel still works, with good ranges too.
        const served = yield* Effect.fork(client.serve((packet) =>
          Effect.map(packet.externalData, (external) => rightOf(external[0]!.read(0, 8)))
        ))
        good.bytes.set([1, 2, 3, 4, 5, 6, 7, 8])
        const reply = yield* server.request(new Uint8Array(8), { ranges: [{ pfns: good.pfns, byteOffset: 0, byteCount: 8 }] })
        assert.deepStrictEqual(Array.from(reply), [1, 2, 3, 4, 5, 6, 7, 8])
        yield* Fiber.interrupt(served)
      })
    ))

  it.effect("client → server: PFNs outside guest memory → not delivered, failure completion", () =>
    withLeakCheck(
      Effect.gen(function*() {
        const { client, server } = yield* pair()
        const memory = yield* GuestMemory.GuestMemory
        const events = yield* collectEvents(server, 1)
        const reply = yield* client.request(new Uint8Array(8), {
          ranges: [{ pfns: [memory.basePfn + memory.totalPages + 5], byteOffset: 0, byteCount: 100 }]
        })
        assert.deepStrictEqual(Array.from(reply), Array.from(FAILURE))
        expectInvalidExternalData(yield* events)
        yield* assertNothingDelivered(server)
      })
    ))

  it.effect("more pages than maxExternalPages → not delivered", () =>
    withLeakCheck(
      Effect.gen(function*() {
        const { client, server } = yield* openPair({
          server: { failureCompletion: FAILURE },
          client: { failureCompletion: FAILURE, maxExternalPages: 4 }
        })
        const buffer = yield* GuestMemory.allocate(8)
        const events = yield* collectEvents(client, 1)
        const reply = yield* server.request(new Uint8Array(8), { external: [buffer] })
        assert.deepStrictEqual(Array.from(reply), Array.from(FAILURE))
        expectInvalidExternalData(yield* events)
      })
    ))

  it.effect("byteOffset > 0xFFF, byteCount 0, wrong PFN count, no range: the sender refuses (InvalidParameter)", () =>
    withLeakCheck(
      Effect.gen(function*() {
        const { client, server } = yield* pair()
        const buffer = yield* GuestMemory.allocate(2)
        const bad: ReadonlyArray<Packet.GpaRange> = [
          { pfns: buffer.pfns, byteOffset: 0x1000, byteCount: 0x100 },
          { pfns: [], byteOffset: 0, byteCount: 0 },
          { pfns: [buffer.firstPfn], byteOffset: 0, byteCount: 0x2000 },
          { pfns: [-1], byteOffset: 0, byteCount: 1 }
        ]
        for (const range of bad) {
          for (const channel of [client, server]) {
            const error = failureOf(yield* Effect.exit(channel.request(new Uint8Array(8), { ranges: [range] })))
            assert.strictEqual(error._tag, "InvalidParameter", JSON.stringify(range))
            const sent = failureOf(yield* Effect.exit(channel.sendPacket({
              _tag: "GpaDirect",
              transactionId: 1n,
              completionRequested: true,
              ranges: [range],
              payload: new Uint8Array(0)
            })))
            assert.strictEqual(sent._tag, "InvalidParameter")
          }
        }
        const none = failureOf(yield* Effect.exit(server.sendPacket({
          _tag: "GpaDirect",
          transactionId: 1n,
          completionRequested: true,
          ranges: [],
          payload: new Uint8Array(0)
        })))
        assert.strictEqual(none._tag, "InvalidParameter")
        assert.strictEqual((yield* stats).outstandingTransactions, 0, "refused requests reserve nothing")
      })
    ))

  it.effect("crafted in the ring (byteOffset > 0xFFF, byteCount 0): the receiver rejects, the sender gets the failure", () =>
    withLeakCheck(
      Effect.gen(function*() {
        const { client, server } = yield* pair()
        const buffer = yield* GuestMemory.allocate(2)
        const { serverToClient } = yield* rings
        const cases = [
          { range: { pfns: buffer.pfns, byteOffset: 0xf00, byteCount: 0x200 }, patch: { byteOffset: 0x1000, byteCount: 0x100 } },
          { range: { pfns: [buffer.firstPfn], byteOffset: 0, byteCount: 0x1000 }, patch: { byteCount: 0 } },
          { range: { pfns: [buffer.firstPfn], byteOffset: 0x800, byteCount: 0x800 }, patch: { byteOffset: 0x1000, byteCount: 0 } }
        ]
        for (const { patch, range } of cases) {
          // Paused, the client peeks at the packet but does not consume it; patch it, then start.
          yield* client.pause
          const at = writeIndexOf(serverToClient)
          const events = yield* collectEvents(client, 1)
          const request = yield* Effect.fork(server.request(new Uint8Array(8), { ranges: [range] }))
          yield* settle()
          patchGpaRange(serverToClient, at, [range.pfns.length], 0, patch)
          yield* client.start
          const reply = yield* Fiber.join(request)
          assert.deepStrictEqual(Array.from(reply), Array.from(FAILURE), JSON.stringify(patch))
          expectInvalidExternalData(yield* events)
          yield* assertNothingDelivered(client)
          assert.strictEqual(yield* client.state, "Active", "a bad range fails the packet, not the channel")
        }
      })
    ))
})

// ---------------------------------------------------------------------------------------------
// Transfer pages
// ---------------------------------------------------------------------------------------------

describe("transfer page sets", () => {
  it.effect("host → guest: the client's set is a GPADL the server writes; the client reads the ranges", () =>
    withLeakCheck(
      Effect.gen(function*() {
        const { client, server } = yield* pair()
        const buffer = yield* GuestMemory.allocate(8)
        const gpadl = yield* Gpadl.create(client, buffer)
        yield* client.registerTransferPageSet(0xcafe, buffer)
        const view = yield* Gpadl.map(server, gpadl.handle)
        const data = pattern(buffer.byteLength, 0xcafe)
        rightOf(view.write(0, data))
        const ranges = [{ byteOffset: 0, byteCount: 100 }, { byteOffset: 5000, byteCount: 3000 }]
        const serverEvents = yield* collectEvents(server, 1)
        yield* server.sendPacket({
          _tag: "TransferPages",
          transactionId: 0x42n,
          completionRequested: true,
          transferPageSetId: 0xcafe,
          senderOwnsSet: false,
          ranges,
          payload: new Uint8Array([7, 7, 7, 7, 7, 7, 7, 7])
        })
        const held = yield* hold(client)
        const packet = held.value
        assert.strictEqual(packet.kind, "TransferPages")
        assert.strictEqual((packet.packet as Packet.TransferPagesPacket).transferPageSetId, 0xcafe)
        const external = yield* packet.externalData
        assert.deepStrictEqual(external.map((e) => e.byteLength), [100, 3000])
        assertSameBytes(rightOf(external[0]!.read()), data.subarray(0, 100))
        assertSameBytes(rightOf(external[1]!.read()), data.subarray(5000, 8000))
        assertSameBytes(rightOf(external[1]!.read(10, 20)), data.subarray(5010, 5030))
        assert.strictEqual(leftOf(external[0]!.read(50, 51))._tag, "InvalidMemoryRange", "a view stays inside its range")
        yield* packet.complete(OK)
        yield* held.close
        assert.strictEqual(leftOf(external[0]!.read())._tag, "ExternalDataUnavailable")
        // The completion reaches the server; it sent the packet without a transaction of its own.
        const [event] = yield* serverEvents
        assert.strictEqual(event!._tag, "UnknownCompletion")
        assert.strictEqual((yield* server.state), "Active")
      })
    ))

  it.effect("guest → host: the server's set is its GPADL mapping; the server reads what the client wrote", () =>
    withLeakCheck(
      Effect.gen(function*() {
        const { client, server } = yield* pair()
        const buffer = yield* GuestMemory.allocate(4)
        const gpadl = yield* Gpadl.create(client, buffer)
        const view = yield* Gpadl.map(server, gpadl.handle)
        yield* server.registerTransferPageSet(1, view)
        const data = pattern(buffer.byteLength, 4)
        buffer.bytes.set(data)
        yield* client.sendPacket({
          _tag: "TransferPages",
          transactionId: 0n,
          completionRequested: false,
          transferPageSetId: 1,
          senderOwnsSet: true,
          ranges: [{ byteOffset: 4090, byteCount: 12 }],
          payload: new Uint8Array(0)
        })
        const held = yield* hold(server)
        const [external] = yield* held.value.externalData
        assertSameBytes(rightOf(external!.read()), data.subarray(4090, 4102))
        rightOf(external!.write(0, new Uint8Array([1, 2])))
        assert.deepStrictEqual(Array.from(buffer.bytes.subarray(4090, 4092)), [1, 2])
        yield* held.value.complete()
        yield* held.close
      })
    ))

  it.effect("a range outside the set, an unknown set id, an unregistered set → not delivered", () =>
    withLeakCheck(
      Effect.gen(function*() {
        const { client, server } = yield* pair()
        const buffer = yield* GuestMemory.allocate(2)
        const registration = yield* inScope(client.registerTransferPageSet(3, buffer))
        const duplicate = failureOf(yield* Effect.exit(Effect.scoped(client.registerTransferPageSet(3, buffer))))
        assert.strictEqual(duplicate._tag, "InvalidParameter")
        const badId = failureOf(yield* Effect.exit(Effect.scoped(client.registerTransferPageSet(0x10000, buffer))))
        assert.strictEqual(badId._tag, "InvalidParameter")
        const send = (transferPageSetId: number, ranges: ReadonlyArray<Packet.TransferPageRange>) =>
          server.sendPacket({
            _tag: "TransferPages",
            transactionId: 0n,
            completionRequested: false,
            transferPageSetId,
            senderOwnsSet: false,
            ranges,
            payload: new Uint8Array(8)
          })
        const bad: ReadonlyArray<readonly [number, ReadonlyArray<Packet.TransferPageRange>]> = [
          [3, [{ byteOffset: 8000, byteCount: 193 }]],
          [3, [{ byteOffset: 0, byteCount: 8 }, { byteOffset: 0xffff_fff0, byteCount: 0x20 }]],
          [3, [{ byteOffset: 8192, byteCount: 1 }]],
          [4, [{ byteOffset: 0, byteCount: 8 }]]
        ]
        for (const [id, ranges] of bad) {
          const events = yield* collectEvents(client, 1)
          yield* send(id, ranges)
          expectInvalidExternalData(yield* events)
          yield* assertNothingDelivered(client)
        }
        // Exactly the set's end is fine.
        yield* send(3, [{ byteOffset: 8000, byteCount: 192 }])
        const held = yield* hold(client)
        assert.strictEqual((yield* held.value.externalData)[0]!.byteLength, 192)
        yield* held.value.complete()
        yield* held.close
        // After the registration's scope closes, the id is unknown.
        yield* registration.close
        const events = yield* collectEvents(client, 1)
        yield* send(3, [{ byteOffset: 0, byteCount: 8 }])
        expectInvalidExternalData(yield* events)
        assert.strictEqual((yield* client.state), "Active")
      })
    ))
})

// The in-memory transport's control plane, message for message (wire-format.md §4.4, §5.4): open,
// close and rescind produce exactly the VMBus channel-management messages Linux exchanges with
// Hyper-V, each at most 240 bytes and decodable, with the fields that tie them together (handles,
// relids, the ring split). Every test ends with the leak check of `withLeakCheck`.
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Scope } from "effect"
import * as Channel from "../src/Channel.js"
import * as ChannelMessage from "../src/ChannelMessage.js"
import * as Gpadl from "../src/Gpadl.js"
import * as GuestMemory from "../src/GuestMemory.js"
import * as InMemoryTransport from "../src/InMemoryTransport.js"
import { INSTANCE, TYPE } from "./utils/channels.js"
import { type LoggedMessage, isDone, leftOf, logLength, messageLog, messagesSince, settle, stats, tags, withLeakCheck } from "./utils/gpadl.js"

const SIZES: Partial<Record<ChannelMessage.ChannelMessage["_tag"], number>> = {
  OfferChannel: 196,
  RescindChannelOffer: 12,
  OpenChannel: 148,
  OpenChannelResult: 20,
  CloseChannel: 12,
  GpadlCreated: 20,
  GpadlTeardown: 16,
  GpadlTorndown: 12,
  RelidReleased: 12
}

const DIRECTION: Partial<Record<ChannelMessage.ChannelMessage["_tag"], "toHost" | "toGuest">> = {
  OfferChannel: "toGuest",
  RescindChannelOffer: "toGuest",
  OpenChannel: "toHost",
  OpenChannelResult: "toGuest",
  CloseChannel: "toHost",
  GpadlHeader: "toHost",
  GpadlBody: "toHost",
  GpadlCreated: "toGuest",
  GpadlTeardown: "toHost",
  GpadlTorndown: "toGuest",
  RelidReleased: "toHost"
}

/** Every message decodes, fits 240 bytes, has its type's size and travels in its type's direction. */
const assertWellFormed = (log: ReadonlyArray<LoggedMessage>) => {
  for (const entry of log) {
    assert.isDefined(entry.message, "decodable")
    assert.isAtMost(entry.size, 240)
    const tag = entry.message!._tag
    const size = SIZES[tag]
    if (size !== undefined) assert.strictEqual(entry.size, size, `${tag} size`)
    const direction = DIRECTION[tag]
    if (direction !== undefined) assert.strictEqual(entry.direction, direction, `${tag} direction`)
  }
}

const openIn = (scope: Scope.Scope, config: Partial<Channel.ChannelConfigInput> & { readonly role: "client" | "server" }) =>
  Channel.open({ interfaceType: TYPE, interfaceInstance: INSTANCE, ...config } as Channel.ChannelConfigInput).pipe(
    Scope.extend(scope)
  )

const geometries = [
  { outgoingRingPages: 16, incomingRingPages: 16, maxPacketSize: 4096 },
  { outgoingRingPages: 2, incomingRingPages: 3, maxPacketSize: 1024 },
  { outgoingRingPages: 20, incomingRingPages: 8, maxPacketSize: 4096 },
  // wire-format.md §4.4's example: 2 MiB + 2 MiB, header + 36 bodies, page offset 512.
  { outgoingRingPages: 512, incomingRingPages: 512, maxPacketSize: 4096 }
] as const

describe("control plane: open and close", () => {
  for (const geometry of geometries) {
    const { incomingRingPages, maxPacketSize, outgoingRingPages } = geometry
    const pages = outgoingRingPages + incomingRingPages
    it.effect(`rings ${outgoingRingPages}+${incomingRingPages}: GPADL_HEADER(+BODY) → CREATED → OPENCHANNEL → RESULT; close → CLOSECHANNEL → TEARDOWN → TORNDOWN`, () =>
      withLeakCheck(
        Effect.gen(function*() {
          const memory = yield* GuestMemory.GuestMemory
          const serverScope = yield* Scope.make()
          const clientScope = yield* Scope.make()
          const [server, client] = yield* Effect.all([
            openIn(serverScope, { role: "server", maxPacketSize }),
            openIn(clientScope, { role: "client", ...geometry })
          ], { concurrency: 2 })
          const opened = yield* messageLog
          assertWellFormed(opened)
          const bodies = pages <= 26 ? 0 : Math.ceil((pages - 26) / 28)
          assert.deepStrictEqual(tags(opened), [
            "OfferChannel",
            "GpadlHeader",
            ...Array.from({ length: bodies }, () => "GpadlBody"),
            "GpadlCreated",
            "OpenChannel",
            "OpenChannelResult"
          ])
          const offer = opened[0]!.message as ChannelMessage.OfferChannel
          assert.strictEqual(offer.interfaceType, TYPE)
          assert.strictEqual(offer.interfaceInstance, INSTANCE)
          assert.strictEqual(offer.childRelid, client.childRelid)
          assert.strictEqual(server.childRelid, client.childRelid)
          const header = opened[1]!.message as ChannelMessage.GpadlHeader
          assert.strictEqual(header.childRelid, client.childRelid)
          assert.strictEqual(header.handle, Gpadl.FIRST_HANDLE)
          assert.strictEqual(header.rangeCount, 1)
          assert.strictEqual(header.byteOffset, 0)
          assert.strictEqual(header.byteCount, pages * 4096)
          assert.strictEqual(header.rangeBufLength, 8 + 8 * pages)
          const pfns = [...header.pfns]
          for (const entry of opened.slice(2, 2 + bodies)) pfns.push(...(entry.message as ChannelMessage.GpadlBody).pfns)
          assert.strictEqual(pfns.length, pages)
          pfns.forEach((pfn, i) => assert.strictEqual(pfn, pfns[0]! + i, "one contiguous donation"))
          const created = opened[2 + bodies]!.message as ChannelMessage.GpadlCreated
          assert.deepStrictEqual(created, {
            _tag: "GpadlCreated",
            childRelid: client.childRelid,
            handle: header.handle,
            creationStatus: 0
          })
          const open = opened[3 + bodies]!.message as ChannelMessage.OpenChannel
          assert.strictEqual(open.childRelid, client.childRelid)
          assert.strictEqual(open.openId, client.childRelid, "Linux sets openid = child_relid")
          assert.strictEqual(open.ringBufferGpadlHandle, header.handle)
          assert.strictEqual(open.downstreamRingBufferPageOffset, outgoingRingPages)
          assert.strictEqual(open.targetVp, 0)
          const result = opened[4 + bodies]!.message as ChannelMessage.OpenChannelResult
          assert.deepStrictEqual(result, {
            _tag: "OpenChannelResult",
            childRelid: client.childRelid,
            openId: client.childRelid,
            status: 0
          })
          // The rings are exactly those pages: send ring first, then the host→guest ring.
          const control = yield* InMemoryTransport.Control
          const [info] = yield* control.openChannels
          assert.strictEqual(info!.clientToServer.buffer, memory.buffer)
          assert.strictEqual(info!.clientToServer.byteOffset, (pfns[0]! - memory.basePfn) * 4096)
          assert.strictEqual(info!.clientToServer.byteLength, outgoingRingPages * 4096)
          assert.strictEqual(info!.serverToClient.byteOffset, (pfns[outgoingRingPages]! - memory.basePfn) * 4096)
          assert.strictEqual(info!.serverToClient.byteLength, incomingRingPages * 4096)
          let s = yield* stats
          assert.strictEqual(s.messagesToHost + s.messagesToGuest, opened.length)
          assert.strictEqual(s.malformedMessages, 0)
          assert.strictEqual(s.gpadls, 1)
          assert.strictEqual(s.guestPagesAllocated, pages)

          // Close the client: CLOSECHANNEL (not answered), then the ring GPADL goes.
          const before = opened.length
          yield* Scope.close(clientScope, Exit.void)
          const closed = yield* messagesSince(before)
          assertWellFormed(closed)
          assert.deepStrictEqual(tags(closed), ["CloseChannel", "GpadlTeardown", "GpadlTorndown"])
          assert.deepStrictEqual(closed[0]!.message, { _tag: "CloseChannel", childRelid: client.childRelid })
          assert.deepStrictEqual(closed[1]!.message, { _tag: "GpadlTeardown", childRelid: client.childRelid, handle: header.handle })
          assert.deepStrictEqual(closed[2]!.message, { _tag: "GpadlTorndown", handle: header.handle })
          assert.strictEqual(yield* server.closed, "PeerClose")
          s = yield* stats
          assert.strictEqual(s.gpadls, 0)
          assert.strictEqual(s.guestPagesAllocated, 0)

          // The server's scope withdraws the offer.
          const beforeServer = yield* logLength
          yield* Scope.close(serverScope, Exit.void)
          const withdrawn = yield* messagesSince(beforeServer)
          assertWellFormed(withdrawn)
          assert.deepStrictEqual(tags(withdrawn), ["RescindChannelOffer"])
          assert.strictEqual((yield* stats).offers, 0)
        }),
        { recordMessages: true }
      ))
  }

  it.effect("a second open period: a fresh ring GPADL and handle, same relid", () =>
    withLeakCheck(
      Effect.gen(function*() {
        const serverScope = yield* Scope.make()
        const first = yield* Scope.make()
        const [server] = yield* Effect.all([openIn(serverScope, { role: "server" }), openIn(first, { role: "client" })], {
          concurrency: 2
        })
        yield* Scope.close(first, Exit.void)
        assert.strictEqual(yield* server.closed, "PeerClose")
        yield* Scope.close(serverScope, Exit.void)
        // Offer again and reopen: the connection-wide handle counter moves on.
        const serverScope2 = yield* Scope.make()
        const second = yield* Scope.make()
        const before = yield* logLength
        yield* Effect.all([openIn(serverScope2, { role: "server" }), openIn(second, { role: "client" })], { concurrency: 2 })
        const log = yield* messagesSince(before)
        const header = log.find((e) => e.message?._tag === "GpadlHeader")!.message as ChannelMessage.GpadlHeader
        assert.strictEqual(header.handle, Gpadl.FIRST_HANDLE + 1)
        yield* Scope.close(second, Exit.void)
        yield* Scope.close(serverScope2, Exit.void)
      }),
      { recordMessages: true }
    ))
})

describe("control plane: rescind", () => {
  // Linux vmbus_close_internal / vmbus_teardown_gpadl: after a rescind the guest still sends
  // CLOSECHANNEL, releases its GPADLs without GPADL_TEARDOWN, and sends RELID_RELEASED last.
  it.effect("RESCIND_CHANNELOFFER; the client's close sends CLOSECHANNEL, no GPADL_TEARDOWN, then RELID_RELEASED", () =>
    withLeakCheck(
      Effect.gen(function*() {
        const control = yield* InMemoryTransport.Control
        const serverScope = yield* Scope.make()
        const clientScope = yield* Scope.make()
        const [server, client] = yield* Effect.all([openIn(serverScope, { role: "server" }), openIn(clientScope, { role: "client" })], {
          concurrency: 2
        })
        const buffer = yield* GuestMemory.allocate(2).pipe(Scope.extend(clientScope))
        const gpadl = yield* Gpadl.create(client, buffer).pipe(Scope.extend(clientScope))
        const view = yield* Gpadl.map(server, gpadl.handle).pipe(Scope.extend(serverScope))
        const pending = yield* Effect.fork(client.request(new Uint8Array(8)))
        yield* settle()
        const before = yield* logLength
        assert.isTrue(yield* control.rescind(INSTANCE))
        assert.isFalse(yield* control.rescind(INSTANCE), "already gone")
        const rescinded = yield* messagesSince(before)
        assert.deepStrictEqual(tags(rescinded), ["RescindChannelOffer"])
        assert.deepStrictEqual(rescinded[0]!.message, { _tag: "RescindChannelOffer", childRelid: client.childRelid })
        assert.strictEqual(yield* client.closed, "Rescinded")
        assert.strictEqual(yield* server.closed, "Rescinded")
        const failed = yield* Fiber.await(pending)
        assert.isTrue(Exit.isFailure(failed), "pending requests fail (C1)")
        assert.strictEqual(leftOf(view.read(0, 1))._tag, "GpadlUnavailable", "the host's mapping is revoked")
        // The host dropped the channel's GPADLs with the rescind.
        assert.strictEqual((yield* stats).gpadls, 0)
        const closing = yield* Effect.fork(Scope.close(clientScope, Exit.void))
        yield* settle()
        assert.isTrue(yield* isDone(closing))
        const after = yield* messagesSince(before + 1)
        assertWellFormed(after)
        assert.deepStrictEqual(tags(after), ["CloseChannel", "RelidReleased"])
        assert.deepStrictEqual(after[1]!.message, { _tag: "RelidReleased", childRelid: client.childRelid })
        assert.isDefined(gpadl.handle)
        const beforeServer = yield* logLength
        yield* Scope.close(serverScope, Exit.void)
        assert.deepStrictEqual(tags(yield* messagesSince(beforeServer)), [], "the offer is already gone")
        assert.strictEqual((yield* stats).offers, 0)
      }),
      { recordMessages: true }
    ))

  // Regression: RELID_RELEASED must be last (wire-format.md §5.4; Linux vmbus_close_internal tears the
  // ring GPADL down before hv_process_channel_removal sends RELID_RELEASED): once released, the host may
  // reuse the relid.
  it.effect("RELID_RELEASED is the last message of a close after a rescind", () =>
    withLeakCheck(
      Effect.gen(function*() {
        const control = yield* InMemoryTransport.Control
        const serverScope = yield* Scope.make()
        const clientScope = yield* Scope.make()
        const [, client] = yield* Effect.all([openIn(serverScope, { role: "server" }), openIn(clientScope, { role: "client" })], {
          concurrency: 2
        })
        const before = yield* logLength
        yield* control.rescind(INSTANCE)
        yield* Scope.close(clientScope, Exit.void)
        assert.deepStrictEqual(tags(yield* messagesSince(before)), [
          "RescindChannelOffer",
          "CloseChannel",
          "RelidReleased"
        ])
        assert.strictEqual(client.role, "client")
        yield* Scope.close(serverScope, Exit.void)
      }),
      { recordMessages: true }
    ))

  it.effect("a rescind before the client opens: the open finds no offer", () =>
    withLeakCheck(
      Effect.gen(function*() {
        const control = yield* InMemoryTransport.Control
        const serverScope = yield* Scope.make()
        const server = yield* Effect.fork(openIn(serverScope, { role: "server" }))
        yield* settle()
        assert.isTrue(yield* control.rescind(INSTANCE))
        const exit = yield* Fiber.await(server)
        assert.isTrue(Exit.isFailure(exit), "the server's wait for a client ends")
        yield* Scope.close(serverScope, Exit.void)
        const log = yield* messageLog
        assert.deepStrictEqual(tags(log), ["OfferChannel", "RescindChannelOffer"])
        const client = yield* Effect.fork(Effect.scoped(openIn(yield* Scope.make(), { role: "client" })))
        yield* settle()
        assert.isFalse(yield* isDone(client), "waiting for an offer")
        yield* Fiber.interrupt(client)
      }),
      { recordMessages: true }
    ))
})

describe("control plane: hostile guest messages on a live channel", () => {
  it.effect("a second OPENCHANNEL for an open channel is refused; stray CLOSECHANNEL / RELID_RELEASED are harmless", () =>
    withLeakCheck(
      Effect.gen(function*() {
        const control = yield* InMemoryTransport.Control
        const serverScope = yield* Scope.make()
        const clientScope = yield* Scope.make()
        const [server, client] = yield* Effect.all([openIn(serverScope, { role: "server" }), openIn(clientScope, { role: "client" })], {
          concurrency: 2
        })
        const before = yield* stats
        const beforeLog = yield* logLength
        yield* control.injectMessage("toHost", ChannelMessage.encode({
          _tag: "OpenChannel",
          childRelid: client.childRelid,
          openId: client.childRelid,
          ringBufferGpadlHandle: Gpadl.FIRST_HANDLE,
          targetVp: 0,
          downstreamRingBufferPageOffset: 16,
          userData: new Uint8Array(120)
        }))
        const answer = (yield* messagesSince(beforeLog))[1]!.message as ChannelMessage.OpenChannelResult
        assert.strictEqual(answer._tag, "OpenChannelResult")
        assert.notStrictEqual(answer.status, 0)
        const after = yield* stats
        assert.strictEqual(after.malformedMessages - before.malformedMessages, 1, "the unmatched result is counted")
        assert.strictEqual(after.channelsOpened, before.channelsOpened)
        // Unknown relids.
        yield* control.injectMessage("toHost", ChannelMessage.encode({ _tag: "CloseChannel", childRelid: 999 }))
        yield* control.injectMessage("toHost", ChannelMessage.encode({ _tag: "RelidReleased", childRelid: 999 }))
        yield* control.injectMessage("toHost", ChannelMessage.encode({
          _tag: "OpenChannel",
          childRelid: 999,
          openId: 999,
          ringBufferGpadlHandle: 0x12345,
          targetVp: 0,
          downstreamRingBufferPageOffset: 2,
          userData: new Uint8Array(120)
        }))
        // The channel is unaffected.
        assert.strictEqual(yield* client.state, "Active")
        assert.strictEqual(yield* server.state, "Active")
        const served = yield* Effect.fork(server.serve((packet) => Effect.succeed(packet.payload)))
        const reply = yield* client.request(new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]))
        assert.deepStrictEqual(Array.from(reply), [1, 2, 3, 4, 5, 6, 7, 8])
        yield* Fiber.interrupt(served)
        yield* Scope.close(clientScope, Exit.void)
        yield* Scope.close(serverScope, Exit.void)
      }),
      { recordMessages: true }
    ))
})

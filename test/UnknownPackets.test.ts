// Issue 8, C13/C14: flags travel on every packet kind, and a packet of an unknown type (or with
// unknown flag bits) never leaves a reader that can make no progress. The channel's `unknownPackets`
// policy decides: "skip" (default: consumed, reported, counted), "deliver" (to consumers, completed
// exactly once like any packet) or "fail" (the open period ends as Corrupt, the packet consumed).
import { assert, describe, it } from "@effect/vitest"
import { Chunk, Effect, Fiber, Option, Stream } from "effect"
import * as Channel from "../src/Channel.js"
import * as Packet from "../src/Packet.js"
import { busStats, eventually, filled, INSTANCE, openPair, settle, TYPE, withBus } from "./utils/channels.js"
import { assertBytes, hold } from "./utils/semantics.js"

const collectEvents = (channel: Channel.OpenedChannel, n: number) =>
  Effect.gen(function*() {
    const fiber = yield* Effect.fork(Stream.runCollect(Stream.take(channel.events, n)))
    yield* settle()
    return Effect.map(Fiber.join(fiber), Chunk.toReadonlyArray)
  })

const fieldOf = (event: Channel.ChannelEvent): unknown => (event.error as { field?: unknown }).field
const valueOf = (event: Channel.ChannelEvent): unknown => (event.error as { value?: unknown }).value

const unknown = (type: number, options: { readonly id?: bigint; readonly rc?: boolean; readonly flags?: number } = {}): Packet.Packet => ({
  _tag: "Unknown",
  type,
  transactionId: options.id ?? 0n,
  completionRequested: options.rc ?? false,
  header: filled(0x11, 8),
  payload: filled(0x22, 16),
  ...(options.flags === undefined ? {} : { flags: options.flags })
})

describe("unknown packets (C14)", () => {
  it.scoped("skip (default): consumed, reported and counted; the packets behind them are served", () =>
    Effect.gen(function*() {
      const { client, server } = yield* openPair()
      assert.strictEqual(server.config.unknownPackets, "skip")
      const events = yield* collectEvents(server, 3)
      // Sent before anyone serves: the reader meets them first, in the ring.
      yield* client.sendPacket(unknown(0x8, { id: 77n, rc: true }))
      yield* client.sendPacket(Packet.inBand(filled(3), { flags: 0x8000 }))
      yield* client.sendPacket(unknown(0xffff))
      yield* Effect.forkScoped(server.serve((packet) => Effect.succeed(packet.payload.slice(0, 8))))
      assertBytes(yield* client.request(filled(5), { timeout: "5 seconds" }), filled(5))
      const reported = yield* events
      assert.deepStrictEqual(reported.map((e) => e._tag), ["UnknownPacket", "UnknownPacket", "UnknownPacket"])
      assert.deepStrictEqual(reported.map((e) => [fieldOf(e), valueOf(e)]), [["type", 8], ["flags", 0x8000], ["type", 0xffff]])
      const stats = yield* server.stats
      assert.strictEqual(stats.unknownPackets, 3)
      assert.strictEqual(stats.packetsReceived, 1)
      assert.strictEqual(stats.packetsOutstanding, 0)
      assert.strictEqual(yield* server.state, "Active")
    }).pipe(withBus))

  it.scoped("skip works while the quota is exhausted: an unknown packet behind it never blocks the ring", () =>
    Effect.gen(function*() {
      const { client, server } = yield* openPair({ server: { transactionQuota: 1 } })
      yield* client.send(filled(1))
      const held = yield* hold(server) // quota used up: the reader only peeks now
      yield* client.sendPacket(unknown(0x3))
      yield* client.sendPacket(unknown(0x4))
      yield* eventually(Effect.map(server.stats, (s) => s.unknownPackets === 2), "unknown packets skipped while blocked")
      yield* held.release
      const fiber = yield* Effect.fork(client.request(filled(9), { timeout: "5 seconds" }))
      yield* Effect.forkScoped(server.serve(() => Effect.succeed(filled(4))))
      assertBytes(yield* Fiber.join(fiber), filled(4))
    }).pipe(withBus))

  it.scoped("deliver: handed to consumers with type, header and flags; completed exactly once like any packet", () =>
    Effect.gen(function*() {
      const { client, server } = yield* openPair({ server: { unknownPackets: "deliver" } })
      const clientEvents = yield* collectEvents(client, 1)
      yield* client.sendPacket(unknown(0xc, { id: 41n, rc: true, flags: 0x0101 }))
      const { packet, release } = yield* hold(server)
      assert.strictEqual(packet.kind, "Unknown")
      assert.deepStrictEqual(packet.transactionId, Option.some(41n))
      const raw = packet.packet as Packet.UnknownPacket
      assert.strictEqual(raw.type, 0xc)
      assert.strictEqual(raw.flags, 0x0101)
      assertBytes(raw.header, filled(0x11, 8))
      assertBytes(packet.payload, filled(0x22, 16))
      assert.strictEqual((yield* Effect.either(packet.externalData))._tag, "Left")
      yield* packet.complete(filled(6))
      yield* release
      // The completion reaches the client (id 41 was never issued there: reported, not fatal).
      const [event] = yield* clientEvents
      assert.strictEqual(valueOf(event!), 41n)
      // A known type with unknown flag bits is delivered as its own kind, flags visible.
      yield* client.sendPacket(Packet.inBand(filled(7), { flags: 0x4000 }))
      const second = yield* hold(server)
      assert.strictEqual(second.packet.kind, "InBand")
      assert.strictEqual(second.packet.packet.flags, 0x4000)
      yield* second.release
      const stats = yield* server.stats
      assert.strictEqual(stats.unknownPackets, 0)
      assert.strictEqual(stats.packetsOutstanding, 0)
    }).pipe(withBus))

  it.scoped("fail: the open period ends as Corrupt naming the field; consumers see RingCorrupt", () =>
    Effect.gen(function*() {
      const { client, server } = yield* openPair({ server: { unknownPackets: "fail" } })
      const events = yield* collectEvents(server, 1)
      yield* client.sendPacket(Packet.inBand(filled(1), { flags: 0x2 }))
      assert.strictEqual(yield* server.closed, "Corrupt")
      const [event] = yield* events
      assert.strictEqual(event!._tag, "RingCorrupt")
      assert.strictEqual(fieldOf(event!), "flags")
      const taken = yield* Effect.either(Effect.scoped(server.take))
      assert.strictEqual(taken._tag === "Left" && taken.left._tag, "RingCorrupt")
    }).pipe(withBus))

  it("an invalid policy is InvalidParameter naming the field", () => {
    const result = Channel.decodeConfig({ role: "server", interfaceType: TYPE, interfaceInstance: INSTANCE, unknownPackets: "drop" as "skip" })
    assert.strictEqual(result._tag === "Left" && result.left.field, "unknownPackets")
  })
})

describe("completion flags (C13)", () => {
  it.scoped("a completion carrying flag bits completes its request (the reader matches on the id only)", () =>
    Effect.gen(function*() {
      const { client, server } = yield* openPair()
      const request = yield* Effect.fork(client.request(filled(1), { timeout: "5 seconds" }))
      const { packet, release } = yield* hold(server)
      const id = Option.getOrThrow(packet.transactionId)
      const events = yield* collectEvents(client, 1)
      yield* server.sendPacket(Packet.completion(id, filled(0x5a), { flags: 0x8001 }))
      assertBytes(yield* Fiber.join(request), filled(0x5a))
      // The channel's own completion for the same packet is then a duplicate: reported, never a second result.
      yield* packet.complete(filled(1))
      yield* release
      const [event] = yield* events
      assert.strictEqual(event!._tag, "DuplicateCompletion")
      yield* eventually(Effect.map(busStats, (s) => s.outstandingPackets === 0 && s.outstandingTransactions === 0), "settled")
    }).pipe(withBus))
})

// UioTransport against the emulated device (native-transport.md §5.2): the guest runs here, the host
// emulator — the project's own server-role channel over the same mapped rings, playing Hyper-V and the
// kernel's uio_hv_generic — runs in a CHILD PROCESS. Live clock throughout (real processes).
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Layer, Scope } from "effect"
import * as Channel from "../src/Channel.js"
import * as Transport from "../src/Transport.js"
import { liveMappings } from "../src/internal/uio/mapping.js"
import { bytes, eventually, guestLayer, openClient, setup } from "./utils/uio/emulator.js"

describe.sequential("UioTransport over the emulated device (host in a child process)", () => {
  for (const mode of ["not monitored", "monitored"] as const) {
    it.scopedLive(`open, request/response both ways, signals as the ring rules say (${mode})`, () =>
      Effect.gen(function*() {
        const { device, emulator, withGuest } = yield* setup({
          profile: "6.18",
          spec: mode === "monitored" ? { monitorId: 5 } : {}
        })
        assert.strictEqual(device.info.monitorId, mode === "monitored" ? 5 : undefined)
        const scope = yield* Scope.make()
        const channel = yield* withGuest(openClient(emulator)).pipe(Scope.extend(scope))
        assert.strictEqual((yield* emulator.stats).state, "3")
        for (let i = 0; i < 50; i++) {
          const payload = bytes(8 + i * 24, i)
          const answer = yield* channel.request(payload)
          assert.deepStrictEqual(Array.from(answer), Array.from(payload))
        }
        // Host → guest traffic that the guest did not ask for.
        const received: Array<number> = []
        yield* Effect.forkIn(channel.serve((packet) => Effect.sync(() => void received.push(packet.payload.length))), scope)
        yield* emulator.command({ op: "push", count: 20, size: 100 })
        yield* eventually(Effect.sync(() => received.length === 20), "20 pushed packets received")
        const stats = yield* emulator.stats
        const guestStats = yield* channel.stats
        assert.strictEqual(stats.spuriousIntBits, 0)
        // Every host wake-up is a signal the guest's ring rules decided on, and nothing else (monitor
        // bits set twice before a scan coalesce into one wake-up, as on Hyper-V).
        assert.isAbove(guestStats.signalsSent, 0)
        if (mode === "not monitored") {
          assert.strictEqual(stats.channels[0]!.guestSignals, guestStats.signalsSent)
          assert.strictEqual(stats.irqWrites, guestStats.signalsSent)
        } else {
          assert.isAtMost(stats.channels[0]!.guestSignals, guestStats.signalsSent)
          assert.isAbove(stats.channels[0]!.guestSignals, 0)
          assert.strictEqual(stats.irqWrites, 0)
        }
        assert.isAbove((yield* device.stats).events, 0)
        assert.isAbove(liveMappings(), 0)
        yield* Scope.close(scope, Exit.void)
        const after = yield* device.stats
        assert.deepStrictEqual({ open: after.open, endpoints: after.endpoints, mappings: after.mappings }, {
          open: false,
          endpoints: 0,
          mappings: 0
        })
        yield* eventually(Effect.map(emulator.stats, (s) => s.connections === 0 && s.state === "2"), "host saw the close")
      }))
  }
})

/** A Transport that delegates to the one in `context` and remembers the endpoints it handed out. */
const recording = (transport: Transport.TransportShape) => {
  const endpoints: Array<Transport.Endpoint> = []
  const shape: Transport.TransportShape = {
    ...transport,
    open: (request) => Effect.tap(transport.open(request), (endpoint) => Effect.sync(() => endpoints.push(endpoint)))
  }
  return { endpoints, shape }
}

/** The host's scribble (0xff) is not visible: the views see the private overlay (zeros, or the guest's own stale stores). */
const unseen = (view: Uint8Array) => !view.includes(0xff)

describe.sequential("UioTransport: rescind, host death, re-open", () => {
  it.scopedLive("rescind mid-transfer: requests fail Rescinded, mappings revoked first, pages reused by the host never seen", () =>
    Effect.gen(function*() {
      const { device, emulator, transport } = yield* setup({ profile: "6.16" })
      const rec = recording(yield* transport)
      const scope = yield* Scope.make()
      const channel = yield* openClient(emulator).pipe(Effect.provideService(Transport.Transport, rec.shape), Scope.extend(scope))
      const endpoint = rec.endpoints[0]!
      // A stream of requests in flight while the host rescinds.
      const traffic = yield* Effect.fork(Effect.forever(channel.request(bytes(512, 1))).pipe(Effect.flip))
      yield* Effect.sleep("30 millis")
      yield* emulator.command({ op: "rescind" })
      const error = yield* traffic.await.pipe(Effect.flatMap((exit) => exit))
      assert.strictEqual(error._tag, "ChannelClosed")
      if (error._tag === "ChannelClosed") assert.strictEqual(error.reason, "Rescinded")
      assert.strictEqual(yield* channel.closed, "Rescinded")
      const stats = yield* device.stats
      assert.deepStrictEqual({ open: stats.open, mappings: stats.mappings, rescinded: stats.rescinded }, {
        open: false,
        mappings: 0,
        rescinded: true
      })
      // The "kernel" reuses the pages: the guest's views are private pages now, never the new content.
      yield* emulator.command({ op: "scribble" })
      assert.isTrue(unseen(endpoint.outgoing) && unseen(endpoint.incoming))
      yield* Scope.close(scope, Exit.void)
      const reopen = yield* Effect.flip(Effect.scoped(openClient(emulator).pipe(Effect.provideService(Transport.Transport, rec.shape))))
      assert.strictEqual(reopen._tag, "ChannelClosed")
    }))

  it.scopedLive("the host process dies: the channel closes Rescinded, every scope releases", () =>
    Effect.gen(function*() {
      const { device, emulator, withGuest } = yield* setup({ profile: "6.18" })
      const scope = yield* Scope.make()
      const channel = yield* withGuest(openClient(emulator)).pipe(Scope.extend(scope))
      yield* channel.request(bytes(64, 2))
      const pending = yield* Effect.fork(Effect.forever(channel.request(bytes(64, 3))).pipe(Effect.flip))
      yield* emulator.kill
      const error = yield* Effect.flatten(pending.await)
      assert.strictEqual(error._tag, "ChannelClosed")
      assert.strictEqual(yield* channel.closed, "Rescinded")
      yield* Scope.close(scope, Exit.void)
      const stats = yield* device.stats
      assert.deepStrictEqual([stats.open, stats.endpoints, stats.mappings], [false, 0, 0])
    }))

  it.scopedLive("close and re-open: the kernel resets the rings, traffic resumes; a second user is Busy", () =>
    Effect.gen(function*() {
      const { device, emulator, withGuest } = yield* setup({ profile: "6.10" })
      for (let round = 0; round < 2; round++) {
        yield* Effect.scoped(Effect.gen(function*() {
          const channel = yield* withGuest(openClient(emulator))
          for (let i = 0; i < 5; i++) yield* channel.request(bytes(32, i))
          // Another transport on the same device while this one holds it.
          const other = yield* Effect.flip(Effect.scoped(Effect.gen(function*() {
            const context = yield* Layer.build(guestLayer(emulator))
            return yield* openClient(emulator).pipe(Effect.provide(context))
          })))
          assert.strictEqual(other._tag, "TransportError")
          if (other._tag === "TransportError") assert.strictEqual(other.reason, "Busy")
        }))
        yield* eventually(Effect.map(emulator.stats, (s) => s.connections === 0), "closed")
      }
      assert.strictEqual((yield* emulator.stats).opens, 2)
      assert.strictEqual((yield* device.stats).mappings, 0)
    }))

  it.scopedLive("the host refuses the open: OpenRejected, nothing left open", () =>
    Effect.gen(function*() {
      const { device, emulator, withGuest } = yield* setup({ profile: "6.18", refuseOpen: true })
      const error = yield* Effect.flip(Effect.scoped(withGuest(openClient(emulator))))
      assert.strictEqual(error._tag, "OpenRejected")
      assert.deepStrictEqual([(yield* device.stats).open, (yield* device.stats).mappings], [false, 0])
    }))

  it.scopedLive("a ring corrupted by the host process: the channel closes Corrupt", () =>
    Effect.gen(function*() {
      const { emulator, withGuest } = yield* setup({ profile: "6.18" })
      const channel = yield* withGuest(openClient(emulator))
      yield* channel.request(bytes(16, 1))
      yield* emulator.command({ op: "corrupt" })
      assert.strictEqual(yield* channel.closed, "Corrupt")
    }))
})

describe.sequential("UioTransport back-pressure", () => {
  it.scopedLive("the host stalls: the guest's sends wait on pending_send_sz, the host's reading wakes them, nothing is lost", () =>
    Effect.gen(function*() {
      // 16 KiB rings per direction: 12 KiB of data, a dozen 1000-byte packets fill it.
      const { emulator, withGuest } = yield* setup({ profile: "6.16", spec: { ringSize: 16 * 1024 } })
      const channel = yield* withGuest(Channel.open({ role: "client", interfaceType: emulator.classId, maxPacketSize: 2048 }))
      yield* emulator.command({ op: "pause" })
      const sender = yield* Effect.fork(Effect.forEach(Array.from({ length: 100 }, (_, i) => bytes(1000, i)), (p) => channel.send(p), { discard: true }))
      yield* eventually(Effect.map(channel.stats, (s) => s.ringFullWaits > 0), "the guest waits for ring space")
      assert.isNull(sender.unsafePoll())
      yield* emulator.command({ op: "resume" })
      yield* sender.await.pipe(Effect.flatMap((exit) => exit))
      yield* eventually(Effect.map(emulator.stats, (s) => s.channels[0]!.packetsReceived === 100), "the host read all 100 packets")
      // The answer to a request after all that still arrives.
      assert.strictEqual((yield* channel.request(bytes(16, 1))).length, 16)
    }))
})

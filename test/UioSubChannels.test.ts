// UioTransport's sub-channels, receive/send buffers and the capabilities it lacks, against the emulated
// device with the host emulator in a child process.
import { assert, describe, it } from "@effect/vitest"
import { Effect, Either, Exit, Layer, Scope } from "effect"
import * as fs from "node:fs"
import * as Channel from "../src/Channel.js"
import * as Transport from "../src/Transport.js"
import * as UioTransport from "../src/UioTransport.js"
import { emulated } from "../src/internal/uio/emulatedBackend.js"
import { load } from "../src/internal/uio/native.js"
import { UioBackend } from "../src/internal/uio/transport.js"
import { bytes, eventually, layerPlatformFiles, openClient, setup, tempRoot } from "./utils/uio/emulator.js"
import { devRoot, INSTANCE, mapFile, sysfsRoot, writeTree } from "./utils/uio/tree.js"

describe.sequential("UioTransport sub-channels", () => {
  it.scopedLive("6.10 kernel: sub-channels are listed, opened (ring appearing late), polled and never unmasked", () =>
    Effect.gen(function*() {
      const { device, emulator, withGuest } = yield* setup({
        profile: "6.10",
        spec: { monitorId: 3 },
        subChannels: [{ index: 1, relid: 20, monitorId: 4, delayMillis: 100 }, { index: 2, relid: 21, monitorId: 6 }]
      })
      const scope = yield* Scope.make()
      const primary = yield* withGuest(openClient(emulator)).pipe(Scope.extend(scope))
      const subs = yield* Effect.forEach([1, 2], (index) =>
        Channel.open({ role: "client", interfaceType: emulator.classId, maxPacketSize: 64 * 1024, openTimeoutMillis: 10_000 }).pipe(
          Effect.provideService(Transport.Transport, device.subChannel(index)),
          Scope.extend(scope)
        ))
      const listed = yield* device.subChannels
      assert.deepStrictEqual(listed.map((c) => [c.index, c.relid, c.monitorId]), [[1, 20, 4], [2, 21, 6]])
      for (let i = 0; i < 20; i++) {
        for (const [n, channel] of [primary, ...subs].entries()) {
          const payload = bytes(40 + 8 * i, n)
          assert.deepStrictEqual(Array.from(yield* channel.request(payload)), Array.from(payload))
        }
      }
      // Host pushes to a polled sub-channel arrive by the poll, with no interrupt.
      const got: Array<number> = []
      yield* Effect.forkIn(subs[0]!.serve((packet) => Effect.sync(() => void got.push(packet.payload.length))), scope)
      yield* emulator.command({ op: "push", index: 1, count: 10, size: 64 })
      yield* eventually(Effect.sync(() => got.length === 10), "pushed packets on the sub-channel")
      const stats = yield* emulator.stats
      assert.strictEqual(stats.crashes, 0, "a sub-channel interrupt on a 6.10 kernel crashes it")
      assert.strictEqual(stats.channels[1]!.hostSignals + stats.channels[2]!.hostSignals, 0)
      assert.strictEqual((yield* device.stats).endpoints, 3)
      yield* Scope.close(scope, Exit.void)
      assert.deepStrictEqual([(yield* device.stats).endpoints, (yield* device.stats).mappings], [0, 0])
    }))

  it.scopedLive("6.18 kernel, not monitored: sub-channels signal with write(fd, 1); closing the primary ends them", () =>
    Effect.gen(function*() {
      const { device, emulator, withGuest } = yield* setup({
        profile: "6.18",
        subChannels: [{ index: 1, relid: 30 }]
      }, { subChannels: "interrupt" })
      const primaryScope = yield* Scope.make()
      yield* withGuest(openClient(emulator)).pipe(Scope.extend(primaryScope))
      const sub = yield* Channel.open({ role: "client", interfaceType: emulator.classId, maxPacketSize: 64 * 1024 }).pipe(
        Effect.provideService(Transport.Transport, device.subChannel(1))
      )
      for (let i = 0; i < 10; i++) yield* sub.request(bytes(64, i))
      assert.strictEqual((yield* emulator.stats).spuriousIntBits, 0)
      // The kernel frees sub-channel rings at the last close: they end with the primary.
      yield* Scope.close(primaryScope, Exit.void)
      assert.strictEqual(yield* sub.closed, "PeerClose")
      const error = yield* Effect.flip(sub.request(bytes(8, 1)))
      assert.strictEqual(error._tag, "ChannelClosed")
      assert.strictEqual((yield* device.stats).mappings, 0)
      // Without an open primary there are no sub-channels to open.
      const noPrimary = yield* Effect.flip(Effect.scoped(device.subChannel(1).open({
        interfaceType: emulator.classId,
        outgoingRingPages: 0,
        incomingRingPages: 0
      })))
      assert.strictEqual(noPrimary._tag, "TransportError")
    }))
})

describe.sequential("UioTransport buffers and capabilities", () => {
  it.scopedLive("receive/send buffers (maps 3, 4): read/write views with their GPADL handles, revoked with the channel", () =>
    Effect.gen(function*() {
      const { device, emulator, withGuest } = yield* setup({
        profile: "6.18",
        spec: { buffers: { recvSize: 64 * 1024, sendSize: 32 * 1024, recvGpadl: 0x1001, sendGpadl: 0x1002 } }
      })
      const scope = yield* Scope.make()
      yield* withGuest(openClient(emulator)).pipe(Scope.extend(scope))
      const receive = yield* device.buffer("receive").pipe(Scope.extend(scope))
      const send = yield* device.buffer("send").pipe(Scope.extend(scope))
      assert.deepStrictEqual([receive.handle, receive.byteLength, send.handle, send.byteLength], [0x1001, 65536, 0x1002, 32768])
      assert.isTrue(Either.isRight(send.write(100, bytes(16, 9))))
      // The same memory the host sees.
      assert.deepStrictEqual(Array.from(fs.readFileSync(mapFile(emulator.root, 4)).subarray(100, 116)), Array.from(bytes(16, 9)))
      const outside = send.write(32768 - 4, bytes(8, 1))
      assert.isTrue(Either.isLeft(outside) && outside.left._tag === "InvalidMemoryRange")
      yield* Scope.close(scope, Exit.void)
      const after = receive.read(0, 4)
      assert.isTrue(Either.isLeft(after) && after.left._tag === "GpadlUnavailable")
      assert.strictEqual((yield* device.stats).mappings, 0)
    }))

  it.scopedLive("every capability uio lacks is Unsupported, never a crash", () =>
    Effect.gen(function*() {
      const { device, emulator, transport, withGuest } = yield* setup({ profile: "6.18" })
      const guest = yield* transport
      assert.deepStrictEqual(guest.capabilities, { ringGeometry: false, serverRole: false, gpadl: false })
      const capability = (error: { readonly _tag: string }) => error._tag === "Unsupported" ? (error as unknown as { capability: string }).capability : error._tag
      const server = yield* Effect.flip(Effect.scoped(withGuest(Channel.open({ role: "server", interfaceType: emulator.classId, interfaceInstance: emulator.instance }))))
      assert.strictEqual(capability(server), "serverRole")
      const geometry = yield* Effect.flip(Effect.scoped(withGuest(Channel.open({ role: "client", interfaceType: emulator.classId, outgoingRingPages: 64 }))))
      assert.strictEqual(capability(geometry), "ringGeometry")
      const userData = yield* Effect.flip(Effect.scoped(guest.open({
        interfaceType: emulator.classId,
        outgoingRingPages: 0,
        incomingRingPages: 0,
        userData: new Uint8Array([1, 2, 3])
      })))
      assert.strictEqual(capability(userData), "userData")
      const noBuffer = yield* Effect.flip(Effect.scoped(device.buffer("receive")))
      assert.strictEqual(capability(noBuffer), "receiveBuffer")
      const wrongClass = yield* Effect.flip(Effect.scoped(withGuest(Channel.open({ role: "client", interfaceType: "f8615163-df3e-46c5-913f-f2d2f965ed0e" }))))
      assert.strictEqual(wrongClass._tag, "InvalidParameter")
      const channel = yield* withGuest(openClient(emulator))
      const gpadl = yield* Effect.flip(Effect.scoped(channel.createGpadl({ pfns: [1] })))
      assert.strictEqual(capability(gpadl), "createGpadl")
      const mapped = yield* Effect.flip(Effect.scoped(channel.mapGpadl(1)))
      assert.strictEqual(capability(mapped), "mapGpadl")
      const gpaDirect = yield* Effect.flip(channel.request(bytes(8, 1), { ranges: [{ byteCount: 4096, byteOffset: 0, pfns: [0x1234] }] }))
      assert.strictEqual(capability(gpaDirect), "externalData")
      // The channel still works after all of that.
      yield* channel.request(bytes(8, 2))
    }))

  it.scopedLive("a system page other than 4 KiB is Unsupported{ pageSize }", () =>
    Effect.gen(function*() {
      const root = yield* Effect.acquireRelease(Effect.sync(tempRoot), (root) => Effect.sync(() => fs.rmSync(root, { recursive: true, force: true })))
      writeTree({ root })
      const native = yield* load
      const bigPages = Layer.succeed(UioBackend, { ...emulated(native), native: { ...native, pageSize: 65536 } })
      const error = yield* Effect.flip(Layer.build(UioTransport.layerWith({
        device: INSTANCE,
        sysfsRoot: sysfsRoot(root),
        devRoot: devRoot(root)
      }).pipe(Layer.provide(Layer.merge(bigPages, layerPlatformFiles)))))
      assert.strictEqual(error._tag, "Unsupported")
      if (error._tag === "Unsupported") assert.strictEqual(error.capability, "pageSize")
    }))
})

// UioTransport against the emulated device (native-transport.md §5.2): the guest runs here, the host
// emulator — the project's own server-role channel over the same mapped rings, playing Hyper-V and the
// kernel's uio_hv_generic — runs in a CHILD PROCESS. Live clock throughout (real processes).
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Layer, Scope } from "effect"
import * as Channel from "../src/Channel.js"
import * as Transport from "../src/Transport.js"
import * as UioTransport from "../src/UioTransport.js"
import { liveMappings } from "../src/internal/uio/mapping.js"
import type { Emulator, EmulatorOptions } from "./utils/uio/emulator.js"
import { guestLayer, spawnEmulator } from "./utils/uio/emulator.js"

const bytes = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 7 + seed) & 0xff)

/** Polls `check` (5 ms steps) until it holds, or dies after `millis`. */
const eventually = <E, R>(check: Effect.Effect<boolean, E, R>, label: string, millis = 5000) => {
  const loop = (left: number): Effect.Effect<void, E, R> =>
    Effect.flatMap(check, (ok) => {
      if (ok) return Effect.void
      if (left <= 0) return Effect.dieMessage(`condition never held: ${label}`)
      return Effect.zipRight(Effect.sleep("5 millis"), loop(left - 5))
    })
  return loop(millis)
}

/** The emulator in a child process, and the guest's transport + device built over it in `scope`. */
const setup = (options: EmulatorOptions, transportOptions: Partial<UioTransport.Options> = {}) =>
  Effect.gen(function*() {
    const emulator = yield* spawnEmulator(options)
    const context = yield* Layer.build(guestLayer(emulator, transportOptions))
    const transport = Effect.provide(Transport.Transport, context)
    const device = yield* Effect.provide(UioTransport.UioDevice, context)
    const withGuest = <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.provide(self, context)
    return { emulator, device, transport, withGuest }
  })

const openClient = (emulator: Emulator) =>
  Channel.open({ role: "client", interfaceType: emulator.classId, maxPacketSize: 64 * 1024 })

describe("UioTransport over the emulated device (host in a child process)", () => {
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

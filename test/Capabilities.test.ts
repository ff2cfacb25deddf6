import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as TestClock from "effect/TestClock"
import * as Channel from "../src/Channel.js"
import * as InMemoryTransport from "../src/InMemoryTransport.js"
import * as Transport from "../src/Transport.js"
import { INSTANCE, TYPE } from "./utils/channels.js"

// The in-memory transport with capabilities switched off, as a transport that cannot honour them.
const limited = Layer.effect(
  Transport.Transport,
  Effect.map(Transport.Transport, (transport) => ({
    ...transport,
    name: "limited",
    capabilities: { ...transport.capabilities, serverRole: false, ringGeometry: false }
  }))
).pipe(Layer.provide(InMemoryTransport.layer))

describe("transport capabilities", () => {
  it.scoped("a server role the transport cannot play is Unsupported, not ignored", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.flip(Channel.open({ role: "server", interfaceType: TYPE, interfaceInstance: INSTANCE }))
      assert.strictEqual(exit._tag, "Unsupported")
      if (exit._tag === "Unsupported") assert.strictEqual(exit.capability, "serverRole")
    }).pipe(Effect.provide(limited)))

  it.scoped("ring geometry the transport chooses itself is Unsupported when requested", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.flip(
        Channel.open({ role: "client", interfaceType: TYPE, outgoingRingPages: 32, openTimeoutMillis: 0 })
      )
      assert.strictEqual(exit._tag, "Unsupported")
      if (exit._tag === "Unsupported") assert.strictEqual(exit.capability, "ringGeometry")
    }).pipe(Effect.provide(limited)))
})

describe("isolated guest", () => {
  it.scoped("offers of device classes outside the allow-list are ignored and counted", () =>
    Effect.gen(function*() {
      const control = yield* InMemoryTransport.Control
      yield* Effect.forkScoped(Channel.open({ role: "server", interfaceType: TYPE, interfaceInstance: INSTANCE }))
      const exit = yield* Effect.flip(
        Channel.open({ role: "client", interfaceType: TYPE, openTimeoutMillis: 1000 }).pipe(
          Effect.timeoutFail({ duration: "2 seconds", onTimeout: () => "outer timeout" as const }),
          Effect.fork,
          Effect.tap(() => TestClock.adjust("1 second")),
          Effect.flatMap(Fiber.join)
        )
      )
      assert.strictEqual(typeof exit === "string" ? exit : exit._tag, "OpenTimeout")
      const stats = yield* control.stats
      assert.strictEqual(stats.offersIgnored, 1)
      assert.strictEqual(stats.openChannels, 0)
    }).pipe(
      Effect.provide(InMemoryTransport.layerConfig({ allowedInterfaceTypes: ["57164f39-9115-4e78-ab55-382f3bd5422d"] }))
    ))

  it.scoped("allowed device classes open as usual", () =>
    Effect.gen(function*() {
      yield* Effect.forkScoped(Channel.open({ role: "server", interfaceType: TYPE, interfaceInstance: INSTANCE }))
      const client = yield* Channel.open({ role: "client", interfaceType: TYPE })
      assert.strictEqual(client.role, "client")
    }).pipe(Effect.provide(InMemoryTransport.layerConfig({ allowedInterfaceTypes: [TYPE.toUpperCase()] }))))
})

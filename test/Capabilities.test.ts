import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
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

// The README's API tour, run as written (imports from the package entry point).
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { Channel, InMemoryTransport } from "../src/index.js"

const TYPE = "f8615163-df3e-46c5-913f-f2d2f965ed0e"
const INSTANCE = "9e5e1a6f-2c34-4b8e-9d2a-0b1c2d3e4f50"

describe("README", () => {
  it.live("the API tour runs", () =>
    Effect.gen(function*() {
      const program = Effect.gen(function*() {
        yield* Effect.forkScoped(
          Effect.gen(function*() {
            const server = yield* Channel.open({ role: "server", interfaceType: TYPE, interfaceInstance: INSTANCE })
            yield* server.serve((packet) => Effect.succeed(packet.payload.slice(0, 4)))
          }).pipe(Effect.scoped)
        )
        const client = yield* Channel.open({
          role: "client",
          interfaceType: TYPE,
          outgoingRingPages: 16,
          incomingRingPages: 16,
          transactionQuota: 64
        })
        const reply = yield* client.request(new Uint8Array([1, 2, 3, 4]), { timeout: "1 second" })
        yield* client.send(new Uint8Array(100))
        return reply
      }).pipe(Effect.scoped, Effect.provide(InMemoryTransport.layer))
      const reply = yield* program
      assert.deepStrictEqual(Array.from(reply.subarray(0, 4)), [1, 2, 3, 4])
    }))
})

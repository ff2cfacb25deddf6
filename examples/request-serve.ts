/**
 * A request/serve pair over the in-memory transport: the host side (server) offers a channel and
 * serves it, the guest side (client) opens it and sends requests. The handler's result is the
 * completion payload the client receives.
 *
 * Run: node request-serve.js (after compiling), or npx tsx request-serve.ts
 */
import { Effect } from "effect"
import { Channel, InMemoryTransport } from "effect-vmbus"

// Every VMBus device class has an interface type GUID; each device has an instance GUID.
const ECHO_TYPE = "f8615163-df3e-46c5-913f-f2d2f965ed0e"
const ECHO_INSTANCE = "9e5e1a6f-2c34-4b8e-9d2a-0b1c2d3e4f50"

const program = Effect.gen(function*() {
  // The server's open waits for a client, so it runs in a fiber of its own; the fiber ends with the
  // enclosing scope.
  yield* Effect.forkScoped(
    Effect.gen(function*() {
      const server = yield* Channel.open({ role: "server", interfaceType: ECHO_TYPE, interfaceInstance: ECHO_INSTANCE })
      // One completion per packet by construction: upper-cases ASCII text.
      yield* server.serve((packet) =>
        Effect.succeed(new TextEncoder().encode(new TextDecoder().decode(packet.payload).toUpperCase()))
      )
    }).pipe(Effect.scoped)
  )

  const client = yield* Channel.open({ role: "client", interfaceType: ECHO_TYPE })
  const words = ["hello", "vmbus"]
  const replies = yield* Effect.forEach(words, (word) =>
    client.request(new TextEncoder().encode(word), { timeout: "5 seconds" }).pipe(
      // Completions are padded to 8 bytes on the wire: keep the bytes we sent.
      Effect.map((reply) => new TextDecoder().decode(reply.subarray(0, word.length)))
    ))
  const stats = yield* client.stats
  return { replies, requestsSent: stats.packetsSent }
}).pipe(
  // Closing the scope closes both channels (and checks nothing is left behind).
  Effect.scoped,
  Effect.provide(InMemoryTransport.layer)
)

const { replies, requestsSent } = await Effect.runPromise(program)
console.log(`replies: ${replies.join(" ")}`)
console.log(`requests sent: ${requestsSent}`)

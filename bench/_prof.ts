import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import * as Fiber from "effect/Fiber"
import * as Channel from "../src/Channel.js"
import * as InMemoryTransport from "../src/InMemoryTransport.js"
const TYPE = "f8615163-df3e-46c5-913f-f2d2f965ed0e", INST = "9e5e1a6f-2c34-4b8e-9d2a-0b1c2d3e4f50"
const N = 300000
const prog = Effect.gen(function*() {
  const [server, client] = yield* Effect.all([
    Channel.open({ role: "server", interfaceType: TYPE, interfaceInstance: INST, transactionQuota: 4096 }),
    Channel.open({ role: "client", interfaceType: TYPE, interfaceInstance: INST, outgoingRingPages: 64, incomingRingPages: 64 })
  ], { concurrency: 2 })
  let got = 0
  const rx = yield* Effect.fork(server.packets.pipe(Stream.take(N), Stream.runForEach((p) => { got++; return p.complete() })))
  const payload = new Uint8Array(64)
  const t = performance.now()
  for (let i = 0; i < N; i++) yield* client.send(payload)
  yield* Fiber.join(rx)
  const ms = performance.now() - t
  console.log(`${(N / ms * 1000).toFixed(0)} pkts/s, ${(ms * 1000 / N).toFixed(2)} µs/pkt`, got)
}).pipe(Effect.scoped, Effect.provide(InMemoryTransport.layer))
Effect.runPromise(prog)

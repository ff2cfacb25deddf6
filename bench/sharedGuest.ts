// The worker thread of bench/sharedMemory.ts: a client over SharedMemoryTransport that measures the
// row the host names (so host and worker rows interleave), and the echo end of the MessagePort
// baselines.
import * as Effect from "effect/Effect"
import * as Queue from "effect/Queue"
import type { MessagePort } from "node:worker_threads"
import { parentPort, workerData } from "node:worker_threads"
import * as Channel from "../src/Channel.js"
import * as SharedMemoryTransport from "../src/SharedMemoryTransport.js"
import * as Transport from "../src/Transport.js"
import {
  type Command,
  type EchoMessage,
  measureRow,
  type Reply,
  SPIN_INSTANCE,
  SPIN_MICROS,
  TYPE,
  WORKER_INSTANCE
} from "./sharedCommon.js"

const data = workerData as {
  readonly port: MessagePort
  readonly echo: MessagePort
  readonly shared: SharedMemoryTransport.SharedBuffers
  readonly spinPort: MessagePort
  readonly spinShared: SharedMemoryTransport.SharedBuffers
}

// MessagePort baselines: echo a round trip; count one-way payloads and answer a sync with the count.
let received = 0
data.echo.on("message", (message: EchoMessage) => {
  switch (message.k) {
    case "echo":
      data.echo.postMessage(message.p)
      break
    case "one":
      received += message.p.length > 0 ? 1 : 0
      break
    case "batch":
      received += message.p.length
      break
    case "sync":
      data.echo.postMessage(received)
      break
  }
})

const reply = (message: Reply) => parentPort!.postMessage(message)

const program = Effect.gen(function*() {
  const commands = yield* Queue.unbounded<Command>()
  parentPort!.on("message", (command: Command) => Queue.unsafeOffer(commands, command))
  const open = (transport: Transport.TransportShape, instance: string) =>
    Channel.open({ role: "client", interfaceType: TYPE, interfaceInstance: instance, outgoingRingPages: 64, incomingRingPages: 64 })
      .pipe(Effect.provideService(Transport.Transport, transport))
  const client = yield* open(yield* SharedMemoryTransport.make(data.port, data.shared), WORKER_INSTANCE)
  const spinning = yield* SharedMemoryTransport.make(data.spinPort, data.spinShared, { spinMicros: SPIN_MICROS })
  const spinClient = yield* open(spinning, SPIN_INSTANCE)
  reply({ type: "sample", sample: { ops: 0, seconds: 0, cpuSeconds: 0 } }) // ready
  for (;;) {
    const command = yield* Queue.take(commands)
    if (command.type === "close") return
    reply({ type: "sample", sample: yield* measureRow(command.spin ? spinClient : client, command.row, command.millis) })
  }
}).pipe(Effect.scoped)

Effect.runPromise(program).then(
  () => {
    data.echo.close()
    parentPort!.close()
  },
  (error: unknown) => reply({ type: "error", message: String(error) })
)

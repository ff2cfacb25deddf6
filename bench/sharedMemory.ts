/**
 * Cross-thread channels: a client in a worker thread over `SharedMemoryTransport` and the same client
 * in the host thread over `InMemoryTransport`, against plain `MessagePort` messaging between the same
 * two threads (baselines): a round-trip echo, one 64-byte payload per message, 32 payloads per
 * message. Servers echo. Host and worker rows interleave: the host asks the worker to measure a row
 * and waits for its sample (bench/harness.ts).
 */
import * as Effect from "effect/Effect"
import type * as Layer from "effect/Layer"
import { MessageChannel, type MessagePort, Worker } from "node:worker_threads"
import * as Channel from "../src/Channel.js"
import * as InMemoryTransport from "../src/InMemoryTransport.js"
import * as SharedMemoryTransport from "../src/SharedMemoryTransport.js"
import { cpuSeconds, latencyRecorder, type Row, type Sample, type Subject } from "./harness.js"
import {
  BATCH,
  CHANNEL_ROWS,
  type ChannelRow,
  type Command,
  type EchoMessage,
  IN_THREAD_INSTANCE,
  measureRow,
  PAYLOAD,
  type Reply,
  SPIN_INSTANCE,
  SPIN_MICROS,
  SPIN_ROWS,
  TYPE,
  WORKER_INSTANCE
} from "./sharedCommon.js"

const WINDOW = 1024 // one-way MessagePort payloads between two syncs: a bound on the queue, as a ring is

const serve = (instance: string) =>
  Effect.forkScoped(
    Effect.gen(function*() {
      const server = yield* Channel.open({ role: "server", interfaceType: TYPE, interfaceInstance: instance, transactionQuota: 256 })
      yield* server.serve((packet) => Effect.succeed(packet.payload))
    }).pipe(Effect.scoped)
  )

/** Waits for messages on a port one at a time, without a listener per message. */
const receiver = <A>(port: MessagePort) => {
  let waiting: ((value: A) => void) | undefined
  const early: Array<A> = []
  port.on("message", (value: A) => {
    const resolve = waiting
    waiting = undefined
    if (resolve === undefined) early.push(value)
    else resolve(value)
  })
  return (): Promise<A> =>
    early.length > 0 ? Promise.resolve(early.shift()!) : new Promise<A>((resolve) => (waiting = resolve))
}

// ---------------------------------------------------------------------------------------------
// MessagePort baselines (plain Promise code: what a user would write without this library)
// ---------------------------------------------------------------------------------------------

const echoRoundTrips = async (port: MessagePort, next: () => Promise<unknown>, millis: number): Promise<Sample> => {
  const payload = new Uint8Array(PAYLOAD).fill(7)
  const latencies = latencyRecorder()
  let ops = 0
  const cpu0 = cpuSeconds()
  const start = performance.now()
  const deadline = start + millis
  while (performance.now() < deadline) {
    const t0 = performance.now()
    port.postMessage({ k: "echo", p: payload } satisfies EchoMessage)
    await next()
    latencies.record((performance.now() - t0) * 1000)
    ops++
  }
  return { ops, seconds: (performance.now() - start) / 1000, cpuSeconds: cpuSeconds() - cpu0, latencies: latencies.take() }
}

const oneWayMessages = async (port: MessagePort, next: () => Promise<unknown>, perMessage: number, millis: number): Promise<Sample> => {
  const payload = new Uint8Array(PAYLOAD).fill(7)
  const batch = Array.from({ length: perMessage }, () => payload)
  let ops = 0
  const cpu0 = cpuSeconds()
  const start = performance.now()
  const deadline = start + millis
  while (performance.now() < deadline) {
    for (let i = 0; i < WINDOW; i += perMessage) {
      port.postMessage((perMessage === 1 ? { k: "one", p: payload } : { k: "batch", p: batch }) satisfies EchoMessage)
    }
    port.postMessage({ k: "sync" } satisfies EchoMessage)
    await next()
    ops += WINDOW
  }
  return { ops, seconds: (performance.now() - start) / 1000, cpuSeconds: cpuSeconds() - cpu0 }
}

// ---------------------------------------------------------------------------------------------
// The worker
// ---------------------------------------------------------------------------------------------

const startWorker = Effect.gen(function*() {
  const connection = yield* SharedMemoryTransport.makeConnection()
  yield* SharedMemoryTransport.serveGuest(connection.hostPort, connection.shared)
  yield* serve(WORKER_INSTANCE)
  // A second connection where both sides spin before parking (the "spin" rows).
  const spinning = yield* SharedMemoryTransport.makeConnection()
  yield* SharedMemoryTransport.serveGuest(spinning.hostPort, spinning.shared, { spinMicros: SPIN_MICROS })
  yield* serve(SPIN_INSTANCE)
  const echo = new MessageChannel()
  const compiled = import.meta.url.endsWith(".js")
  const entry = new URL(compiled ? "./sharedGuest.js" : "./sharedGuest.ts", import.meta.url)
  const data = {
    port: connection.guestPort,
    echo: echo.port2,
    shared: connection.shared,
    spinPort: spinning.guestPort,
    spinShared: spinning.shared
  }
  const transferList = [connection.guestPort, echo.port2, spinning.guestPort]
  // Under tsx a worker's TypeScript entry needs tsx registered inside it (bench/tsWorker.mjs).
  const worker = compiled
    ? new Worker(entry, { workerData: data, transferList })
    : new Worker(new URL("./tsWorker.mjs", import.meta.url), { workerData: { ...data, entry: entry.href }, transferList })
  yield* Effect.addFinalizer(() =>
    Effect.promise(async () => {
      worker.postMessage({ type: "close" } satisfies Command)
      echo.port1.close()
      await worker.terminate()
    })
  )
  const replies: Array<Reply> = []
  let waiting: (() => void) | undefined
  const failed = (message: string) => {
    replies.push({ type: "error", message })
    waiting?.()
  }
  worker.on("message", (message: Reply) => {
    replies.push(message)
    waiting?.()
  })
  worker.on("error", (error) => failed(String(error)))
  worker.on("exit", (code) => failed(`worker exited with code ${code}`))
  const nextReply = Effect.async<Sample, Error>((resume) => {
    const deliver = () => {
      const reply = replies.shift()
      if (reply === undefined) return false
      waiting = undefined
      resume(reply.type === "sample" ? Effect.succeed(reply.sample) : Effect.fail(new Error(reply.message)))
      return true
    }
    if (!deliver()) waiting = () => void deliver()
  })
  yield* nextReply // the worker's client is open
  const measure = (row: ChannelRow, spin = false) => (millis: number) =>
    Effect.suspend(() => {
      worker.postMessage({ type: "measure", row, millis, spin } satisfies Command)
      return nextReply
    })
  return { measure, echoPort: echo.port1 }
})

// ---------------------------------------------------------------------------------------------
// The subject
// ---------------------------------------------------------------------------------------------

const ECHO = "MessagePort echo"
const ONE = "MessagePort, 1 payload per message"
const MANY = `MessagePort, ${BATCH} payloads per message`

const compareTo = (row: ChannelRow): string => (row.startsWith("request") ? ECHO : ONE)

const rows = Effect.gen(function*() {
  const worker = yield* startWorker
  const next = receiver<unknown>(worker.echoPort)
  const out: Array<Row> = [
    { name: ECHO, unit: "round trip", bytesPerOp: PAYLOAD, baseline: true, measure: (ms) => Effect.promise(() => echoRoundTrips(worker.echoPort, next, ms)) },
    { name: ONE, unit: "payload", bytesPerOp: PAYLOAD, baseline: true, measure: (ms) => Effect.promise(() => oneWayMessages(worker.echoPort, next, 1, ms)) },
    { name: MANY, unit: "payload", bytesPerOp: PAYLOAD, baseline: true, measure: (ms) => Effect.promise(() => oneWayMessages(worker.echoPort, next, BATCH, ms)) }
  ]
  yield* serve(IN_THREAD_INSTANCE)
  const client = yield* Channel.open({
    role: "client",
    interfaceType: TYPE,
    interfaceInstance: IN_THREAD_INSTANCE,
    outgoingRingPages: 64,
    incomingRingPages: 64
  })
  for (const row of CHANNEL_ROWS) {
    out.push({ name: `in-thread ${row}`, unit: row.startsWith("request") ? "round trip" : "packet", bytesPerOp: PAYLOAD, compareTo: compareTo(row), measure: (ms) => measureRow(client, row, ms) })
  }
  for (const row of CHANNEL_ROWS) {
    out.push({ name: `worker ${row}`, unit: row.startsWith("request") ? "round trip" : "packet", bytesPerOp: PAYLOAD, compareTo: compareTo(row), measure: worker.measure(row) })
  }
  for (const row of SPIN_ROWS) {
    out.push({
      name: `worker ${row}, spin ${SPIN_MICROS} µs`,
      unit: row.startsWith("request") ? "round trip" : "packet",
      bytesPerOp: PAYLOAD,
      compareTo: compareTo(row),
      measure: worker.measure(row, true)
    })
  }
  return out
})

export const subject: Subject<Layer.Layer.Success<typeof InMemoryTransport.layer>> = {
  name: "sharedMemory",
  title: "a channel across a worker thread vs MessagePort",
  description: [
    `64-byte payloads. "worker": the client in a worker thread over SharedMemoryTransport; "in-thread": the same client in the host`,
    `thread over InMemoryTransport; servers echo. Baselines between the same two threads: a MessagePort echo, and one-way messages`,
    `carrying 1 or ${BATCH} payloads (a sync every ${WINDOW} payloads bounds the queue). Request rows compare to the echo, one-way rows`,
    `to 1 payload per message. "spin ${SPIN_MICROS} µs": both sides of the worker's connection poll their doorbells up to`,
    `${SPIN_MICROS} µs before parking (SharedMemoryTransport WaitOptions.spinMicros, adaptive).`
  ],
  rows,
  layer: InMemoryTransport.layer
}

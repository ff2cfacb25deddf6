// UioTransport against the emulated device: the guest here, the host emulator (the project's own
// server-role channel over the same mapped rings) in a child process. Baselines, same run and same two
// processes: a Unix SOCK_SEQPACKET ping-pong (waited for on the event loop with koffi.node.poll, as the
// transport waits) and one socket message per packet. Beside them: the in-memory transport (one
// process), and the transport without the channel layer (the bare ring code on UioTransport's endpoint,
// against the emulator's bare-ring host).
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as path from "node:path"
import * as Channel from "../src/Channel.js"
import * as InMemoryTransport from "../src/InMemoryTransport.js"
import type { Native } from "../src/internal/uio/native.js"
import { load } from "../src/internal/uio/native.js"
import * as Packet from "../src/Packet.js"
import * as Ring from "../src/Ring.js"
import * as Transport from "../src/Transport.js"
import { guestLayer, spawnEmulator } from "../test/utils/uio/emulator.js"
import { cpuSeconds, latencyRecorder, type Row, type Sample, type Subject } from "./harness.js"

const SIZE = 64
const BATCH = 64
const SOCKET_RT = "socket ping-pong (SEQPACKET, event loop)"
const SOCKET_ONE = "socket, one message per packet"

const sample = (ops: number, start: number, cpu0: number, latencies?: Float64Array): Sample => ({
  ops,
  seconds: (performance.now() - start) / 1000,
  cpuSeconds: cpuSeconds() - cpu0,
  latencies
})

// ---------------------------------------------------------------------------------------------
// Baselines: a SEQPACKET socket to the emulator's process
// ---------------------------------------------------------------------------------------------

const connect = (native: Native, file: string, mode: "E" | "C") =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const fd = native.socketSeqpacket()
      if (native.connect(fd, file) < 0 || native.writeFrom(fd, new TextEncoder().encode(mode)) !== 1) {
        throw new Error("cannot connect to the socket baseline")
      }
      return fd
    }),
    (fd) => Effect.sync(() => native.close(fd))
  )

/** Round trips waited for with koffi.node.poll (the fd is non-blocking from then on). */
const socketRoundTrips = (native: Native, fd: number, millis: number): Promise<Sample> =>
  new Promise((resolve) => {
    const payload = new Uint8Array(SIZE).fill(7)
    const answer = new Uint8Array(SIZE)
    const latencies = latencyRecorder()
    const cpu0 = cpuSeconds()
    const start = performance.now()
    const deadline = start + millis
    let ops = 0
    let sent = performance.now()
    const handle = native.poll(fd, () => {
      while (native.readInto(fd, answer) === SIZE) {
        const now = performance.now()
        latencies.record((now - sent) * 1000)
        ops++
        if (now >= deadline) {
          handle.stop()
          return resolve(sample(ops, start, cpu0, latencies.take()))
        }
        sent = now
        native.writeFrom(fd, payload)
      }
    })
    native.writeFrom(fd, payload)
  })

/** One blocking write per packet, then a 1-byte message the child answers with its count. */
const socketOneWay = (native: Native, fd: number, millis: number): Sample => {
  const payload = new Uint8Array(SIZE).fill(7)
  const cpu0 = cpuSeconds()
  const start = performance.now()
  const deadline = start + millis
  let ops = 0
  while (performance.now() < deadline) {
    for (let i = 0; i < BATCH; i++) {
      if (native.writeFrom(fd, payload) !== SIZE) throw new Error("socket baseline write failed")
    }
    ops += BATCH
  }
  const count = new Int32Array(1)
  native.writeFrom(fd, Uint8Array.of(0))
  if (native.readInto(fd, new Uint8Array(count.buffer)) !== 4 || count[0] !== ops) throw new Error("socket baseline lost messages")
  return sample(ops, start, cpu0)
}

// ---------------------------------------------------------------------------------------------
// Channels (uio and in-memory)
// ---------------------------------------------------------------------------------------------

const channelRoundTrips = (channel: Channel.OpenedChannel, millis: number) =>
  Effect.gen(function*() {
    const payload = new Uint8Array(SIZE).fill(7)
    const latencies = latencyRecorder()
    const cpu0 = cpuSeconds()
    const start = performance.now()
    const deadline = start + millis
    let ops = 0
    for (let now = start; now < deadline; ops++) {
      yield* channel.request(payload)
      const after = performance.now()
      latencies.record((after - now) * 1000)
      now = after
    }
    return sample(ops, start, cpu0, latencies.take())
  })

/** sendBatch until the deadline, then a request: its completion proves the peer read everything before it. */
const channelOneWay = (channel: Channel.OpenedChannel, millis: number) =>
  Effect.gen(function*() {
    const payload = new Uint8Array(SIZE).fill(7)
    const batch = Array.from({ length: BATCH }, () => payload)
    const cpu0 = cpuSeconds()
    const start = performance.now()
    const deadline = start + millis
    let ops = 0
    while (performance.now() < deadline) {
      yield* channel.sendBatch(batch)
      ops += BATCH
    }
    yield* channel.request(payload)
    return sample(ops, start, cpu0)
  })

// ---------------------------------------------------------------------------------------------
// The bare ring on UioTransport's endpoint
// ---------------------------------------------------------------------------------------------

const bareRing = (endpoint: Transport.Endpoint) => {
  const out = Ring.OutgoingRing.attach(endpoint.outgoing)
  const incoming = Ring.IncomingRing.attach(endpoint.incoming)
  if (!(out instanceof Ring.OutgoingRing) || !(incoming instanceof Ring.IncomingRing)) throw new Error("attach failed")
  const payload = new Uint8Array(SIZE).fill(7)
  let completed = 0n
  let waiter: { readonly until: bigint; readonly resolve: () => void } | undefined
  let spaceWaiter: (() => void) | undefined
  endpoint.onSignal(() => {
    for (;;) {
      incoming.mask()
      for (;;) {
        const packet = incoming.read()
        if (packet === undefined) break
        if (packet._tag === "Completion") completed = packet.transactionId
      }
      if (incoming.commit()) endpoint.signal()
      if (incoming.unmask() !== true) break
    }
    if (waiter !== undefined && completed >= waiter.until) {
      const w = waiter
      waiter = undefined
      w.resolve()
    }
    const s = spaceWaiter
    spaceWaiter = undefined
    s?.()
  })
  let tid = 0n
  const request = () =>
    new Promise<void>((resolve) => {
      tid++
      waiter = { until: tid, resolve }
      if (out.write(Packet.inBand(payload, { transactionId: tid, completionRequested: true })) !== undefined) throw new Error("ring full")
      if (out.commit()) endpoint.signal()
    })
  const waitForSpace = async () => {
    if (out.commit()) endpoint.signal()
    while (out.requestSpace(Packet.inBandRingSize(SIZE)) !== true) {
      await new Promise<void>((resolve) => {
        spaceWaiter = resolve
      })
    }
  }
  const oneWayPacket = Packet.inBand(payload)
  return {
    roundTrips: async (millis: number): Promise<Sample> => {
      const latencies = latencyRecorder()
      const cpu0 = cpuSeconds()
      const start = performance.now()
      const deadline = start + millis
      let ops = 0
      for (let now = start; now < deadline; ops++) {
        await request()
        const after = performance.now()
        latencies.record((after - now) * 1000)
        now = after
      }
      return sample(ops, start, cpu0, latencies.take())
    },
    oneWay: async (millis: number): Promise<Sample> => {
      const cpu0 = cpuSeconds()
      const start = performance.now()
      const deadline = start + millis
      let ops = 0
      while (performance.now() < deadline) {
        for (let j = 0; j < BATCH; j++) {
          while (out.write(oneWayPacket) !== undefined) await waitForSpace()
        }
        if (out.commit()) endpoint.signal()
        ops += BATCH
      }
      out.clearSpaceRequest()
      await request()
      return sample(ops, start, cpu0)
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The subject
// ---------------------------------------------------------------------------------------------

const rows = Effect.gen(function*() {
  const native = yield* load
  // The channel's host (and the socket baseline's other end): one child process.
  const emulator = yield* spawnEmulator({ profile: "6.18" })
  const file = path.join(emulator.root, "echo.sock")
  yield* emulator.command({ op: "socket", path: file })
  const echoFd = yield* connect(native, file, "E")
  const countFd = yield* connect(native, file, "C")
  const uioContext = yield* Layer.build(guestLayer(emulator))
  const uio = yield* Channel.open({ role: "client", interfaceType: emulator.classId, maxPacketSize: 4096 }).pipe(Effect.provide(uioContext))
  // The bare-ring host: a second child process.
  const ringEmulator = yield* spawnEmulator({ profile: "6.18", handler: "ring" })
  const ringContext = yield* Layer.build(guestLayer(ringEmulator))
  const endpoint = yield* Effect.flatMap(
    Effect.provide(Transport.Transport, ringContext),
    (transport) => transport.open({ interfaceType: ringEmulator.classId, outgoingRingPages: 0, incomingRingPages: 0 })
  )
  const ring = bareRing(endpoint)
  // The in-memory transport, both ends here.
  const memoryContext = yield* Layer.build(InMemoryTransport.layer)
  const type = "525074dc-8985-46e2-8057-a307dc18a502"
  const instance = "0d4c5a73-3c2b-4f5a-9a1e-7b6c5d4e3f21"
  yield* Effect.forkScoped(Effect.scoped(Effect.gen(function*() {
    const server = yield* Channel.open({ role: "server", interfaceType: type, interfaceInstance: instance, transactionQuota: 256 })
    yield* server.serve((packet) => Effect.succeed(packet.payload))
  })).pipe(Effect.provide(memoryContext)))
  const memory = yield* Channel.open({ role: "client", interfaceType: type, outgoingRingPages: 512, incomingRingPages: 512 }).pipe(
    Effect.provide(memoryContext)
  )
  const out: Array<Row> = [
    { name: SOCKET_RT, unit: "round trip", bytesPerOp: SIZE, baseline: true, measure: (ms) => Effect.promise(() => socketRoundTrips(native, echoFd, ms)) },
    { name: SOCKET_ONE, unit: "packet", bytesPerOp: SIZE, baseline: true, measure: (ms) => Effect.sync(() => socketOneWay(native, countFd, ms)) },
    { name: "uio channel request, not monitored (write(fd, 1))", unit: "round trip", bytesPerOp: SIZE, compareTo: SOCKET_RT, measure: (ms) => channelRoundTrips(uio, ms) },
    { name: "uio bare ring round trip", unit: "round trip", bytesPerOp: SIZE, compareTo: SOCKET_RT, measure: (ms) => Effect.promise(() => ring.roundTrips(ms)) },
    { name: "in-memory channel request (one process)", unit: "round trip", bytesPerOp: SIZE, compareTo: SOCKET_RT, measure: (ms) => channelRoundTrips(memory, ms) },
    { name: `uio channel sendBatch(${BATCH}) one-way`, unit: "packet", bytesPerOp: SIZE, compareTo: SOCKET_ONE, measure: (ms) => channelOneWay(uio, ms) },
    { name: `uio bare ring one-way, commits of ${BATCH}`, unit: "packet", bytesPerOp: SIZE, compareTo: SOCKET_ONE, measure: (ms) => Effect.promise(() => ring.oneWay(ms)) },
    { name: `in-memory sendBatch(${BATCH}) one-way`, unit: "packet", bytesPerOp: SIZE, compareTo: SOCKET_ONE, measure: (ms) => channelOneWay(memory, ms) }
  ]
  return out
})

export const subject: Subject = {
  name: "uio",
  title: "UioTransport on the emulated device (host in a child process) vs a Unix socket between the same processes",
  description: [
    `64-byte packets. Round trip: a request and its completion (the host echoes); the socket's is one SEQPACKET message`,
    `each way, waited for on the event loop with koffi.node.poll as the transport waits. One-way: guest → host in batches`,
    `of ${BATCH} (one publish, at most one signal each), ended by a request whose completion proves the host read all;`,
    `the socket's is one message (one write) per packet, counted by the child. The emulated doorbell is itself a socket`,
    `message each way, so no uio round trip here can beat the socket's: on a real device it is a hypercall and an interrupt.`
  ],
  rows,
  layer: Layer.empty
}

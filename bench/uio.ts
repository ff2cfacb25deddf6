// UioTransport against the emulated device: the guest here, the host emulator (the project's own
// server-role channel over the same mapped rings) in a child process. Beside it, in the same run: the
// in-memory transport (both ends in this process) and a plain Unix-socket ping-pong between the same two
// processes. Round trip = one 64-byte request and its completion; one-way = 64-byte packets, guest →
// host, in batches of 64 (`sendBatch`: one publish and at most one signal per batch), ended by a
// request whose completion proves the host read everything before it; the socket's one-way is one
// SEQPACKET message per packet, acknowledged once all arrived.
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as path from "node:path"
import * as Channel from "../src/Channel.js"
import * as InMemoryTransport from "../src/InMemoryTransport.js"
import * as Packet from "../src/Packet.js"
import * as Ring from "../src/Ring.js"
import * as Transport from "../src/Transport.js"
import { load } from "../src/internal/uio/native.js"
import { guestLayer, spawnEmulator } from "../test/utils/uio/emulator.js"

const SIZE = 64
const ROUND_TRIPS = 3000
const WARMUP = 300
const ONE_WAY = 64 * 1024
const BATCH = 64

interface Result {
  readonly p50: number
  readonly mean: number
  readonly oneWayPerSecond: number
}

const percentile = (sorted: ReadonlyArray<number>, p: number) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!

const summarize = (times: Array<number>, oneWayPerSecond: number): Result => {
  times.sort((a, b) => a - b)
  return { p50: percentile(times, 0.5), mean: times.reduce((a, b) => a + b, 0) / times.length, oneWayPerSecond }
}

const measureChannel = (channel: Channel.OpenedChannel) =>
  Effect.gen(function*() {
    const payload = new Uint8Array(SIZE).fill(7)
    for (let i = 0; i < WARMUP; i++) yield* channel.request(payload)
    const times: Array<number> = []
    for (let i = 0; i < ROUND_TRIPS; i++) {
      const start = performance.now()
      yield* channel.request(payload)
      times.push((performance.now() - start) * 1000)
    }
    const batch = Array.from({ length: BATCH }, () => payload)
    const start = performance.now()
    for (let i = 0; i < ONE_WAY / BATCH; i++) yield* channel.sendBatch(batch)
    yield* channel.request(payload)
    return summarize(times, ONE_WAY / ((performance.now() - start) / 1000))
  })

const uio = (monitored: boolean) =>
  Effect.gen(function*() {
    const emulator = yield* spawnEmulator({
      profile: "6.18",
      // The host spins on the monitor page only where it has one to watch.
      scan: monitored ? "spin" : "timer",
      spec: { ...(monitored ? { monitorId: 1 } : {}), ringSize: 2 * 1024 * 1024 }
    })
    const context = yield* Layer.build(guestLayer(emulator))
    const channel = yield* Channel.open({ role: "client", interfaceType: emulator.classId, maxPacketSize: 4096 }).pipe(
      Effect.provide(context)
    )
    return { emulator, result: yield* measureChannel(channel) }
  })

const inMemory = Effect.gen(function*() {
  const type = "525074dc-8985-46e2-8057-a307dc18a502"
  const instance = "0d4c5a73-3c2b-4f5a-9a1e-7b6c5d4e3f21"
  yield* Effect.forkScoped(Effect.scoped(Effect.gen(function*() {
    const server = yield* Channel.open({ role: "server", interfaceType: type, interfaceInstance: instance, transactionQuota: 256 })
    yield* server.serve((packet) => Effect.succeed(packet.payload))
  })))
  const client = yield* Channel.open({ role: "client", interfaceType: type, outgoingRingPages: 512, incomingRingPages: 512 })
  return yield* measureChannel(client)
}).pipe(Effect.scoped, Effect.provide(InMemoryTransport.layer))

/**
 * A plain Unix SOCK_SEQPACKET socket to the same child process (served on its event loop): one 64-byte
 * message each way per round trip, waited for here first with blocking reads (the floor), then on the
 * event loop with koffi.node.poll (as UioTransport waits); one-way, one message per packet.
 */
const socket = (emulator: { readonly root: string; readonly command: (c: any) => Effect.Effect<any> }) =>
  Effect.gen(function*() {
    const native = yield* load
    const file = path.join(emulator.root, "echo.sock")
    yield* emulator.command({ op: "socket", path: file })
    const fd = yield* Effect.acquireRelease(
      Effect.sync(() => {
        const fd = native.socketSeqpacket()
        if (native.connect(fd, file) < 0) throw new Error("cannot connect to the socket baseline")
        return fd
      }),
      (fd) => Effect.sync(() => native.close(fd))
    )
    const payload = new Uint8Array(SIZE).fill(7)
    const answer = new Uint8Array(SIZE)
    const exchange = () => {
      if (native.writeFrom(fd, payload) !== SIZE || native.readInto(fd, answer) !== SIZE) throw new Error("socket baseline failed")
    }
    for (let i = 0; i < WARMUP; i++) exchange()
    const times: Array<number> = []
    for (let i = 0; i < ROUND_TRIPS; i++) {
      const start = performance.now()
      exchange()
      times.push((performance.now() - start) * 1000)
    }
    yield* emulator.command({ op: "sink", messages: ONE_WAY })
    const start = performance.now()
    for (let i = 0; i < ONE_WAY; i++) {
      if (native.writeFrom(fd, payload) !== SIZE) throw new Error("socket baseline write failed")
    }
    if (native.readInto(fd, answer) !== 1) throw new Error("socket baseline: no acknowledgement")
    const blocking = summarize(times, ONE_WAY / ((performance.now() - start) / 1000))
    // Then the same ping-pong waiting on the event loop (koffi.node.poll), as the transport waits.
    const polled: Array<number> = []
    yield* Effect.promise(() =>
      new Promise<void>((resolve) => {
        let i = 0
        let start = 0
        const handle = native.poll(fd, () => {
          while (native.readInto(fd, answer) === SIZE) {
            polled.push((performance.now() - start) * 1000)
            if (++i === WARMUP + ROUND_TRIPS) {
              handle.stop()
              return resolve()
            }
            start = performance.now()
            native.writeFrom(fd, payload)
          }
        })
        start = performance.now()
        native.writeFrom(fd, payload)
      })
    )
    const eventLoop = summarize(polled.slice(WARMUP), 0)
    return { blocking, eventLoop: { ...eventLoop, oneWayPerSecond: blocking.oneWayPerSecond } }
  })

/**
 * The transport itself, without the channel layer: the bare ring code on the endpoint UioTransport
 * hands out (mapped rings, device-fd doorbell, koffi poll wake-ups), against the emulator's bare ring host.
 */
const measureRing = (endpoint: Transport.Endpoint): Promise<Result> => {
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
  /** Waits (for the host's pending-send-size signal) until a packet of `size` fits. */
  const waitForSpace = async () => {
    if (out.commit()) endpoint.signal()
    while (out.requestSpace(Packet.inBandRingSize(SIZE)) !== true) {
      await new Promise<void>((resolve) => {
        spaceWaiter = resolve
      })
    }
  }
  return (async () => {
    for (let i = 0; i < WARMUP; i++) await request()
    const times: Array<number> = []
    for (let i = 0; i < ROUND_TRIPS; i++) {
      const start = performance.now()
      await request()
      times.push((performance.now() - start) * 1000)
    }
    const oneWay = Packet.inBand(payload)
    const start = performance.now()
    for (let i = 0; i < ONE_WAY / BATCH; i++) {
      for (let j = 0; j < BATCH; j++) {
        while (out.write(oneWay) !== undefined) await waitForSpace()
      }
      if (out.commit()) endpoint.signal()
    }
    out.clearSpaceRequest()
    await request()
    return summarize(times, ONE_WAY / ((performance.now() - start) / 1000))
  })()
}

const uioRing = Effect.gen(function*() {
  const emulator = yield* spawnEmulator({ profile: "6.18", handler: "ring" })
  const context = yield* Layer.build(guestLayer(emulator))
  const transport = yield* Effect.provide(Transport.Transport, context)
  const endpoint = yield* transport.open({ interfaceType: emulator.classId, outgoingRingPages: 0, incomingRingPages: 0 })
  return yield* Effect.promise(() => measureRing(endpoint))
})

export async function run(): Promise<void> {
  const rows = await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const plain = yield* uio(false)
    const sockets = yield* socket(plain.emulator)
    const monitored = yield* uio(true)
    const memory = yield* inMemory
    const ring = yield* uioRing
    return { plain: plain.result, monitored: monitored.result, memory, sock: sockets.eventLoop, sockBlocking: sockets.blocking, ring }
  })))
  const fmt = (n: number, digits = 1) => n.toLocaleString("en-US", { maximumFractionDigits: digits })
  const row = (name: string, r: Result, oneWay: string) => ({
    subject: name,
    "round trip p50 µs": fmt(r.p50),
    "round trip mean µs": fmt(r.mean),
    "one-way": oneWay,
    "one-way packets/s": fmt(r.oneWayPerSecond, 0),
    "socket RT / this RT": (rows.sock.mean / r.mean).toFixed(2),
    "one-way vs socket": (r.oneWayPerSecond / rows.sock.oneWayPerSecond).toFixed(1) + "×"
  })
  console.log(`64-byte packets; ${ROUND_TRIPS} round trips, ${ONE_WAY} one-way packets; guest here, host in a child process`)
  console.table([
    row("uio channel, not monitored (write(fd,1))", rows.plain, `batches of ${BATCH}`),
    row("uio channel, monitored (monitor page)", rows.monitored, `batches of ${BATCH}`),
    row("in-memory (one process)", rows.memory, `batches of ${BATCH}`),
    row("uio, bare ring code, not monitored", rows.ring, `commits of ${BATCH}`),
    row("Unix socket ping-pong, event loop (koffi poll)", rows.sock, "one message per packet"),
    row("Unix socket ping-pong, blocking read", rows.sockBlocking, "one message per packet")
  ])
}

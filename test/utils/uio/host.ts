// The host emulator (native-transport.md §5.2), run in a CHILD PROCESS: it plays the Hyper-V host and
// the kernel's uio_hv_generic for one device. It writes the sysfs-shaped tree and map files, listens on
// `{root}/dev/uio0` (AF_UNIX SOCK_SEQPACKET: each connection is one open of /dev/uioN), and runs the
// project's own server-role Channel over the same mapped rings. Kernel behaviour follows a profile:
//   6.18 — never masks; write(fd, v) sets every RX mask to !v and signals every non-monitored channel
//   6.16 — as 6.18, and masks RX on each interrupt
//   6.10 — masks RX on each interrupt; write(fd, v) covers the primary only; a sub-channel interrupt
//          would crash the kernel: counted as `crashes` (a test asserts 0)
// Guest→host signals: a 4-byte message (non-monitored), or the monitor-page trigger bit (monitored,
// scanned on a timer or spinning). Commands and answers travel over the IPC channel.
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"
import * as fs from "node:fs"
import * as path from "node:path"
import * as Channel from "../../../src/Channel.js"
import * as Transport from "../../../src/Transport.js"
import * as L from "../../../src/internal/layout.js"
import type { MappedRegion } from "../../../src/internal/uio/mapping.js"
import { mapFd } from "../../../src/internal/uio/backend.js"
import type { Native, PollHandle } from "../../../src/internal/uio/native.js"
import { load, O_CLOEXEC, O_RDWR } from "../../../src/internal/uio/native.js"
import * as Packet from "../../../src/Packet.js"
import * as Ring from "../../../src/Ring.js"
import type { CloseReason } from "../../../src/VmbusError.js"
import { Unsupported } from "../../../src/VmbusError.js"
import type { DeviceSpec } from "./tree.js"
import { deviceDir, devRoot, mapFile, writeSubChannel, writeTree } from "./tree.js"

export type Profile = "6.18" | "6.16" | "6.10"

export interface SubChannelSpec {
  readonly index: number
  readonly relid: number
  readonly monitorId?: number | undefined
  /** The `ring` file appears this long after the device opens (the kernel's race, §1.2). */
  readonly delayMillis?: number | undefined
}

export interface StartCommand {
  readonly op: "start"
  readonly spec: DeviceSpec
  readonly profile: Profile
  readonly subChannels?: ReadonlyArray<SubChannelSpec> | undefined
  /** Close each connection at once instead of opening the channel (the host refused). */
  readonly refuseOpen?: boolean | undefined
  /** Monitored scan: "timer" (1 ms) or "spin" (setImmediate; benchmarks). */
  readonly scan?: "timer" | "spin" | undefined
  /**
   * Server: "echo" answers each request with its payload through the project's server-role Channel;
   * "ring" does the same with the bare ring code (no Effect), for measuring the transport itself.
   */
  readonly handler?: "echo" | "ring" | undefined
}

export type Command =
  | StartCommand
  | { readonly op: "rescind" }
  | { readonly op: "scribble" }
  | { readonly op: "corrupt"; readonly index?: number | undefined }
  | { readonly op: "push"; readonly index?: number | undefined; readonly count: number; readonly size: number }
  | { readonly op: "stats" }
  /** The host stops reading the guest's ring (its channel pauses) / reads again. */
  | { readonly op: "pause" }
  | { readonly op: "resume" }
  /** A plain Unix SEQPACKET socket between the same two processes (the benchmark's baseline). */
  | { readonly op: "socket"; readonly path: string }

export interface ChannelStatsReport {
  readonly index: number
  readonly relid: number
  readonly guestSignals: number
  readonly hostSignals: number
  readonly packetsReceived: number
  readonly packetsSent: number
}

export interface HostStats {
  readonly connections: number
  readonly opens: number
  readonly closes: number
  readonly irqWrites: number
  readonly events: number
  /** int_page bits the guest set for non-monitored channels (it must not: the kernel does). */
  readonly spuriousIntBits: number
  readonly crashes: number
  readonly state: string
  readonly channels: ReadonlyArray<ChannelStatsReport>
}

interface HostChannel {
  readonly index: number
  readonly relid: number
  readonly monitorId: number | undefined
  readonly region: MappedRegion
  readonly rxControl: Uint32Array
  scope: Scope.CloseableScope | undefined
  channel: Channel.OpenedChannel | undefined
  signalCallback: (() => void) | undefined
  pendingSignal: boolean
  peerClose: ((reason: CloseReason) => void) | undefined
  guestSignals: number
  hostSignals: number
}

let native: Native
let start: StartCommand
let root = ""
let listener = -1
let listenerPoll: PollHandle | undefined
const connections = new Map<number, PollHandle>()
let channels: Array<HostChannel> = []
let intPage: Int32Array
let monitorPage: Int32Array
const counts = { opens: 0, closes: 0, irqWrites: 0, events: 0, spuriousIntBits: 0, crashes: 0 }
let scanning = false
const word = new Int32Array(1)

const send = (message: unknown): void => {
  process.send?.(message)
}

const mapPath = (file: string, size: number): MappedRegion => {
  const fd = native.open(file, O_RDWR | O_CLOEXEC)
  if (fd < 0) throw new Error(`open ${file}: errno ${-fd}`)
  const region = mapFd(native, file, fd, size, 0)
  native.close(fd)
  if (typeof region === "number") throw new Error(`mmap ${file}: errno ${-region}`)
  return region
}

const control = (bytes: Uint8Array): Uint32Array => new Uint32Array(bytes.buffer, bytes.byteOffset, 32)

/** hv_ringbuffer_init at open: indices 0, feature bit set; mask and pending_send_sz untouched. */
const resetRings = (region: MappedRegion): void => {
  const half = region.bytes.byteLength / 2
  for (const offset of [0, half]) {
    const c = control(region.bytes.subarray(offset))
    Atomics.store(c, L.WRITE_INDEX_WORD, 0)
    Atomics.store(c, L.READ_INDEX_WORD, 0)
    Atomics.store(c, L.FEATURE_BITS_WORD, 1)
  }
}

const writeState = (value: number): void => {
  fs.writeFileSync(path.join(deviceDir(root, start.spec.instance), "state"), `${value}\n`)
}

/** uio_event_notify: one more event, its count sent to every listener. */
const interrupt = (ch: HostChannel): void => {
  if (start.profile === "6.10" && ch.index > 0) {
    counts.crashes++
    return
  }
  if (start.profile !== "6.18") Atomics.store(ch.rxControl, L.INTERRUPT_MASK_WORD, 1)
  ch.hostSignals++
  counts.events++
  for (const fd of connections.keys()) native.write4(fd, counts.events)
}

const wake = (ch: HostChannel): void => {
  ch.guestSignals++
  if (ch.signalCallback === undefined) ch.pendingSignal = true
  else ch.signalCallback()
}

/** hv_uio_irqcontrol(value) for the profile. */
const irqControl = (value: number): void => {
  counts.irqWrites++
  const covered = start.profile === "6.10" ? channels.slice(0, 1) : channels
  for (const ch of covered) {
    Atomics.store(ch.rxControl, L.INTERRUPT_MASK_WORD, value === 0 ? 1 : 0)
    if (value !== 0 && ch.monitorId === undefined) wake(ch)
  }
}

const scan = (): void => {
  if (!scanning) return
  for (const ch of channels) {
    const intWord = 512 + (ch.relid >>> 5)
    const intBit = 1 << (ch.relid & 31)
    const intSet = (Atomics.and(intPage, intWord, ~intBit) & intBit) !== 0
    if (ch.monitorId === undefined) {
      if (intSet) counts.spuriousIntBits++
      continue
    }
    const monitorWord = 2 + 2 * (ch.monitorId >>> 5)
    const monitorBit = 1 << (ch.monitorId & 31)
    if ((Atomics.and(monitorPage, monitorWord, ~monitorBit) & monitorBit) !== 0) wake(ch)
  }
  if (start.scan === "spin") setImmediate(scan)
  else setTimeout(scan, 1)
}

const hostTransport = (ch: HostChannel): Transport.TransportShape => {
  const half = ch.region.bytes.byteLength / 2
  const endpoint: Transport.Endpoint = {
    role: "server",
    identity: { interfaceType: start.spec.classId!, interfaceInstance: start.spec.instance!, subChannelIndex: ch.index },
    childRelid: ch.relid,
    outgoing: ch.region.bytes.subarray(half),
    incoming: ch.region.bytes.subarray(0, half),
    signal: () => interrupt(ch),
    onSignal: (callback) => {
      ch.signalCallback = callback
      if (ch.pendingSignal) {
        ch.pendingSignal = false
        callback()
      }
    },
    onPeerClose: (callback) => {
      ch.peerClose = callback
    },
    counters: { signalsSent: 0, signalsReceived: 0, outstandingTransactions: 0, outstandingPackets: 0 },
    memory: undefined,
    createGpadl: undefined,
    mapGpadl: undefined
  }
  return {
    name: "uio-emulator-host",
    capabilities: { ringGeometry: true, serverRole: true, gpadl: false },
    offer: (identity) => Effect.succeed({ identity, childRelid: ch.relid, accept: Effect.succeed(endpoint) }),
    open: () => Effect.fail(new Unsupported({ capability: "clientRole" }))
  }
}

/** The bare ring code as the host: drain the guest's TX, complete requests with their payload. */
const serveRing = (ch: HostChannel): void => {
  const half = ch.region.bytes.byteLength / 2
  const incoming = Ring.IncomingRing.attach(ch.region.bytes.subarray(0, half))
  const outgoing = Ring.OutgoingRing.attach(ch.region.bytes.subarray(half))
  if (!(incoming instanceof Ring.IncomingRing) || !(outgoing instanceof Ring.OutgoingRing)) throw new Error("ring attach failed")
  const drain = (): void => {
    for (;;) {
      incoming.mask()
      for (;;) {
        const packet = incoming.read()
        if (packet === undefined) break
        if (packet._tag !== "InBand") throw new Error(`ring host: ${packet._tag}`)
        if (packet.completionRequested) {
          if (outgoing.write(Packet.completion(packet.transactionId, packet.payload)) !== undefined) throw new Error("ring host: reply ring full")
        }
      }
      if (outgoing.commit()) interrupt(ch)
      if (incoming.commit()) interrupt(ch)
      if (incoming.unmask() !== true) return
    }
  }
  ch.signalCallback = drain
  ch.peerClose = () => {
    ch.signalCallback = undefined
  }
  drain()
}

/** Runs the project's server-role channel on one channel's rings until the guest closes the device. */
const serveChannel = (ch: HostChannel): Promise<void> =>
  start.handler === "ring" ? Promise.resolve(serveRing(ch)) : Effect.runPromise(Effect.gen(function*() {
    const scope = yield* Scope.make()
    ch.scope = scope
    const channel = yield* Channel.open({
      role: "server",
      interfaceType: start.spec.classId!,
      interfaceInstance: start.spec.instance!,
      // What a ring of this size can carry (small rings in back-pressure tests).
      maxPacketSize: Math.min(64 * 1024, ch.region.bytes.byteLength / 2 - 4096 - 64)
    }).pipe(Effect.provideService(Transport.Transport, hostTransport(ch)), Scope.extend(scope))
    ch.channel = channel
    const handler = start.handler ?? "echo"
    yield* Effect.forkIn(
      channel.serve((packet) => Effect.succeed(handler === "echo" ? packet.payload : undefined)).pipe(Effect.ignore),
      scope
    )
  }))

const openChannels = async (): Promise<void> => {
  counts.opens++
  for (const ch of channels) resetRings(ch.region)
  writeState(3)
  await Promise.all(channels.map(serveChannel))
}

const closeChannels = async (reason: CloseReason): Promise<void> => {
  counts.closes++
  for (const ch of channels) ch.peerClose?.(reason)
  await Promise.all(channels.map((ch) => ch.scope === undefined ? Promise.resolve() : Effect.runPromise(Scope.close(ch.scope, Exit.void))))
  for (const ch of channels) {
    ch.scope = undefined
    ch.channel = undefined
    ch.signalCallback = undefined
    ch.peerClose = undefined
    ch.pendingSignal = false
  }
  // The kernel frees sub-channel rings at the last close (§1.5).
  for (const ch of channels.slice(1)) {
    ch.region.revoke()
    fs.rmSync(path.dirname(path.join(deviceDir(root, start.spec.instance), "channels", String(ch.relid), "ring")), {
      recursive: true,
      force: true
    })
  }
  channels = channels.slice(0, 1)
  if (fs.existsSync(deviceDir(root, start.spec.instance))) writeState(2)
}

const addSubChannels = async (): Promise<void> => {
  for (const sub of start.subChannels ?? []) {
    if (sub.delayMillis !== undefined) await new Promise((resolve) => setTimeout(resolve, sub.delayMillis))
    const ring = writeSubChannel(root, sub.relid, sub.index, 2 * 1024 * 1024, sub.monitorId, start.spec.instance)
    const region = mapPath(ring, 4 * 1024 * 1024)
    resetRings(region)
    // Before 6.18 the kernel masks a new sub-channel's RX (hv_uio_new_channel).
    const rxControl = control(region.bytes.subarray(region.bytes.byteLength / 2))
    if (start.profile !== "6.18") Atomics.store(rxControl, L.INTERRUPT_MASK_WORD, 1)
    const ch: HostChannel = {
      index: sub.index,
      relid: sub.relid,
      monitorId: sub.monitorId,
      region,
      rxControl,
      scope: undefined,
      channel: undefined,
      signalCallback: undefined,
      pendingSignal: false,
      peerClose: undefined,
      guestSignals: 0,
      hostSignals: 0
    }
    channels.push(ch)
    await serveChannel(ch)
  }
}

const dropConnection = (fd: number): void => {
  const handle = connections.get(fd)
  if (handle === undefined) return
  handle.stop()
  connections.delete(fd)
  native.close(fd)
  if (connections.size === 0) void closeChannels("PeerClose")
}

const onConnection = (fd: number) => (status: number): void => {
  if (status < 0) return dropConnection(fd)
  for (;;) {
    const n = native.read4(fd, word)
    if (n === 4) {
      irqControl(word[0]!)
      continue
    }
    if (n === 0 || (n < 0 && n !== -11 && n !== -4)) return dropConnection(fd)
    return
  }
}

const accept = (): void => {
  for (;;) {
    const fd = native.accept(listener)
    if (fd < 0) return
    if (start.refuseOpen === true) {
      native.close(fd)
      continue
    }
    const first = connections.size === 0
    connections.set(fd, native.poll(fd, onConnection(fd)))
    const ready = first ? openChannels().then(() => void addSubChannels()) : Promise.resolve()
    void ready.then(() => {
      // The real open() returns once the channel is open: the emulated backend waits for this word.
      if (connections.has(fd)) native.write4(fd, counts.events)
    })
  }
}

const startDevice = async (command: StartCommand): Promise<void> => {
  start = command
  root = command.spec.root
  native = await Effect.runPromise(load)
  const spec = { ...command.spec, classId: command.spec.classId!, instance: command.spec.instance! }
  writeTree(spec)
  const ringSize = command.spec.ringSize ?? 2 * 1024 * 1024
  const region = mapPath(mapFile(root, 0), 2 * ringSize)
  intPage = new Int32Array(mapPath(mapFile(root, 1), 4096).bytes.buffer)
  monitorPage = new Int32Array(mapPath(mapFile(root, 2), 4096).bytes.buffer)
  channels = [{
    index: 0,
    relid: command.spec.relid ?? 14,
    monitorId: command.spec.monitorId,
    region,
    rxControl: control(region.bytes.subarray(ringSize)),
    scope: undefined,
    channel: undefined,
    signalCallback: undefined,
    pendingSignal: false,
    peerClose: undefined,
    guestSignals: 0,
    hostSignals: 0
  }]
  listener = native.socketSeqpacket()
  const socketPath = path.join(devRoot(root), "uio0")
  if (native.bind(listener, socketPath) < 0 || native.listen(listener, 16) < 0) throw new Error(`cannot listen on ${socketPath}`)
  listenerPoll = native.poll(listener, accept)
  scanning = true
  scan()
}

/** hv_uio_rescind: every listener sees the end, the device directory and node disappear. */
const rescind = async (): Promise<void> => {
  scanning = false
  listenerPoll?.stop()
  native.close(listener)
  for (const fd of [...connections.keys()]) {
    connections.get(fd)!.stop()
    connections.delete(fd)
    native.close(fd)
  }
  fs.rmSync(deviceDir(root, start.spec.instance), { recursive: true, force: true })
  fs.rmSync(path.join(devRoot(root), "uio0"), { force: true })
  await closeChannels("Rescinded")
}

const stats = (): HostStats => ({
  connections: connections.size,
  ...counts,
  state: fs.existsSync(deviceDir(root, start.spec.instance))
    ? fs.readFileSync(path.join(deviceDir(root, start.spec.instance), "state"), "utf8").trim()
    : "gone",
  channels: channels.map((ch) => ({
    index: ch.index,
    relid: ch.relid,
    guestSignals: ch.guestSignals,
    hostSignals: ch.hostSignals,
    packetsReceived: ch.channel === undefined ? 0 : Effect.runSync(ch.channel.stats).packetsReceived,
    packetsSent: ch.channel === undefined ? 0 : Effect.runSync(ch.channel.stats).packetsSent
  }))
})

const handle = async (command: Command): Promise<unknown> => {
  switch (command.op) {
    case "start":
      await startDevice(command)
      return { ok: true }
    case "rescind":
      await rescind()
      return { ok: true }
    case "scribble": {
      // After a rescind the kernel may reuse the pages: the guest must not see this.
      for (let i = 0; i < 3; i++) fs.writeFileSync(mapFile(root, i), Buffer.alloc(fs.statSync(mapFile(root, i)).size, 0xff))
      return { ok: true }
    }
    case "corrupt": {
      const ch = channels[command.index ?? 0]!
      const rx = control(ch.region.bytes.subarray(ch.region.bytes.byteLength / 2))
      Atomics.store(rx, L.WRITE_INDEX_WORD, 12) // misaligned: RingCorrupt on the guest's next read
      interrupt(ch)
      return { ok: true }
    }
    case "push": {
      const channel = channels[command.index ?? 0]?.channel
      if (channel === undefined) return { ok: false }
      const payload = new Uint8Array(command.size).fill(0x5a)
      await Effect.runPromise(Effect.forEach(Array.from({ length: command.count }), () => channel.send(payload), { discard: true }))
      return { ok: true }
    }
    case "stats":
      return stats()
    case "pause":
    case "resume": {
      const channel = channels[0]?.channel
      if (channel === undefined) return { ok: false }
      await Effect.runPromise(Effect.ignore(command.op === "pause" ? channel.pause : channel.start))
      return { ok: true }
    }
    case "socket": {
      // SOCK_SEQPACKET: every write is one message, every read one message (no coalescing). A
      // connection's first message picks its mode: "E" echoes every message; "C" counts them and
      // answers a 1-byte message with the count since the last one (4 bytes).
      const server = native.socketSeqpacket()
      if (native.bind(server, command.path) < 0 || native.listen(server, 4) < 0) throw new Error("socket baseline: cannot listen")
      const message = new Uint8Array(65536)
      native.poll(server, () => {
        const fd = native.accept(server)
        if (fd < 0) return
        let mode = 0
        let count = 0
        const handle = native.poll(fd, () => {
          for (;;) {
            const n = native.readInto(fd, message)
            if (n <= 0) {
              if (n === 0 || (n !== -11 && n !== -4)) {
                handle.stop()
                native.close(fd)
              }
              return
            }
            if (mode === 0) mode = message[0]!
            else if (mode === 0x45) native.writeFrom(fd, message.subarray(0, n))
            else if (n > 1) count++
            else {
              native.writeFrom(fd, new Uint8Array(Int32Array.of(count).buffer))
              count = 0
            }
          }
        })
      })
      return { ok: true }
    }
  }
}

process.on("message", (message: { readonly id: number; readonly command: Command }) => {
  handle(message.command).then(
    (result) => send({ id: message.id, result }),
    (error) => send({ id: message.id, error: String(error instanceof Error ? error.stack : error) })
  )
})
process.on("disconnect", () => process.exit(0))
send({ ready: true })

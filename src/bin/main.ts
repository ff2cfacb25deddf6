/**
 * The effect-vmbus command line. `npm start` runs an integration-services session between the
 * simulated Hyper-V host and the guest services over the in-memory transport; `ring` demonstrates the
 * ring itself (writes, reads, signal decisions).
 */
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Clock from "effect/Clock"
import * as Console from "effect/Console"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import * as InMemoryTransport from "../InMemoryTransport.js"
import * as IntegrationServices from "../IntegrationServices.js"
import * as Packet from "../Packet.js"
import * as Ring from "../Ring.js"
import { devices, doctor } from "./devices.js"

const hex = (bytes: Uint8Array): string =>
  Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(" ").replace(/(.{23}) /g, "$1  ")

const percentile = (sorted: ReadonlyArray<number>, p: number): number =>
  sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!

// ---------------------------------------------------------------------------------------------
// The integration-services session
// ---------------------------------------------------------------------------------------------

const session = (options: { readonly heartbeats: number; readonly intervalMillis: number; readonly samples: number }) =>
  Effect.gen(function*() {
    const start = yield* Clock.currentTimeMillis
    const log = (who: string, text: string) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        Console.log(`${String(now - start).padStart(6)} ms  ${who.padEnd(5)}  ${text}`))

    yield* log("", "opening the heartbeat, shutdown, timesync and KVP channels over the in-memory transport")
    let shutdownRan = false
    const [host, guest] = yield* Effect.all([
      IntegrationServices.host(),
      IntegrationServices.guest({
        onShutdown: (request) =>
          Effect.zipRight(
            log("guest", `shutdown acknowledged; running the shutdown effect (${request.kind}, force=${request.force})`),
            Effect.sync(() => {
              shutdownRan = true
            })
          )
      })
    ], { concurrency: 2 })
    for (const [service, negotiation] of host.negotiated) {
      yield* log(
        "host",
        `negotiated ${service.padEnd(9)} framework ${negotiation.framework.major}.${negotiation.framework.minor}, ` +
          `message ${negotiation.message.major}.${negotiation.message.minor}`
      )
    }

    // Time samples, as the guest sees them.
    const sampleFiber = yield* guest.timeSamples.pipe(
      Stream.take(options.samples),
      Stream.runForEach((sample) =>
        log(
          "guest",
          `time sample: host ${new Date(sample.hostTimeMillis).toISOString()}, offset ${sample.offsetMillis.toFixed(1)} ms`
        )
      ),
      Effect.fork
    )

    yield* log("host", `sending ${options.heartbeats} heartbeats, one every ${options.intervalMillis} ms`)
    for (let i = 0; i < options.heartbeats; i++) {
      const answer = yield* host.heartbeat
      if (i === 0 || i === options.heartbeats - 1) yield* log("host", `heartbeat ${i + 1}: guest answered ${answer}`)
      yield* Effect.sleep(Duration.millis(options.intervalMillis))
    }

    for (let i = 0; i < options.samples; i++) {
      const now = yield* Clock.currentTimeMillis
      // Pretend the host clock runs 250 ms ahead of the guest's.
      yield* host.sendTimeSample({ hostTimeMillis: now + 250, flags: i === 0 ? 1 : 2 })
    }
    yield* Fiber.join(sampleFiber)

    yield* log("host", "KVP: set VirtualMachineName, HostName and a UTF-16 key in the external pool")
    yield* host.kvpSet(0, "VirtualMachineName", "effect-vmbus-demo")
    yield* host.kvpSet(0, "HostName", "hyperv-host-01")
    yield* host.kvpSet(0, "Ünïcødé ключ 🔑", "värde ✓")
    const name = yield* host.kvpGet(0, "VirtualMachineName")
    yield* log("host", `KVP get VirtualMachineName → ${Option.getOrElse(name, () => "(missing)")}`)
    const entries = yield* host.kvpEnumerate(0)
    yield* log("host", `KVP enumerate pool 0 → ${entries.map((e) => `${e.key}=${e.value}`).join(", ")}`)
    const deleted = yield* host.kvpDelete(0, "HostName")
    yield* log("host", `KVP delete HostName → ${deleted ? "deleted" : "not found"}`)
    const missing = yield* host.kvpGet(0, "HostName")
    yield* log("host", `KVP get HostName → ${Option.isNone(missing) ? "not found (HV_S_CONT)" : missing.value}`)

    yield* log("host", "requesting a shutdown")
    const status = yield* host.shutdown({ reasonCode: 0x8000_0000, timeoutSeconds: 30 })
    yield* log("host", `guest answered the shutdown request with status 0x${status.toString(16).padStart(8, "0")}`)
    const request = yield* guest.shutdownRequested
    yield* Effect.yieldNow()

    // Summary.
    const channels = [...host.channels.values(), ...guest.channels.values()]
    const totals = { packetsSent: 0, packetsReceived: 0, bytesSent: 0, completionsSent: 0, signalsSent: 0, ringFullWaits: 0 }
    for (const channel of channels) {
      const stats = yield* channel.stats
      totals.packetsSent += stats.packetsSent
      totals.packetsReceived += stats.packetsReceived
      totals.bytesSent += stats.bytesSent
      totals.completionsSent += stats.completionsSent
      totals.signalsSent += stats.signalsSent
      totals.ringFullWaits += stats.ringFullWaits
    }
    const replies = yield* host.replies
    const latencies = replies.map((r) => r.roundTripMillis * 1000).sort((a, b) => a - b)
    const guestStats = yield* guest.stats
    const control = yield* InMemoryTransport.Control
    const transport = yield* control.stats
    yield* Console.log("")
    yield* Console.log("summary")
    yield* Console.log(`  channels open             ${transport.openChannels} (4 services)`)
    yield* Console.log(`  control messages          ${transport.messagesToHost} guest→host, ${transport.messagesToGuest} host→guest`)
    yield* Console.log(`  packets                   ${totals.packetsSent} sent, ${totals.packetsReceived} received, ${totals.bytesSent} payload bytes`)
    yield* Console.log(`  completions sent          ${totals.completionsSent} (IC answers are in-band packets, not completions)`)
    yield* Console.log(`  signals                   ${totals.signalsSent} (${(totals.signalsSent / Math.max(1, totals.packetsSent)).toFixed(2)} per packet)`)
    yield* Console.log(
      `  guest handled             ${guestStats.heartbeats} heartbeats, ${guestStats.timeSamples} time samples, ` +
        `${guestStats.kvpOperations} KVP operations, ${guestStats.shutdowns} shutdown, ${guestStats.malformed} malformed`
    )
    yield* Console.log(
      `  round trip (host→guest)   ${replies.length} requests, p50 ${percentile(latencies, 50).toFixed(0)} µs, ` +
        `p99 ${percentile(latencies, 99).toFixed(0)} µs, max ${(latencies[latencies.length - 1] ?? 0).toFixed(0)} µs`
    )
    yield* Console.log(`  shutdown                  ${request.kind}, effect ran: ${shutdownRan}`)
  }).pipe(Effect.scoped, Effect.provide(InMemoryTransport.layer))

// ---------------------------------------------------------------------------------------------
// The ring demonstration
// ---------------------------------------------------------------------------------------------

const ringDemo = Effect.gen(function*() {
  const region = Ring.allocate(8192, { shared: true })
  if (!(region instanceof Uint8Array)) return yield* Effect.fail(region)
  const writer = Ring.OutgoingRing.attach(region)
  const reader = Ring.IncomingRing.attach(region)
  if (!(writer instanceof Ring.OutgoingRing) || !(reader instanceof Ring.IncomingRing)) return
  const show = (label: string) => {
    const c = Ring.inspect(region)
    return Console.log(
      `${label.padEnd(44)} write_index 0x${"writeIndex" in c ? c.writeIndex.toString(16) : "?"}  read_index 0x${
        "readIndex" in c ? c.readIndex.toString(16) : "?"
      }  mask ${"interruptMask" in c ? c.interruptMask : "?"}  pending_send_sz ${"pendingSendSize" in c ? c.pendingSendSize : "?"}`
    )
  }
  yield* Console.log("A 4 KiB-data ring (8 KiB with its control page), written and read in this process.\n")
  yield* show("initialised")
  writer.write(Packet.inBand(new Uint8Array([1, 2, 3, 4, 5]), { transactionId: 0x1122334455667788n, completionRequested: true }))
  const signal1 = writer.commit()
  yield* show("wrote TV1 (in-band, 5 bytes, completion requested)")
  yield* Console.log(`  bytes at data+0x00: ${hex(region.subarray(4096, 4096 + 32))}`)
  yield* Console.log(`  signal the reader? ${signal1} (ring went empty → non-empty with the mask clear)`)
  writer.write(Packet.inBand(new Uint8Array(100)))
  yield* Console.log(`  a second commit while unread data is pending: signal? ${writer.commit()}`)
  reader.mask()
  const first = reader.read()
  const second = reader.read()
  yield* Console.log(
    `  reader got ${[first, second].map((p) => (p && "_tag" in p ? `${p._tag}(${"payload" in p ? p.payload.length : 0} bytes)` : String(p))).join(", ")}`
  )
  yield* Console.log(`  reader commit: signal the writer? ${reader.commit()} (no pending_send_sz request)`)
  yield* show("after reading both")
  yield* Console.log(`  unmask and re-check: data waiting? ${reader.unmask()}`)
  // Fill the ring to show the never-full rule and the pending-send-size protocol.
  let written = 0
  for (;;) {
    const result = writer.write(Packet.inBand(new Uint8Array(1000)))
    if (result !== undefined) {
      yield* Console.log(`  wrote ${written} × 1000-byte packets, then: ${result.message}`)
      break
    }
    written++
  }
  writer.commit()
  const fits = writer.requestSpace(Packet.inBandRingSize(1000))
  yield* show(`writer asks for space (fits now: ${fits})`)
  reader.read()
  yield* Console.log(`  reader frees one packet: signal the writer? ${reader.commit()}`)
  reader.read()
  yield* Console.log(`  reader frees another: signal the writer? ${reader.commit()} (threshold crossed once)`)
  writer.clearSpaceRequest()
  yield* show("writer withdraws its request")
})

// ---------------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------------

const heartbeats = Options.integer("heartbeats").pipe(Options.withDefault(20), Options.withDescription("heartbeats to send"))
const interval = Options.integer("interval-ms").pipe(Options.withDefault(50), Options.withDescription("milliseconds between heartbeats"))
const samples = Options.integer("time-samples").pipe(Options.withDefault(3), Options.withDescription("time samples to send"))

const demo = Command.make("demo", { heartbeats, interval, samples }, (o) =>
  session({ heartbeats: o.heartbeats, intervalMillis: o.interval, samples: o.samples })).pipe(
    Command.withDescription("an integration-services session between a simulated Hyper-V host and the guest services")
  )

const ring = Command.make("ring", {}, () => ringDemo).pipe(
  Command.withDescription("writes and reads a ring, showing the bytes and the signal decisions")
)

const root = Command.make("effect-vmbus", { heartbeats, interval, samples }, (o) =>
  session({ heartbeats: o.heartbeats, intervalMillis: o.interval, samples: o.samples })).pipe(
    Command.withSubcommands([demo, ring, devices, doctor])
  )

const cli = Command.run(root, { name: "effect-vmbus", version: "0.1.0" })

cli(process.argv).pipe(Effect.provide(NodeContext.layer), NodeRuntime.runMain({ disableErrorReporting: false }))

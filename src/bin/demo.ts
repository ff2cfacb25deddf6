/**
 * The `demo` command: an integration-services session between the simulated Hyper-V host and the
 * guest services over the in-memory transport. However the session ends (done, failed, Ctrl-C),
 * the summary of what happened so far is printed while the channels are still open.
 */
import * as Clock from "effect/Clock"
import * as Console from "effect/Console"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import * as InMemoryTransport from "../InMemoryTransport.js"
import * as IntegrationServices from "../IntegrationServices.js"
import * as Progress from "./progress.js"

export interface DemoOptions {
  readonly heartbeats: number
  readonly intervalMillis: number
  readonly samples: number
  /** Between two progress lines when stderr is not a terminal. */
  readonly progressMillis: number
}

const percentile = (sorted: ReadonlyArray<number>, p: number): number =>
  sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!

/** What the session has done so far: the summary reads it, whenever the session ends. */
interface State {
  phase: string
  heartbeatsAnswered: number
  host: IntegrationServices.HostServices | undefined
  guest: IntegrationServices.GuestServices | undefined
  shutdown: IntegrationServices.ShutdownRequest | undefined
  shutdownRan: boolean
}

const summary = (state: State, options: DemoOptions, exit: Exit.Exit<unknown, unknown>) =>
  Effect.gen(function*() {
    const { guest, host } = state
    yield* Console.log("")
    if (Exit.isSuccess(exit)) yield* Console.log("summary")
    else {
      const how = Exit.isInterrupted(exit) ? "interrupted" : "failed"
      yield* Console.log(`summary so far (${how} while ${state.phase})`)
    }
    if (host === undefined || guest === undefined) {
      yield* Console.log("  no channel was open yet")
      return
    }
    const channels = [...host.channels.values(), ...guest.channels.values()]
    const totals = { packetsSent: 0, packetsReceived: 0, bytesSent: 0, completionsSent: 0, signalsSent: 0 }
    for (const channel of channels) {
      const stats = yield* channel.stats
      totals.packetsSent += stats.packetsSent
      totals.packetsReceived += stats.packetsReceived
      totals.bytesSent += stats.bytesSent
      totals.completionsSent += stats.completionsSent
      totals.signalsSent += stats.signalsSent
    }
    const replies = yield* host.replies
    const latencies = replies.map((r) => r.roundTripMillis * 1000).sort((a, b) => a - b)
    const guestStats = yield* guest.stats
    const transport = yield* Effect.flatMap(InMemoryTransport.Control, (control) => control.stats)
    const line = (label: string, text: string) => Console.log(`  ${label.padEnd(26)}${text}`)
    yield* line("channels open", `${transport.openChannels} (4 services)`)
    yield* line("control messages", `${transport.messagesToHost} guest→host, ${transport.messagesToGuest} host→guest`)
    yield* line("heartbeats", `${state.heartbeatsAnswered} of ${options.heartbeats} answered`)
    yield* line("packets", `${totals.packetsSent} sent, ${totals.packetsReceived} received, ${totals.bytesSent} payload bytes`)
    yield* line("completions sent", `${totals.completionsSent} (IC answers are in-band packets, not completions)`)
    yield* line("signals", `${totals.signalsSent} (${(totals.signalsSent / Math.max(1, totals.packetsSent)).toFixed(2)} per packet)`)
    yield* line(
      "guest handled",
      `${guestStats.heartbeats} heartbeats, ${guestStats.timeSamples} time samples, ` +
        `${guestStats.kvpOperations} KVP operations, ${guestStats.shutdowns} shutdown, ${guestStats.malformed} malformed`
    )
    yield* line(
      "round trip (host→guest)",
      `${replies.length} requests, p50 ${percentile(latencies, 50).toFixed(0)} µs, ` +
        `p99 ${percentile(latencies, 99).toFixed(0)} µs, max ${(latencies[latencies.length - 1] ?? 0).toFixed(0)} µs`
    )
    yield* line("shutdown", state.shutdown === undefined ? "not requested" : `${state.shutdown.kind}, effect ran: ${state.shutdownRan}`)
  })

export const run = (options: DemoOptions) => {
  const state: State = { phase: "opening the channels", heartbeatsAnswered: 0, host: undefined, guest: undefined, shutdown: undefined, shutdownRan: false }
  const progress = Progress.make({ periodMillis: options.progressMillis })
  return Effect.gen(function*() {
    const start = yield* Clock.currentTimeMillis
    const log = (who: string, text: string) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        Effect.zipRight(
          Effect.sync(progress.hide),
          Effect.ensuring(Console.log(`${String(now - start).padStart(6)} ms  ${who.padEnd(5)}  ${text}`), Effect.sync(progress.show))
        ))
    const body = Effect.gen(function*() {
      yield* log("", "opening the heartbeat, shutdown, timesync and KVP channels over the in-memory transport")
      const [host, guest] = yield* Effect.all([
        IntegrationServices.host(),
        IntegrationServices.guest({
          onShutdown: (request) =>
            Effect.zipRight(
              log("guest", `shutdown acknowledged; running the shutdown effect (${request.kind}, force=${request.force})`),
              Effect.sync(() => {
                state.shutdown = request
                state.shutdownRan = true
              })
            )
        })
      ], { concurrency: 2 })
      state.host = host
      state.guest = guest
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
          log("guest", `time sample: host ${new Date(sample.hostTimeMillis).toISOString()}, offset ${sample.offsetMillis.toFixed(1)} ms`)
        ),
        Effect.fork
      )

      state.phase = "sending heartbeats"
      yield* log("host", `sending ${options.heartbeats} heartbeats, one every ${options.intervalMillis} ms`)
      for (let i = 0; i < options.heartbeats; i++) {
        const sent = yield* Clock.currentTimeMillis
        const answer = yield* host.heartbeat
        state.heartbeatsAnswered++
        const now = yield* Clock.currentTimeMillis
        if (i === 0 || i === options.heartbeats - 1) yield* log("host", `heartbeat ${i + 1}: guest answered ${answer}`)
        progress.update(
          `progress: heartbeat ${i + 1}/${options.heartbeats} (${Math.floor(((i + 1) / options.heartbeats) * 100)} %), ` +
            `last answered in ${now - sent} ms, ${((now - start) / 1000).toFixed(1)} s elapsed`
        )
        if (options.intervalMillis > 0) yield* Effect.sleep(Duration.millis(options.intervalMillis))
      }
      progress.end()

      state.phase = "sending time samples"
      for (let i = 0; i < options.samples; i++) {
        const now = yield* Clock.currentTimeMillis
        // Pretend the host clock runs 250 ms ahead of the guest's.
        yield* host.sendTimeSample({ hostTimeMillis: now + 250, flags: i === 0 ? 1 : 2 })
      }
      yield* Fiber.join(sampleFiber)

      state.phase = "exchanging KVP items"
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

      state.phase = "requesting a shutdown"
      yield* log("host", "requesting a shutdown")
      const status = yield* host.shutdown({ reasonCode: 0x8000_0000, timeoutSeconds: 30 })
      yield* log("host", `guest answered the shutdown request with status 0x${status.toString(16).padStart(8, "0")}`)
      state.shutdown = yield* guest.shutdownRequested
      yield* Effect.yieldNow()
    })
    yield* Effect.onExit(body, (exit) => Effect.zipRight(Effect.sync(progress.end), summary(state, options, exit)))
  }).pipe(Effect.scoped, Effect.provide(InMemoryTransport.layer))
}

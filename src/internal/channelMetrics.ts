/**
 * What a channel shows the outside while it is open: Effect metrics (tagged per channel) and the span
 * attributes that identify it. The channel counts events in plain fields (the hot path stays a few
 * increments); this module turns the deltas into metric updates — every 256 events (the receive
 * loop asks `due`), on a time bound (a timer fiber per channel, so a quiet channel such as a
 * heartbeat still reports), and at close.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FiberRef from "effect/FiberRef"
import * as Metric from "effect/Metric"
import * as MetricBoundaries from "effect/MetricBoundaries"
import * as MetricLabel from "effect/MetricLabel"
import type * as Transport from "../Transport.js"
import type { ChannelStats } from "./channelConfig.js"

// No descriptions: a metric's key includes its description, and applications look these up by name.
const counter = (name: string, _meaning: string) => Metric.counter(name, { incremental: true })

const packetsSent = counter("vmbus_packets_sent", "packets written to the outgoing ring")
const bytesSent = counter("vmbus_bytes_sent", "payload bytes written to the outgoing ring")
const packetsReceived = counter("vmbus_packets_received", "packets read from the incoming ring (completions excluded)")
const bytesReceived = counter("vmbus_bytes_received", "payload bytes read from the incoming ring")
const completionsSent = counter("vmbus_completions_sent", "completions written for received packets")
const signalsSent = counter("vmbus_signals_sent", "signals (interrupts) sent to the peer")
const signalsReceived = counter("vmbus_signals_received", "signals received from the peer")
const ringFullWaits = counter("vmbus_ring_full_waits", "writes that waited for room in the outgoing ring")
const completionsReceived = counter("vmbus_completions_received", "completions received for this side's requests")
const unknownCompletions = counter("vmbus_unknown_completions", "completions naming no outstanding request")
const autoCompleted = counter("vmbus_auto_completed", "packets completed with the failure payload by the library")
const handlerFailures = counter("vmbus_handler_failures", "serve handlers that failed, died or returned an unsendable result")
const completionsDropped = counter("vmbus_completions_dropped", "completions owed to the peer and never written (the open period ended first)")
const unknownPackets = counter("vmbus_unknown_packets", "packets of an unknown type or with unknown flag bits, skipped")
/** Requests waiting for their completion. */
const requestsOutstanding = Metric.gauge("vmbus_requests_outstanding")

/**
 * Request latency, request written → completion read, in milliseconds (buckets 5 µs to ~10 s,
 * doubling).
 */
export const requestLatency = Metric.histogram(
  "vmbus_request_latency_ms",
  MetricBoundaries.exponential({ start: 0.005, factor: 2, count: 22 })
)

/** The counts a channel keeps (its `stats` fields that only grow; the two gauges are read live). */
export type Counts = Omit<ChannelStats, "requestsOutstanding" | "packetsOutstanding">

const FIELDS: ReadonlyArray<readonly [keyof Counts, Metric.Metric.Counter<number>]> = [
  ["packetsSent", packetsSent],
  ["bytesSent", bytesSent],
  ["packetsReceived", packetsReceived],
  ["bytesReceived", bytesReceived],
  ["completionsSent", completionsSent],
  ["signalsSent", signalsSent],
  ["signalsReceived", signalsReceived],
  ["ringFullWaits", ringFullWaits],
  ["completionsReceived", completionsReceived],
  ["unknownCompletions", unknownCompletions],
  ["autoCompleted", autoCompleted],
  ["handlerFailures", handlerFailures],
  ["completionsDropped", completionsDropped],
  ["unknownPackets", unknownPackets]
]

/** Events between two flushes at most (the receive loop checks this count, not the clock). */
const EVENTS_PER_FLUSH = 256

const events = (c: Counts): number =>
  c.packetsSent + c.packetsReceived + c.completionsReceived + c.signalsReceived + c.unknownPackets

export class ChannelMetrics {
  private readonly flushed: { -readonly [K in keyof Counts]: number } = {
    packetsSent: 0,
    bytesSent: 0,
    packetsReceived: 0,
    bytesReceived: 0,
    completionsSent: 0,
    completionsReceived: 0,
    autoCompleted: 0,
    signalsSent: 0,
    signalsReceived: 0,
    ringFullWaits: 0,
    unknownCompletions: 0,
    handlerFailures: 0,
    completionsDropped: 0,
    unknownPackets: 0
  }
  private flushedOutstanding = -1
  private readonly latencies = new Float64Array(EVENTS_PER_FLUSH)
  private latencyCount = 0
  private readonly labels: ReadonlyArray<MetricLabel.MetricLabel>
  private readonly counters: ReadonlyArray<readonly [keyof Counts, Metric.Metric.Counter<number>]>
  private readonly outstandingGauge: Metric.Metric.Gauge<number>
  private readonly latencyHistogram: typeof requestLatency

  constructor(
    private readonly counts: Counts,
    private readonly outstanding: () => number,
    tags: ReadonlyArray<readonly [string, string]>
  ) {
    this.labels = tags.map(([key, value]) => MetricLabel.make(key, value))
    this.counters = FIELDS.map(([field, metric]) => [field, Metric.taggedWithLabels(metric, this.labels)] as const)
    this.outstandingGauge = Metric.taggedWithLabels(requestsOutstanding, this.labels)
    this.latencyHistogram = Metric.taggedWithLabels(requestLatency, this.labels)
  }

  /** One request's round trip (milliseconds); kept until the next flush. */
  recordLatency(millis: number): void {
    if (this.latencyCount < this.latencies.length) this.latencies[this.latencyCount++] = millis
  }

  /** Enough has happened since the last flush that the receive loop should flush now. */
  due(): boolean {
    return events(this.counts) - events(this.flushed) >= EVENTS_PER_FLUSH || this.latencyCount === this.latencies.length
  }

  private dirty(): boolean {
    if (this.latencyCount > 0 || this.outstanding() !== this.flushedOutstanding) return true
    for (const [field] of FIELDS) if (this.counts[field] !== this.flushed[field]) return true
    return false
  }

  /**
   * Adds what changed since the last flush to the metrics (in the calling fiber, so metric labels
   * the application set with `Effect.tagMetrics` apply). Synchronous between its reads and writes:
   * two flushes never count the same events twice.
   */
  readonly flush: Effect.Effect<void> = Effect.flatMap(FiberRef.get(FiberRef.currentMetricLabels), (extra) =>
    Effect.sync(() => {
      for (const [field, metric] of this.counters) {
        const delta = this.counts[field] - this.flushed[field]
        if (delta > 0) metric.unsafeUpdate(delta, extra)
        this.flushed[field] = this.counts[field]
      }
      const outstanding = this.outstanding()
      this.outstandingGauge.unsafeUpdate(outstanding, extra)
      this.flushedOutstanding = outstanding
      for (let i = 0; i < this.latencyCount; i++) this.latencyHistogram.unsafeUpdate(this.latencies[i]!, extra)
      this.latencyCount = 0
    }))

  /** Flushes every `millis` while anything changed; runs until interrupted (the channel's scope closes). */
  timer(millis: number): Effect.Effect<never> {
    const tick = Effect.zipRight(Effect.sleep(Duration.millis(millis)), Effect.suspend(() => (this.dirty() ? this.flush : Effect.void)))
    return Effect.forever(tick)
  }
}

/** Span attributes naming a channel, the same on open, close, request and GPADL spans. */
export const spanAttributes = (channel: {
  readonly identity: Transport.OfferIdentity
  readonly childRelid: number
  readonly role: "client" | "server"
}): Record<string, unknown> => ({
  "vmbus.interface_type": channel.identity.interfaceType,
  "vmbus.interface_instance": channel.identity.interfaceInstance,
  "vmbus.relid": channel.childRelid,
  "vmbus.role": channel.role
})

/**
 * Observability: channels update Effect `Metric`s (labelled `channel` and `role`) and run their
 * lifecycle and requests in spans (`vmbus.channel.open`, `vmbus.channel.request`,
 * `vmbus.channel.close`, `vmbus.gpadl.create`). Any Effect tracer receives the spans — an
 * OpenTelemetry exporter from `@effect/opentelemetry` in production; here a small tracer that records
 * them. `Metric.snapshot` reads every metric of the process.
 */
import { Effect, Layer, Metric, Option, Tracer } from "effect"
import { Channel, InMemoryTransport } from "effect-vmbus"

const TYPE = "a4c2e6f8-0b1d-4e3f-9a5c-7e9b1d3f5a7c"
const INSTANCE = "d2e4f6a8-1c3e-4a5b-8c7d-9f1b3d5e7a9c"

// A tracer that delegates to Effect's own and keeps every span it creates.
const recorded: Array<Tracer.Span> = []
const recording = Effect.map(Effect.tracer, (base) =>
  Tracer.make({
    span: (...args) => {
      const span = base.span(...args)
      recorded.push(span)
      return span
    },
    context: (f, fiber) => base.context(f, fiber)
  }))
const TracingLive = Layer.unwrapEffect(Effect.map(recording, Layer.setTracer))

const program = Effect.gen(function*() {
  yield* Effect.forkScoped(
    Effect.gen(function*() {
      const server = yield* Channel.open({ role: "server", interfaceType: TYPE, interfaceInstance: INSTANCE, name: "echo-server" })
      yield* server.serve((packet) => Effect.succeed(packet.payload))
    }).pipe(Effect.scoped)
  )
  // Request spans are opt-in (a span costs about as much as the round trip it traces).
  const client = yield* Channel.open({ role: "client", interfaceType: TYPE, name: "echo-client", requestSpans: true })
  for (let i = 0; i < 10; i++) yield* client.request(new Uint8Array(64))
  // `stats` is the channel's exact, immediate view of the same counters.
  return yield* client.stats
}).pipe(
  Effect.scoped, // metrics are flushed at the latest when the channels close
  Effect.withSpan("example.session"),
  Effect.provide(Layer.merge(InMemoryTransport.layer, TracingLive))
)

const stats = await Effect.runPromise(program)
console.log(`client stats: ${stats.packetsSent} packets sent, ${stats.completionsReceived} completions received`)

// Every vmbus metric, with its labels.
const snapshot = await Effect.runPromise(Metric.snapshot)
for (const pair of snapshot) {
  const name = pair.metricKey.name
  if (!name.startsWith("vmbus_")) continue
  const labels = pair.metricKey.tags.map((tag) => `${tag.key}=${tag.value}`).join(",")
  const state = pair.metricState as { readonly count?: unknown; readonly value?: unknown }
  const value = state.count ?? state.value
  if (typeof value === "number" && value > 0) console.log(`metric ${name}{${labels}} ${value}`)
}

// The spans, each with its parent: the requests and the channel lifecycle nest in the session.
const byName = new Map<string, number>()
for (const span of recorded) byName.set(span.name, (byName.get(span.name) ?? 0) + 1)
for (const [name, count] of byName) console.log(`span ${name} × ${count}`)
const request = recorded.find((span) => span.name === "vmbus.channel.request")
console.log(`a request's parent span: ${Option.match(request?.parent ?? Option.none(), {
  onNone: () => "none",
  onSome: (parent) => (parent._tag === "Span" ? parent.name : "external")
})}`)

// What a user can see of a channel: metrics while it is open (count- and time-bounded flushes), the
// request latency histogram, spans that name the channel, OpenTimeout naming what it waited for, and
// handler failures reported on `events` and logged at warning level.
import { assert, describe, it, vi } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Metric from "effect/Metric"
import * as MetricState from "effect/MetricState"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import * as Tracer from "effect/Tracer"
import * as Channel from "../src/Channel.js"
import { InMemoryTransport } from "../src/index.js"
import * as GuestMemory from "../src/GuestMemory.js"
import * as Gpadl from "../src/Gpadl.js"
import { filled, INSTANCE, openPair, openPairInScope, settle, TYPE, withBus } from "./utils/channels.js"
import { assertBytes, failureOf, successOf } from "./utils/semantics.js"

/** The state of metric `name` tagged with channel `channel` (and `role`), if it exists yet. */
const metricOf = (name: string, channel: string, role: "client" | "server") =>
  Effect.map(Metric.snapshot, (pairs) =>
    pairs.find((pair) =>
      pair.metricKey.name === name &&
      pair.metricKey.tags.some((tag) => tag.key === "channel" && tag.value === channel) &&
      pair.metricKey.tags.some((tag) => tag.key === "role" && tag.value === role)
    )?.metricState
  )

const countOf = (name: string, channel: string, role: "client" | "server") =>
  Effect.map(metricOf(name, channel, role), (state) => (state !== undefined && MetricState.isCounterState(state) ? Number(state.count) : 0))

/** A tracer that keeps every span with its attributes. */
const recordingTracer = () => {
  const spans: Array<{ readonly name: string; readonly attributes: Map<string, unknown>; ended: boolean }> = []
  const tracer = Tracer.make({
    span: (name, parent, context, links, startTime, kind) => {
      const record = { name, attributes: new Map<string, unknown>(), ended: false }
      spans.push(record)
      return {
        _tag: "Span",
        name,
        spanId: `span-${spans.length}`,
        traceId: "trace",
        parent,
        context,
        links,
        sampled: true,
        kind,
        status: { _tag: "Started", startTime },
        attributes: record.attributes,
        attribute: (key, value) => void record.attributes.set(key, value),
        end: () => void (record.ended = true),
        event: () => {},
        addLinks: () => {}
      }
    },
    context: (f) => f()
  })
  return { tracer, spans }
}

describe("metrics while a channel is open", () => {
  it.scoped("a quiet channel's counts are flushed on the time bound, without closing it", () =>
    Effect.gen(function*() {
      const { client, server } = yield* openPair({ client: { name: "quiet-client" }, server: { name: "quiet-server" } })
      yield* Effect.forkScoped(server.serve(() => Effect.succeed(filled(1))))
      for (let i = 0; i < 3; i++) yield* client.request(filled(i))
      yield* settle()
      // Far fewer than 256 events: nothing flushed by count yet.
      assert.strictEqual(yield* countOf("vmbus_packets_sent", "quiet-client", "client"), 0)
      yield* TestClock.adjust("1 second")
      yield* settle()
      const stats = yield* client.stats
      assert.strictEqual(stats.packetsSent, 3)
      assert.strictEqual(yield* countOf("vmbus_packets_sent", "quiet-client", "client"), 3)
      assert.strictEqual(yield* countOf("vmbus_completions_received", "quiet-client", "client"), 3)
      assert.strictEqual(yield* countOf("vmbus_packets_received", "quiet-server", "server"), 3)
      assert.strictEqual((yield* client.state), "Active")
      // Nothing new: the next tick changes nothing; new traffic shows after the next tick.
      yield* client.send(filled(9))
      yield* settle()
      assert.strictEqual(yield* countOf("vmbus_packets_sent", "quiet-client", "client"), 3)
      yield* TestClock.adjust("1 second")
      yield* settle()
      assert.strictEqual(yield* countOf("vmbus_packets_sent", "quiet-client", "client"), 4)
    }).pipe(withBus))

  it.scoped("metricsFlushMillis sets the bound; 0 leaves flushing to the event count and close", () =>
    Effect.gen(function*() {
      const { client, close, server } = yield* openPairInScope({
        client: { name: "no-timer", metricsFlushMillis: 0 },
        server: { name: "no-timer-server", metricsFlushMillis: 0 }
      })
      yield* Effect.forkScoped(server.serve(() => Effect.void))
      yield* client.request(filled(1))
      yield* TestClock.adjust("1 hour")
      yield* settle()
      assert.strictEqual(yield* countOf("vmbus_packets_sent", "no-timer", "client"), 0)
      // Every 256 events the receive loop flushes on its own, clock or not.
      yield* Effect.forEach(Array.from({ length: 299 }), () => client.send(filled(2)), { discard: true })
      yield* settle(400)
      const received = yield* countOf("vmbus_packets_received", "no-timer-server", "server")
      assert.isAtLeast(received, 256)
      yield* close
      assert.strictEqual(yield* countOf("vmbus_packets_sent", "no-timer", "client"), 300)
      assert.strictEqual(yield* countOf("vmbus_packets_received", "no-timer-server", "server"), 300)
    }).pipe(withBus))

  it.scoped("requests fill a latency histogram tagged with the channel", () =>
    Effect.gen(function*() {
      const { client, close, server } = yield* openPairInScope({ client: { name: "latency" } })
      yield* Effect.forkScoped(server.serve((packet) => Effect.succeed(packet.payload)))
      for (let i = 0; i < 7; i++) yield* client.request(filled(i))
      yield* close
      const state = yield* metricOf("vmbus_request_latency_ms", "latency", "client")
      assert.isDefined(state)
      assert.isTrue(MetricState.isHistogramState(state!))
      const histogram = state as MetricState.MetricState.Histogram
      assert.strictEqual(histogram.count, 7)
      assert.isAtLeast(histogram.min, 0)
      assert.isAtLeast(histogram.max, histogram.min)
      // The gauge of requests still waiting is back to zero.
      const outstanding = yield* metricOf("vmbus_requests_outstanding", "latency", "client")
      assert.isTrue(outstanding !== undefined && MetricState.isGaugeState(outstanding) && outstanding.value === 0)
    }).pipe(withBus))
})

describe("spans name the channel", () => {
  it.scoped("open, request, close and GPADL spans carry interface type, instance, relid and role", () => {
    const { spans, tracer } = recordingTracer()
    return Effect.gen(function*() {
      // Request spans are opt-in (they cost about as much as a round trip): this client asks for them.
      const { client, close, server } = yield* openPairInScope({ client: { requestSpans: true } })
      yield* Effect.forkScoped(server.serve(() => Effect.succeed(filled(3))))
      yield* client.request(filled(1))
      const buffer = yield* GuestMemory.allocate(2)
      const gpadl = yield* Gpadl.create(client, buffer)
      const view = yield* Effect.scoped(Effect.flatMap(Gpadl.map(server, gpadl.handle), (v) => Effect.succeed(v.byteLength)))
      assert.strictEqual(view, 2 * GuestMemory.PAGE_SIZE)
      yield* close
      const identify = (name: string, role: "client" | "server") => {
        const span = spans.find((s) => s.name === name && s.attributes.get("vmbus.role") === role)
        assert.isDefined(span, `no ${role} span ${name}: ${spans.map((s) => s.name).join(", ")}`)
        assert.strictEqual(span!.attributes.get("vmbus.interface_type"), TYPE, name)
        assert.strictEqual(span!.attributes.get("vmbus.interface_instance"), INSTANCE, name)
        assert.strictEqual(span!.attributes.get("vmbus.relid"), (role === "client" ? client : server).childRelid, name)
        assert.isTrue(span!.ended, name)
      }
      identify("vmbus.channel.open", "client")
      identify("vmbus.channel.open", "server")
      identify("vmbus.channel.request", "client")
      identify("vmbus.gpadl.create", "client")
      identify("vmbus.gpadl.map", "server")
      identify("vmbus.channel.close", "client")
      identify("vmbus.channel.close", "server")
    }).pipe(withBus, Effect.withTracer(tracer))
  })
})

describe("OpenTimeout names the channel it waited for", () => {
  it.scoped("a client waiting for an offer, and a server waiting for a guest", () =>
    Effect.gen(function*() {
      const other = "0f1e2d3c-4b5a-4968-8776-655443322110"
      const client = yield* Effect.fork(Effect.exit(Effect.scoped(Channel.open({ role: "client", interfaceType: other, openTimeoutMillis: 500 }))))
      const server = yield* Effect.fork(Effect.exit(Effect.scoped(
        Channel.open({ role: "server", interfaceType: TYPE, interfaceInstance: INSTANCE, openTimeoutMillis: 500 })
      )))
      yield* settle()
      yield* TestClock.adjust("1 second")
      const clientError = failureOf(yield* Fiber.join(client))
      const serverError = failureOf(yield* Fiber.join(server))
      assert.strictEqual(clientError._tag, "OpenTimeout")
      assert.strictEqual(serverError._tag, "OpenTimeout")
      if (clientError._tag !== "OpenTimeout" || serverError._tag !== "OpenTimeout") return
      assert.deepStrictEqual([clientError.interfaceType, clientError.interfaceInstance, clientError.role], [other, undefined, "client"])
      assert.strictEqual(clientError.message, `client of interface ${other} (any instance): it did not open within 500 ms`)
      assert.deepStrictEqual([serverError.interfaceType, serverError.interfaceInstance, serverError.role], [TYPE, INSTANCE, "server"])
      assert.strictEqual(serverError.message, `server of interface ${TYPE} instance ${INSTANCE}: no guest opened it within 500 ms`)
    }).pipe(withBus))
})

describe("a failed handler is visible", () => {
  const FAILURE = filled(0xee)

  it.scoped("a failure or defect becomes a failure completion, a HandlerFailed event and a warning", () => {
    const logs: Array<{ readonly level: LogLevel.LogLevel; readonly message: string }> = []
    const logger = Logger.make(({ logLevel, message }) => {
      logs.push({ level: logLevel, message: (Array.isArray(message) ? message : [message]).map(String).join(" ") })
    })
    return Effect.gen(function*() {
      const { client, server } = yield* openPair({ server: { failureCompletion: FAILURE, name: "failing" } })
      const events = yield* Effect.fork(Stream.runCollect(Stream.take(server.events, 2)))
      yield* settle()
      yield* Effect.forkScoped(server.serve((packet) =>
        packet.payload[0] === 1 ? Effect.fail("no such record" as const) : Effect.dieMessage("handler bug")
      ))
      assertBytes(successOf(yield* Effect.exit(client.request(filled(1)))), FAILURE)
      assertBytes(successOf(yield* Effect.exit(client.request(filled(2)))), FAILURE)
      const seen = Chunk.toReadonlyArray(yield* Fiber.join(events))
      assert.deepStrictEqual(seen.map((event) => event._tag), ["HandlerFailed", "HandlerFailed"])
      const [first, second] = seen.map((event) => event.error)
      assert.strictEqual(first!._tag, "HandlerFailed")
      if (first!._tag !== "HandlerFailed" || second!._tag !== "HandlerFailed") return
      assert.strictEqual(first!.reason, "no such record")
      assert.strictEqual(second!.reason, "handler bug")
      assert.isTrue(first!.failureCompleted && second!.failureCompleted)
      assert.isDefined(first!.transactionId)
      assert.notStrictEqual(first!.transactionId, second!.transactionId)
      const warnings = logs.filter((log) => log.level === LogLevel.Warning && log.message.includes("handler failed"))
      assert.strictEqual(warnings.length, 2, JSON.stringify(logs))
      assert.include(warnings[0]!.message, "completed with the failure payload: no such record")
      assert.strictEqual((yield* server.stats).handlerFailures, 2)
    }).pipe(withBus, Effect.provide(Logger.replace(Logger.defaultLogger, logger)))
  })

  it.scoped("a handler that completes the packet itself and then fails is still reported", () =>
    Effect.gen(function*() {
      const { client, server } = yield* openPair({ server: { failureCompletion: FAILURE } })
      const events = yield* Effect.fork(Stream.runHead(server.events))
      yield* settle()
      yield* Effect.forkScoped(server.serve((packet) => Effect.zipRight(packet.complete(filled(5)), Effect.fail("late"))))
      // The completion the handler wrote stands (exactly once); the failure is reported anyway.
      assertBytes(yield* client.request(filled(1)), filled(5))
      const event = yield* Fiber.join(events)
      assert.isTrue(Option.isSome(event) && event.value._tag === "HandlerFailed")
      const error = Option.getOrThrow(event).error
      assert.isTrue(error._tag === "HandlerFailed" && !error.failureCompleted)
      assert.include(error.message, "after completing it: late")
    }).pipe(withBus))
})

describe("README Observability section", () => {
  it("the example runs as written: spans with channel attributes, metrics of an open channel, the failure payload", async () => {
    // The README's code, unchanged but for indentation (imports above; it runs with `await` below).
    const TYPE = "f8615163-df3e-46c5-913f-f2d2f965ed0e"
    const INSTANCE = "9e5e1a6f-2c34-4b8e-9d2a-0b1c2d3e4f51"

    // Any Tracer plugs in here; this one prints every finished span with its attributes. With
    // OpenTelemetry, provide `NodeSdk.layer(...)` from @effect/opentelemetry instead.
    const printingTracer = Tracer.make({
      span: (name, parent, context, links, startTime, kind) => {
        const attributes = new Map<string, unknown>()
        return {
          _tag: "Span", name, spanId: crypto.randomUUID(), traceId: "demo", parent, context, links, sampled: true,
          kind, status: { _tag: "Started", startTime }, attributes,
          attribute: (key, value) => void attributes.set(key, value),
          end: () => console.log(`span ${name}`, Object.fromEntries(attributes)),
          event: () => {},
          addLinks: () => {}
        }
      },
      context: (f) => f()
    })

    const program = Effect.gen(function* () {
      yield* Effect.forkScoped(
        Effect.gen(function* () {
          const server = yield* Channel.open({
            role: "server", interfaceType: TYPE, interfaceInstance: INSTANCE, name: "echo-server", metricsFlushMillis: 100,
            failureCompletion: new Uint8Array([0xff, 0xff, 0xff, 0xff]) // what a failed handler answers
          })
          yield* server.serve((packet) => (packet.payload[0] === 0 ? Effect.fail("empty request") : Effect.succeed(packet.payload)))
        }).pipe(Effect.scoped)
      )
      const client = yield* Channel.open({
        role: "client", interfaceType: TYPE, interfaceInstance: INSTANCE, name: "echo-client", metricsFlushMillis: 100,
        requestSpans: true
      })
      for (let i = 1; i <= 10; i++) yield* client.request(new Uint8Array([i]))
      const failed = yield* client.request(new Uint8Array([0])) // ff ff ff ff …, and a warning in the log
      console.log("failed request answered", failed.subarray(0, 4))
      yield* Effect.sleep("250 millis") // the channel is still open: its metrics are flushed on the time bound

      for (const { metricKey, metricState } of yield* Metric.snapshot) {
        if (!metricKey.name.startsWith("vmbus_")) continue
        const tags = metricKey.tags.map((tag) => `${tag.key}=${tag.value}`).join(" ")
        if (MetricState.isCounterState(metricState)) console.log(metricKey.name, tags, metricState.count)
        if (MetricState.isHistogramState(metricState)) {
          console.log(metricKey.name, tags, `n=${metricState.count} max=${metricState.max.toFixed(3)} ms`)
        }
      }
    }).pipe(Effect.scoped, Effect.provide(InMemoryTransport.layer), Effect.withTracer(printingTracer))
    const lines: Array<string> = []
    const spy = vi.spyOn(console, "log").mockImplementation((...args: Array<unknown>) => {
      lines.push(args.map((arg) => (typeof arg === "string" ? arg : JSON.stringify(arg, (_, v) => (v instanceof Uint8Array ? Array.from(v) : v)))).join(" "))
    })
    try {
      await Effect.runPromise(program)
    } finally {
      spy.mockRestore()
    }
    const text = lines.join("\n")
    assert.include(text, "failed request answered [255,255,255,255]")
    assert.match(text, /span vmbus\.channel\.request \{"vmbus\.interface_type":"f8615163-[^"]*","vmbus\.interface_instance":"9e5e1a6f-2c34-4b8e-9d2a-0b1c2d3e4f51","vmbus\.relid":\d+,"vmbus\.role":"client"\}/)
    assert.include(text, "vmbus_packets_sent channel=echo-client role=client 11")
    assert.include(text, "vmbus_handler_failures channel=echo-server role=server 1")
    assert.match(text, /vmbus_request_latency_ms channel=echo-client role=client n=11 max=/)
  })
})

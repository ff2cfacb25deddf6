// Runs one simulation scenario over the fault-injecting transport and checks the invariants:
// every request resolved exactly once and with a reply that is its own (or the failure payload);
// every completion on the wire is unique; every channel, offer, GPADL, mapping, pin, view, page,
// transaction and fiber is gone afterwards; memory freed under a live transaction is never touched
// (canaries); nothing hung (the whole scenario is bounded and reports the phase it hung in).
import * as Cause from "effect/Cause"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as Supervisor from "effect/Supervisor"
import * as Channel from "../../../src/Channel.js"
import * as FaultInjectingTransport from "../../../src/FaultInjectingTransport.js"
import * as GuestMemory from "../../../src/GuestMemory.js"
import type * as IncomingPacket from "../../../src/IncomingPacket.js"
import * as InMemoryTransport from "../../../src/InMemoryTransport.js"
import type { Outcome, RequestPlan, Scenario } from "./scenario.js"
import { OUTCOMES } from "./scenario.js"
import { watch } from "./wireTap.js"

const TYPE = "f8615163-df3e-46c5-913f-f2d2f965ed0e"
const INSTANCE = "9e5e1a6f-2c34-4b8e-9d2a-0b1c2d3e4f50"
const MAGIC = 0xc0ffee11
const FAILURE = new Uint8Array(8).fill(0xee)
const CANARY = 0x55
const MARK = 0xaa
const EMPTY = new Uint8Array(0)

export interface Report {
  readonly seed: number
  readonly ok: boolean
  readonly failures: ReadonlyArray<string>
  readonly phase: string
  readonly outcomes: Readonly<Record<Outcome, number>>
  readonly results: Readonly<Record<string, number>>
  readonly faults: FaultInjectingTransport.FaultStats | undefined
  readonly millis: number
}

const reply = (index: number): Uint8Array => {
  const bytes = new Uint8Array(8)
  const view = new DataView(bytes.buffer)
  view.setUint32(0, index, true)
  view.setUint32(4, MAGIC, true)
  return bytes
}

const pattern = (index: number): number => (index % 0x50) + 1

const sameBytes = (a: Uint8Array, b: Uint8Array): boolean => a.length === b.length && a.every((x, i) => x === b[i])

interface State {
  phase: string
  readonly failures: Array<string>
  readonly outcomes: Record<Outcome, number>
  readonly results: Record<string, number>
  handlersStarted: number
  handlersEnded: number
  /** Requests whose packet the server failed (`fail`): no completion may ever answer them. */
  readonly failedPackets: Set<number>
  faults: FaultInjectingTransport.FaultStats | undefined
}

const fail = (state: State, message: string): void => {
  if (state.failures.length < 20) state.failures.push(`[${state.phase}] ${message}`)
}

const scenarioBody = (scenario: Scenario, state: State) =>
  Effect.gen(function*() {
    const control = yield* InMemoryTransport.Control
    const faults = yield* FaultInjectingTransport.FaultControl
    const memory = yield* GuestMemory.GuestMemory
    const outer = yield* Scope.make()
    const serverScope = yield* Scope.make()
    const clientScope = yield* Scope.make()
    state.phase = "open"
    const opened = yield* Effect.either(Effect.all([
      Channel.open({
        role: "server",
        interfaceType: TYPE,
        interfaceInstance: INSTANCE,
        drainTimeoutMillis: scenario.server.drainTimeoutMillis,
        transactionQuota: scenario.server.transactionQuota,
        openTimeoutMillis: 3000,
        maxPacketSize: 2048,
        failureCompletion: FAILURE
      }).pipe(Scope.extend(serverScope)),
      Channel.open({
        role: "client",
        interfaceType: TYPE,
        interfaceInstance: INSTANCE,
        outgoingRingPages: scenario.client.outgoingRingPages,
        incomingRingPages: scenario.client.incomingRingPages,
        transactionQuota: scenario.client.transactionQuota,
        drainTimeoutMillis: 20,
        openTimeoutMillis: 3000,
        maxPacketSize: 2048,
        failureCompletion: FAILURE
      }).pipe(Scope.extend(clientScope))
    ], { concurrency: 2 }))
    if (Either.isLeft(opened)) {
      fail(state, `open failed: ${opened.left._tag}`)
      yield* Scope.close(clientScope, Exit.void)
      yield* Scope.close(serverScope, Exit.void)
      return
    }
    const [server, client] = opened.right
    // Every completion the server publishes, by transaction id: each must appear once.
    const rings = (yield* control.openChannels)[0]
    const seen = new Map<bigint, number>()
    const stopTap = rings === undefined ? () => {} : watch(rings.serverToClient, (packet) => {
      if (packet === undefined || packet._tag !== "Completion") return
      const n = (seen.get(packet.transactionId) ?? 0) + 1
      seen.set(packet.transactionId, n)
      if (n === 2) fail(state, `completion for transaction ${packet.transactionId} written twice`)
    })
    yield* Scope.addFinalizer(outer, Effect.sync(stopTap))

    // ----- the server's handler, one per packet ------------------------------------------------
    const handle = (packet: IncomingPacket.IncomingPacket): Effect.Effect<Uint8Array | void, string> =>
      Effect.gen(function*() {
        const payload = packet.payload
        if (payload.length < 8) return EMPTY
        const index = new DataView(payload.buffer, payload.byteOffset, 8).getUint32(0, true)
        const plan = scenario.requests[index]
        if (plan === undefined) {
          fail(state, `server got a packet for unknown request ${index}`)
          return EMPTY
        }
        state.outcomes[plan.outcome]++
        if (plan.handlerMillis > 0) yield* Effect.sleep(Duration.millis(plan.handlerMillis))
        if (plan.kind === "external") {
          const views = yield* Effect.either(packet.externalData)
          if (Either.isRight(views) && views.right.length > 0) {
            const read = views.right[0]!.read(0, 8)
            if (Either.isRight(read) && !read.right.every((b) => b === pattern(index))) {
              fail(state, `request ${index}: external data reads ${Array.from(read.right).join(",")}, not its own bytes`)
            }
            views.right[0]!.write(0, new Uint8Array(8).fill(MARK))
          }
        }
        if (plan.kind === "gpadl") {
          const handle = new DataView(payload.buffer, payload.byteOffset, 8).getUint32(4, true)
          yield* Effect.scoped(Effect.gen(function*() {
            const view = yield* server.mapGpadl(handle)
            const read = view.read(0, 8)
            if (Either.isRight(read) && !read.right.every((b) => b === pattern(index))) {
              fail(state, `request ${index}: GPADL ${handle} reads ${Array.from(read.right).join(",")}, not its own bytes`)
            }
            view.write(0, new Uint8Array(8).fill(MARK))
          })).pipe(Effect.ignore)
        }
        switch (plan.outcome) {
          case "success":
            return reply(index)
          case "fail":
            return yield* Effect.fail("handler failed")
          case "defect":
            return yield* Effect.die("handler defect")
          case "interrupt":
            return yield* Effect.interrupt
          case "never":
            return yield* Effect.never
          case "completeTwice": {
            const first = yield* Effect.either(packet.complete(reply(index)))
            const second = yield* Effect.either(packet.complete(reply(index)))
            if (Either.isRight(second)) fail(state, `request ${index}: a second complete succeeded`)
            else if (Either.isRight(first) && second.left._tag !== "PacketAlreadyCompleted") {
              fail(state, `request ${index}: second complete failed with ${second.left._tag}`)
            }
            return undefined
          }
          case "failPacket": {
            const failed = yield* Effect.either(packet.fail("simulated unrecoverable packet"))
            if (Either.isRight(failed)) state.failedPackets.add(index)
            return undefined
          }
          case "closeFromHandler":
            yield* Scope.close(serverScope, Exit.void)
            return reply(index)
        }
      }).pipe(
        Effect.ensuring(Effect.sync(() => {
          state.handlersEnded++
        })),
        (effect) => Effect.zipRight(Effect.sync(() => {
          state.handlersStarted++
        }), effect)
      )
    const completeWith = (packet: IncomingPacket.IncomingPacket) =>
      Effect.flatMap(Effect.exit(handle(packet)), (exit) =>
        Exit.isSuccess(exit) ? Effect.ignore(packet.complete(exit.value ?? EMPTY)) : Effect.void)
    const consumer = scenario.consumer === "serve"
      ? Effect.ignore(server.serve(handle, { concurrency: scenario.workers }))
      : scenario.consumer === "take"
      ? Effect.all(Array.from({ length: scenario.workers }, () =>
        Effect.forever(Effect.scoped(Effect.flatMap(server.take, completeWith))).pipe(Effect.ignore)), {
        concurrency: "unbounded",
        discard: true
      })
      : Effect.all(Array.from({ length: scenario.workers }, () =>
        Stream.runForEach(server.packets, completeWith).pipe(Effect.ignore)), { concurrency: "unbounded", discard: true })
    yield* Effect.forkIn(consumer, outer)
    // The client takes (and completes) whatever the server sends it one-way.
    yield* Effect.forkIn(
      Effect.forever(Effect.scoped(Effect.flatMap(client.take, (packet) => packet.complete()))).pipe(Effect.ignore),
      outer
    )
    if (scenario.serverSends > 0) {
      const payloads = Array.from({ length: scenario.serverSends }, () => new Uint8Array(512).fill(7))
      yield* Effect.forkIn(Effect.ignore(server.sendBatch(payloads)), outer)
    }

    // ----- the client's requests -----------------------------------------------------------
    state.phase = "active"
    const results = new Map<number, Exit.Exit<Uint8Array, unknown>>()
    /** Where each request is, for the report of one that never resolves. */
    const stage = new Map<number, string>()
    const canaries: Array<GuestMemory.GuestBuffer> = []
    const record = (plan: RequestPlan) => (exit: Exit.Exit<Uint8Array, unknown>) =>
      Effect.sync(() => {
        if (results.has(plan.index)) fail(state, `request ${plan.index} resolved twice`)
        results.set(plan.index, exit)
      })
    const payloadOf = (plan: RequestPlan, handle: number) => {
      const bytes = new Uint8Array(plan.size)
      const view = new DataView(bytes.buffer)
      view.setUint32(0, plan.index, true)
      view.setUint32(4, handle, true)
      return bytes
    }
    const timeout = (plan: RequestPlan) => (plan.timeoutMillis === undefined ? {} : { timeout: Duration.millis(plan.timeoutMillis) })
    const runRequest = (plan: RequestPlan): Effect.Effect<Uint8Array, unknown> => {
      switch (plan.kind) {
        case "inband":
          return client.request(payloadOf(plan, 0), timeout(plan))
        case "external":
          return Effect.gen(function*() {
            const bufferScope = yield* Scope.make()
            const buffer = yield* memory.allocate(1).pipe(Scope.extend(bufferScope))
            buffer.bytes.fill(pattern(plan.index))
            const fiber = yield* Effect.fork(client.request(payloadOf(plan, 0), { ...timeout(plan), external: [buffer] }))
            // The transaction pins the buffer: closing its own scope early must not free it.
            if (plan.releaseBufferEarly) yield* Effect.zipRight(Effect.yieldNow(), Scope.close(bufferScope, Exit.void))
            return yield* Fiber.join(fiber).pipe(Effect.ensuring(Scope.close(bufferScope, Exit.void)))
          })
        case "gpadl":
          return Effect.scoped(Effect.gen(function*() {
            const buffer = yield* memory.allocate(1)
            buffer.bytes.fill(pattern(plan.index))
            stage.set(plan.index, "createGpadl")
            const handle = yield* client.createGpadl({ pfns: buffer.pfns }, { buffer })
            stage.set(plan.index, "request")
            return yield* client.request(payloadOf(plan, handle), timeout(plan)).pipe(
              Effect.onExit(() => Effect.sync(() => stage.set(plan.index, "GPADL teardown")))
            )
          }).pipe(Effect.onExit(() => Effect.sync(() => stage.set(plan.index, "GPADL teardown")))))
      }
    }
    const requestFibers = yield* Effect.forEach(scenario.requests, (plan) =>
      Effect.forkIn(
        Effect.zipRight(
          plan.delayMillis > 0 ? Effect.sleep(Duration.millis(plan.delayMillis)) : Effect.void,
          Effect.exit(runRequest(plan)).pipe(Effect.flatMap(record(plan)))
        ),
        outer
      ))

    // ----- lifecycle actions and faults on demand ------------------------------------------
    const canary = Effect.gen(function*() {
      const buffer = yield* memory.allocate(4).pipe(Scope.extend(outer))
      buffer.bytes.fill(CANARY)
      canaries.push(buffer)
    }).pipe(Effect.ignore)
    const ignore = <A, E>(effect: Effect.Effect<A, E>) => Effect.ignore(effect)
    const actionFibers = yield* Effect.forEach(scenario.actions, (plan) =>
      Effect.forkIn(
        Effect.zipRight(
          Effect.sleep(Duration.millis(plan.atMillis)),
          Effect.gen(function*() {
            switch (plan.action) {
              case "pauseClient":
              case "pauseServer": {
                const channel = plan.action === "pauseClient" ? client : server
                yield* ignore(channel.pause)
                yield* canary
                yield* Effect.sleep(Duration.millis(plan.millis))
                yield* ignore(channel.start)
                return
              }
              case "closeClient":
                yield* Scope.close(clientScope, Exit.void)
                return yield* canary
              case "closeServer":
                yield* Scope.close(serverScope, Exit.void)
                return yield* canary
              case "rescind":
                yield* faults.rescind()
                return yield* canary
              case "killClient":
                // No canary: a dead guest allocates nothing, and the host may still hold its pages.
                yield* faults.kill("client")
                return
              case "killServer":
                yield* faults.kill("server")
                return yield* canary
              case "corruptRing":
                yield* faults.corruptRing(plan.millis % 2 === 0 ? "clientToServer" : "serverToClient")
                return
              case "stallServerReader":
                yield* faults.stallReader("server", plan.millis)
                return
              case "holdGpadlCreated":
                yield* faults.holdMessages(["GpadlCreated"])
                yield* Effect.sleep(Duration.millis(plan.millis))
                yield* faults.releaseMessages
                return
            }
          })
        ),
        outer
      ))

    // Active phase: until every request resolved, or a while (requests whose handler never ends
    // resolve only at the close).
    yield* Effect.race(Fiber.awaitAll(requestFibers), Effect.sleep(Duration.millis(150)))
    yield* Fiber.awaitAll(actionFibers)

    state.phase = "close"
    const closeClient = Scope.close(clientScope, Exit.void)
    const closeServer = Scope.close(serverScope, Exit.void)
    if (scenario.closeOrder === "clientFirst") yield* Effect.zipRight(closeClient, closeServer)
    else if (scenario.closeOrder === "serverFirst") yield* Effect.zipRight(closeServer, closeClient)
    else yield* Effect.all([closeClient, closeServer], { concurrency: 2, discard: true })

    state.phase = "resolve"
    const unresolved = yield* Effect.timeout(Fiber.awaitAll(requestFibers), Duration.millis(5000)).pipe(Effect.either)
    if (Either.isLeft(unresolved)) fail(state, "requests still waiting 5 s after both channels closed")
    for (const plan of scenario.requests) {
      const exit = results.get(plan.index)
      if (exit === undefined) {
        fail(state, `request ${plan.index} (${plan.kind}, ${plan.outcome}) never resolved, in ${stage.get(plan.index) ?? "request"}`)
        continue
      }
      if (Exit.isSuccess(exit)) {
        state.results.success = (state.results.success ?? 0) + 1
        const value = exit.value.subarray(0, 8)
        if (!sameBytes(value, reply(plan.index)) && !sameBytes(value, FAILURE)) {
          fail(state, `request ${plan.index} got a reply that is not its own: ${Array.from(value).join(",")}`)
        }
        if (state.failedPackets.has(plan.index)) {
          fail(state, `request ${plan.index}: completed (${Array.from(value).join(",")}) although its packet was failed`)
        }
      } else {
        const failure = Cause.failureOption(exit.cause)
        const tag = Option.isSome(failure)
          ? (failure.value as { _tag?: string })._tag ?? "unknown"
          : Cause.isInterruptedOnly(exit.cause)
          ? "interrupted"
          : "defect"
        state.results[tag] = (state.results[tag] ?? 0) + 1
        if (tag === "defect") fail(state, `request ${plan.index} died: ${Cause.pretty(exit.cause).slice(0, 300)}`)
      }
    }
    for (const buffer of canaries) {
      const at = buffer.bytes.findIndex((b) => b !== CANARY)
      if (at >= 0) {
        const bytes = Array.from(buffer.bytes.subarray(at - (at % 8), at - (at % 8) + 8), (b) => b.toString(16).padStart(2, "0"))
        fail(state, `canary written after its pages were freed and reused: offset ${at} (page offset ${at % 4096}): ${bytes.join(" ")}`)
      }
    }
    state.phase = "teardown"
    yield* Scope.close(outer, Exit.void)
    state.phase = "stats"
    const stats = yield* control.stats
    for (const [key, value] of Object.entries(stats)) {
      const mustBeZero = [
        "openChannels",
        "offers",
        "outstandingTransactions",
        "outstandingPackets",
        "gpadls",
        "gpadlsMapped",
        "guestPagesAllocated",
        "pinnedBuffers",
        "liveViews"
      ]
      if (mustBeZero.includes(key) && value !== 0) fail(state, `${key} is ${value} after everything closed`)
    }
    if (state.handlersStarted !== state.handlersEnded) {
      fail(state, `${state.handlersStarted - state.handlersEnded} handler(s) still running after everything closed`)
    }
    state.faults = yield* faults.stats
  })

/** Runs one scenario with a fresh in-memory bus under the fault-injecting transport. */
export const runScenario = (scenario: Scenario, options: { readonly timeoutMillis?: number } = {}): Effect.Effect<Report> =>
  Effect.gen(function*() {
    const started = Date.now()
    const state: State = {
      phase: "start",
      failures: [],
      outcomes: Object.fromEntries(OUTCOMES.map((o) => [o, 0])) as Record<Outcome, number>,
      results: {},
      handlersStarted: 0,
      handlersEnded: 0,
      failedPackets: new Set(),
      faults: undefined
    }
    const supervisor = yield* Supervisor.track
    const layer = FaultInjectingTransport.layer(scenario.faults).pipe(
      Layer.provideMerge(InMemoryTransport.layerConfig({ memoryPages: 1024 })),
      Layer.orDie
    )
    // Handler failures are the point of the exercise: their warnings would drown the report.
    const run = scenarioBody(scenario, state).pipe(
      Effect.provide(layer),
      Effect.supervised(supervisor),
      Logger.withMinimumLogLevel(LogLevel.None)
    )
    // Disconnected: a scenario whose close hangs is reported, not waited for.
    const exit = yield* Effect.exit(Effect.timeout(Effect.disconnect(run), Duration.millis(options.timeoutMillis ?? 10_000)))
    if (Exit.isFailure(exit)) {
      const failure = Cause.failureOption(exit.cause)
      if (Option.isSome(failure)) fail(state, `hung: no progress for ${options.timeoutMillis ?? 10_000} ms`)
      else fail(state, `died: ${Cause.pretty(exit.cause).slice(0, 500)}`)
    } else {
      state.phase = "fibers"
      const live = yield* Effect.gen(function*() {
        for (let i = 0; i < 100; i++) {
          const fibers = yield* supervisor.value
          const running = fibers.filter((f) => f.unsafePoll() === null)
          if (running.length === 0) return 0
          yield* Effect.sleep(Duration.millis(5))
        }
        return (yield* supervisor.value).filter((f) => f.unsafePoll() === null).length
      })
      if (live > 0) fail(state, `${live} fiber(s) still alive 500 ms after everything closed`)
    }
    return {
      seed: scenario.seed,
      ok: state.failures.length === 0,
      failures: state.failures,
      phase: state.phase,
      outcomes: state.outcomes,
      results: state.results,
      faults: state.faults,
      millis: Date.now() - started
    } satisfies Report
  })

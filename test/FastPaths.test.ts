// The channel's fast paths (issue 9): handlers returning an `Exit` settled inline, batches fed to the
// serve pool with one guard per batch, chunked packets, cheap requests. Each keeps the exactly-once
// completion guarantee on every exit.
import { assert, describe, it } from "@effect/vitest"
import { Chunk, Deferred, Effect, Exit, Fiber, FiberId, Ref, Scope, Stream } from "effect"
import type * as IncomingPacket from "../src/IncomingPacket.js"
import { eventually, filled, openPair, settle, withBus } from "./utils/channels.js"
import { assertBytes, assertLeakFree, childScope } from "./utils/semantics.js"

const FAILURE = filled(0xee)

describe("serve: handlers that return an Exit", () => {
  it.scoped("an Exit handler that fails completes its packet with the failure payload, reported once", () =>
    Effect.gen(function*() {
      const scope = yield* childScope
      const { client, server } = yield* openPair({ server: { failureCompletion: FAILURE } }).pipe(Scope.extend(scope))
      const calls = yield* Ref.make(0)
      yield* Effect.forkIn(
        server.serve((packet: IncomingPacket.IncomingPacket) => {
          // Plain synchronous code returning an Exit: no interpreter runs for this packet.
          Effect.runSync(Ref.update(calls, (n) => n + 1))
          return packet.payload[0] === 1 ? Exit.fail("refused") : Exit.succeed(filled(0x42))
        }),
        scope
      )
      const refused = yield* client.request(filled(1))
      assertBytes(refused, FAILURE)
      const accepted = yield* client.request(filled(2))
      assertBytes(accepted, filled(0x42))
      // Effect.fail / Effect.succeed are Exits as well.
      assert.isTrue(Exit.isExit(Effect.fail("x")) && Exit.isExit(Effect.succeed(1)) && Exit.isExit(Effect.void))
      const stats = yield* server.stats
      assert.strictEqual(yield* Ref.get(calls), 2)
      assert.strictEqual(stats.handlerFailures, 1)
      assert.strictEqual(stats.autoCompleted, 1)
      assert.strictEqual(stats.completionsSent, 2)
      assert.strictEqual(stats.packetsOutstanding, 0)
      yield* Scope.close(scope, Exit.void)
      yield* assertLeakFree("exit handler")
    }).pipe(withBus))

  it.scoped("a serve interrupted in the middle: the packet in hand gets the failure payload, the queued ones wait for the next consumer", () =>
    Effect.gen(function*() {
      const scope = yield* childScope
      const { client, server } = yield* openPair({ server: { failureCompletion: FAILURE } }).pipe(Scope.extend(scope))
      // Five requests queued before serve starts: one drain, all five queued for the single worker.
      const requests = yield* Effect.forEach([1, 2, 3, 4, 5], (i) => Effect.fork(client.request(filled(i))))
      yield* settle()
      const seen = yield* Ref.make<Array<number>>([])
      const blocked = yield* Deferred.make<void>()
      const serving = yield* Effect.fork(server.serve((packet: IncomingPacket.IncomingPacket) => {
        const n = packet.payload[0]!
        Effect.runSync(Ref.update(seen, (all) => [...all, n]))
        // Packet 1: an Exit, settled inline; packet 2: an Effect that never ends.
        if (n === 1) return Exit.succeed(filled(0x11))
        return Effect.zipRight(Deferred.succeed(blocked, undefined), Effect.never)
      }, { concurrency: 1 }))
      yield* Deferred.await(blocked)
      assert.strictEqual((yield* server.stats).packetsOutstanding, 4, "packet 2 in hand, 3-5 queued")
      yield* Fiber.interrupt(serving)
      assertBytes(yield* Fiber.join(requests[0]!), filled(0x11))
      // The packet in hand when the worker was interrupted: completed by the guard.
      assertBytes(yield* Fiber.join(requests[1]!), FAILURE)
      assert.deepStrictEqual(yield* Ref.get(seen), [1, 2])
      // Packets 3-5 were never claimed: nothing lost, they wait for the next consumer.
      assert.strictEqual((yield* server.stats).packetsOutstanding, 3)
      yield* Effect.forkIn(server.serve((packet: IncomingPacket.IncomingPacket) => Exit.succeed(packet.payload)), scope)
      for (const i of [2, 3, 4]) assertBytes(yield* Fiber.join(requests[i]!), filled(i + 1))
      const stats = yield* server.stats
      assert.strictEqual(stats.completionsSent, 5)
      assert.strictEqual(stats.autoCompleted, 1)
      assert.strictEqual(stats.packetsOutstanding, 0)
      yield* Scope.close(scope, Exit.void)
      yield* assertLeakFree("interrupted serve")
    }).pipe(withBus))

  it.scoped("a handler that throws is a defect: its packet gets the failure payload, the next is served", () =>
    Effect.gen(function*() {
      const scope = yield* childScope
      const { client, server } = yield* openPair({ server: { failureCompletion: FAILURE } }).pipe(Scope.extend(scope))
      yield* Effect.forkIn(
        server.serve((packet: IncomingPacket.IncomingPacket) => {
          if (packet.payload[0] === 1) throw new Error("handler bug")
          return Effect.succeed(packet.payload)
        }),
        scope
      )
      assertBytes(yield* client.request(filled(1)), FAILURE)
      assertBytes(yield* client.request(filled(2)), filled(2))
      assert.strictEqual((yield* server.stats).handlerFailures, 1)
      yield* Scope.close(scope, Exit.void)
      yield* assertLeakFree("throwing handler")
    }).pipe(withBus))

  it.scoped("handlers that suspend run side by side up to `concurrency`; the rest wait in order", () =>
    Effect.gen(function*() {
      const scope = yield* childScope
      const { client, server } = yield* openPair().pipe(Scope.extend(scope))
      let running = 0
      let peak = 0
      const started: Array<number> = []
      const gate = yield* Deferred.make<void>()
      const done = yield* Deferred.make<void>()
      yield* Effect.forkIn(
        server.serve((packet: IncomingPacket.IncomingPacket) =>
          Effect.gen(function*() {
            running++
            peak = Math.max(peak, running)
            started.push(packet.payload[0]!)
            yield* Deferred.await(gate)
            running--
            if (started.length === 6 && running === 0) yield* Deferred.succeed(done, undefined)
          }), { concurrency: 3 }),
        scope
      )
      yield* settle()
      // One write, one signal, one drain: a single worker is woken for all six. The others are woken
      // one by one because each handler suspends.
      yield* client.sendBatch([1, 2, 3, 4, 5, 6].map((i) => filled(i)))
      yield* eventually(Effect.sync(() => running === 3), "three handlers suspended at once")
      yield* settle()
      assert.strictEqual(peak, 3, "never more than concurrency")
      assert.deepStrictEqual(started, [1, 2, 3], "claimed in order")
      yield* Deferred.succeed(gate, undefined)
      yield* Deferred.await(done)
      assert.deepStrictEqual(started, [1, 2, 3, 4, 5, 6])
      assert.strictEqual((yield* server.stats).packetsOutstanding, 0)
      yield* Scope.close(scope, Exit.void)
      yield* assertLeakFree("suspending handlers")
    }).pipe(withBus))

  it.scoped("serveScoped gives each packet a scope, closed when its handler ends", () =>
    Effect.gen(function*() {
      const scope = yield* childScope
      const { client, server } = yield* openPair().pipe(Scope.extend(scope))
      const open = yield* Ref.make(0)
      yield* Effect.forkIn(
        server.serveScoped(() =>
          Effect.gen(function*() {
            yield* Effect.acquireRelease(Ref.update(open, (n) => n + 1), () => Ref.update(open, (n) => n - 1))
            return filled(yield* Ref.get(open))
          })
        ),
        scope
      )
      assertBytes(yield* client.request(filled(1)), filled(1))
      assertBytes(yield* client.request(filled(2)), filled(1))
      yield* eventually(Effect.map(Ref.get(open), (n) => n === 0), "every packet's scope closed")
      yield* Scope.close(scope, Exit.void)
      yield* assertLeakFree("serveScoped")
    }).pipe(withBus))
})

describe("requests: a resumer per transaction, no Deferred, no span by default", () => {
  it.scoped("a request interrupted while its completion is being read: settled once, its id freed, nothing reported", () =>
    Effect.gen(function*() {
      const scope = yield* childScope
      const { client, server } = yield* openPair().pipe(Scope.extend(scope))
      yield* Effect.forkIn(server.serve((packet: IncomingPacket.IncomingPacket) => Exit.succeed(packet.payload)), scope)
      for (const round of [1, 2, 3]) {
        const holder: { fiber?: Fiber.RuntimeFiber<Uint8Array, unknown> } = {}
        const settled = yield* Ref.make(0)
        // onSettled runs inside the completion's read (the id is freed there): the interruption lands
        // between the resumer being called and the requesting fiber running again.
        const request = yield* Effect.fork(client.request(filled(round), {
          onSettled: () => {
            Effect.runSync(Ref.update(settled, (n) => n + 1))
            holder.fiber?.unsafeInterruptAsFork(FiberId.none)
          }
        }))
        holder.fiber = request
        const exit = yield* Fiber.await(request)
        // Either outcome is allowed — the reply, or the interruption — but never a hang or a second settle.
        if (Exit.isSuccess(exit)) assertBytes(exit.value, filled(round))
        else assert.isTrue(Exit.isInterrupted(exit))
        yield* eventually(Effect.map(client.stats, (s) => s.requestsOutstanding === 0), "id freed")
        assert.strictEqual(yield* Ref.get(settled), 1)
      }
      const stats = yield* client.stats
      assert.strictEqual(stats.unknownCompletions, 0)
      assert.strictEqual(stats.completionsReceived, 3)
      // The channel goes on: a plain request after them.
      assertBytes(yield* client.request(filled(9)), filled(9))
      yield* Scope.close(scope, Exit.void)
      yield* assertLeakFree("interrupted while settling")
    }).pipe(withBus))

  it.scoped("a request interrupted while it waits: the id stays reserved until its completion, then freed silently", () =>
    Effect.gen(function*() {
      const scope = yield* childScope
      const { client, server } = yield* openPair().pipe(Scope.extend(scope))
      const request = yield* Effect.fork(client.request(filled(1)))
      yield* settle()
      yield* Fiber.interrupt(request)
      assert.strictEqual((yield* client.stats).requestsOutstanding, 1, "reserved after the interruption")
      const packet = yield* server.take.pipe(Effect.flatMap((p) => Effect.as(p.complete(filled(2)), p)), Effect.scoped)
      assertBytes(packet.payload, filled(1))
      yield* eventually(Effect.map(client.stats, (s) => s.requestsOutstanding === 0), "freed by its completion")
      assert.strictEqual((yield* client.stats).unknownCompletions, 0)
      yield* Scope.close(scope, Exit.void)
      yield* assertLeakFree("abandoned id")
    }).pipe(withBus))
})

describe("packets: a stream of chunks, one pull per batch", () => {
  it.scoped("a chunk dropped with packets pending: each still pending is completed once with the failure payload", () =>
    Effect.gen(function*() {
      const scope = yield* childScope
      const { client, server } = yield* openPair({ server: { failureCompletion: FAILURE } }).pipe(Scope.extend(scope))
      const requests = yield* Effect.forEach([1, 2, 3, 4], (i) => Effect.fork(client.request(filled(i))))
      yield* settle()
      // One pull: the whole batch. The consumer completes packet 1 only, then drops the chunk by
      // pulling the next one (which never comes: it is interrupted while waiting).
      const sizes = yield* Ref.make<Array<number>>([])
      const consumer = yield* Effect.fork(Stream.runForEachChunk(server.packets, (chunk) =>
        Effect.gen(function*() {
          yield* Ref.update(sizes, (all) => [...all, Chunk.size(chunk)])
          const first = Chunk.unsafeGet(chunk, 0)
          if (first.payload[0] === 1) yield* first.complete(filled(0x10))
        })))
      assertBytes(yield* Fiber.join(requests[0]!), filled(0x10))
      // Pulling the next chunk ended the first: packets 2-4 completed with the failure payload.
      for (const request of requests.slice(1)) assertBytes(yield* Fiber.join(request), FAILURE)
      assert.deepStrictEqual(yield* Ref.get(sizes), [4])
      // A second complete of an auto-completed packet is refused.
      yield* Fiber.interrupt(consumer)
      const stats = yield* server.stats
      assert.strictEqual(stats.completionsSent, 4)
      assert.strictEqual(stats.autoCompleted, 3)
      assert.strictEqual(stats.packetsOutstanding, 0)
      yield* Scope.close(scope, Exit.void)
      yield* assertLeakFree("chunk dropped")
    }).pipe(withBus))

  it.scoped("a chunk's packets stay the consumer's while it works on them; the stream's end settles them", () =>
    Effect.gen(function*() {
      const scope = yield* childScope
      const { client, server } = yield* openPair({ server: { failureCompletion: FAILURE } }).pipe(Scope.extend(scope))
      const requests = yield* Effect.forEach([1, 2], (i) => Effect.fork(client.request(filled(i))))
      yield* settle()
      const held = yield* Deferred.make<Chunk.Chunk<unknown>>()
      // take(1) of the chunked stream: the stream ends after the first element, which settles its chunk.
      const firsts = yield* Stream.runCollect(Stream.take(server.packets, 1))
      assert.strictEqual(Chunk.size(firsts), 1)
      yield* Deferred.succeed(held, firsts)
      for (const request of requests) assertBytes(yield* Fiber.join(request), FAILURE)
      // The per-packet form still hands one packet per pull.
      const one = yield* Effect.fork(client.request(filled(7)))
      const seen = yield* Stream.runHead(Stream.mapEffect(server.packetsOneByOne, (p) => Effect.as(p.complete(p.payload), p.payload[0])))
      assert.deepStrictEqual(seen._tag === "Some" ? seen.value : undefined, 7)
      assertBytes(yield* Fiber.join(one), filled(7))
      yield* Scope.close(scope, Exit.void)
      yield* assertLeakFree("stream end")
    }).pipe(withBus))
})

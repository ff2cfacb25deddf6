// FaultInjectingTransport (issue 8, D): each fault does what it says and is counted, the same seed
// makes the same decisions, faults on demand and at a chosen step, and everything closes leak-free.
// Real time (it.live) with millisecond delays: the faults themselves use timers.
import { assert, describe, it } from "@effect/vitest"
import { Cause, Deferred, Effect, Either, Exit, Fiber, Layer, Option, Scope } from "effect"
import * as Channel from "../src/Channel.js"
import * as FaultInjectingTransport from "../src/FaultInjectingTransport.js"
import * as GuestMemory from "../src/GuestMemory.js"
import * as InMemoryTransport from "../src/InMemoryTransport.js"
import * as Transport from "../src/Transport.js"
import { eventually, filled, INSTANCE, openPair, openPairInScope, settle, TYPE } from "./utils/channels.js"
import { assertBytes, assertLeakFree, hold } from "./utils/semantics.js"

const faulty = (config: FaultInjectingTransport.FaultConfigInput) =>
  FaultInjectingTransport.layer(config).pipe(Layer.provideMerge(InMemoryTransport.layerConfig({ memoryPages: 4096 })), Layer.orDie)

const echo = (channel: Channel.OpenedChannel) => Effect.forkScoped(channel.serve((packet) => Effect.succeed(packet.payload.slice(0, 8))))

const roundTrips = (client: Channel.OpenedChannel, n: number) =>
  Effect.forEach(Array.from({ length: n }, (_, i) => i), (i) =>
    Effect.map(client.request(filled(i), { timeout: "10 seconds" }), (reply) => assertBytes(reply, filled(i))), { discard: true })

const faultStats = Effect.flatMap(FaultInjectingTransport.FaultControl, (control) => control.stats)

describe("FaultInjectingTransport", () => {
  it.live("a Layer over the in-memory transport: Transport is wrapped, Control and GuestMemory stay", () =>
    Effect.gen(function*() {
      const transport = yield* Transport.Transport
      assert.strictEqual(transport.name, "fault-injecting(in-memory)")
      yield* InMemoryTransport.Control
      yield* GuestMemory.GuestMemory
      const result = FaultInjectingTransport.decodeConfig({ signals: { drop: 2 } })
      assert.strictEqual(Either.isLeft(result) && result.left.field, "signals.drop")
    }).pipe(Effect.provide(faulty({}))))

  it.live("dropped signals are lost; spurious signals recover them (a polling driver)", () =>
    Effect.gen(function*() {
      yield* Effect.scoped(Effect.gen(function*() {
        const { client, server } = yield* openPair()
        yield* echo(server)
        yield* roundTrips(client, 20)
      }))
      const stats = yield* faultStats
      assert.isAbove(stats.signalDropped, 10)
      assert.isAbove(stats.signalSpurious, 0)
      yield* assertLeakFree()
    }).pipe(Effect.provide(faulty({ seed: 1, signals: { drop: 0.7, spuriousEveryMillis: 1 } }))))

  it.live("duplicated, delayed and reordered signals change nothing but timing", () =>
    Effect.gen(function*() {
      yield* Effect.scoped(Effect.gen(function*() {
        const { client, server } = yield* openPair()
        yield* echo(server)
        yield* Effect.all([roundTrips(client, 30), roundTrips(client, 30)], { concurrency: 2 })
      }))
      const stats = yield* faultStats
      assert.isAbove(stats.signalDuplicated, 0)
      assert.isAbove(stats.signalDelayed, 0)
      assert.isAbove(stats.signalReordered, 0)
      yield* assertLeakFree()
    }).pipe(Effect.provide(faulty({ seed: 2, signals: { duplicate: 0.2, delay: 0.2, reorder: 0.2, maxDelayMillis: 1 } }))))

  it.live("the same seed makes the same decisions", () =>
    Effect.gen(function*() {
      const run = (seed: number) =>
        Effect.gen(function*() {
          yield* Effect.scoped(Effect.gen(function*() {
            const { client, server } = yield* openPair()
            yield* echo(server)
            yield* roundTrips(client, 15)
          }))
          const control = yield* FaultInjectingTransport.FaultControl
          return (yield* control.log).map((entry) => `${entry.step}:${entry.fault}`).join(" ")
        }).pipe(Effect.provide(faulty({ seed, signals: { duplicate: 0.3 } })))
      const first = yield* run(9)
      assert.isAbove(first.length, 0)
      assert.strictEqual(yield* run(9), first)
      assert.notStrictEqual(yield* run(10), first)
    }))

  it.live("hold GPADL_CREATED: a creator interrupted while it waits leaks nothing; release lets the next one through", () =>
    Effect.gen(function*() {
      const control = yield* FaultInjectingTransport.FaultControl
      const memory = yield* GuestMemory.GuestMemory
      yield* Effect.scoped(Effect.gen(function*() {
        const { client } = yield* openPair()
        yield* control.holdMessages(["GpadlCreated"])
        const buffer = yield* memory.allocate(2)
        const creator = yield* Effect.fork(Effect.scoped(client.createGpadl({ pfns: buffer.pfns }, { buffer })))
        yield* Effect.sleep(5)
        assert.deepStrictEqual(yield* control.heldMessages, ["GpadlCreated"])
        assert.isNull(creator.unsafePoll())
        yield* Fiber.interrupt(creator)
        assert.strictEqual(yield* control.releaseMessages, 1)
        const handle = yield* Effect.scoped(client.createGpadl({ pfns: buffer.pfns }, { buffer }))
        assert.isAbove(handle, 0)
      }))
      yield* assertLeakFree()
    }).pipe(Effect.provide(faulty({}))))

  it.live("regression (sim seed 5): a GPADL header delivered after the rescind is refused, not kept by the host forever", () =>
    Effect.gen(function*() {
      const control = yield* FaultInjectingTransport.FaultControl
      const memory = yield* GuestMemory.GuestMemory
      const pair = yield* openPairInScope()
      yield* control.holdMessages(["GpadlHeader"])
      const buffer = yield* memory.allocate(1)
      const creator = yield* Effect.fork(Effect.scoped(pair.client.createGpadl({ pfns: buffer.pfns }, { buffer })))
      yield* Effect.sleep(2)
      assert.isTrue(yield* control.rescind())
      const created = yield* Fiber.await(creator)
      assert.isTrue(Exit.isFailure(created))
      assert.strictEqual(yield* control.releaseMessages, 1)
      assert.strictEqual((yield* InMemoryTransport.Control.pipe(Effect.flatMap((c) => c.stats))).gpadls, 0)
      yield* pair.close
    }).pipe(Effect.scoped, Effect.zipRight(assertLeakFree()), Effect.provide(faulty({}))))

  it.live("delayed control messages keep their order: opens, GPADLs and closes all complete", () =>
    Effect.gen(function*() {
      const memory = yield* GuestMemory.GuestMemory
      for (let i = 0; i < 8; i++) {
        yield* Effect.scoped(Effect.gen(function*() {
          // One instance each: with the host's messages late, the last rescind may not have arrived yet.
          const { client, server } = yield* openPair({ instance: `9e5e1a6f-2c34-4b8e-9d2a-0b1c2d3e4f${(0x10 + i).toString(16)}` })
          yield* echo(server)
          const buffer = yield* memory.allocate(1)
          yield* Effect.scoped(client.createGpadl({ pfns: buffer.pfns }, { buffer }))
          yield* roundTrips(client, 2)
        }))
      }
      assert.isAbove((yield* faultStats).messageDelayed, 10)
      yield* assertLeakFree()
    }).pipe(Effect.provide(faulty({ seed: 4, messages: { delay: 0.5, maxDelayMillis: 2 } }))))

  it.live("corrupted offers: the client opens or fails with a typed error, never hangs, nothing leaks", () =>
    Effect.gen(function*() {
      const server = yield* Effect.fork(Effect.scoped(Channel.open({
        role: "server",
        interfaceType: TYPE,
        interfaceInstance: "9e5e1a6f-2c34-4b8e-9d2a-0b1c2d3e4f50",
        openTimeoutMillis: 100
      })))
      const client = yield* Effect.exit(Effect.scoped(Channel.open({ role: "client", interfaceType: TYPE, openTimeoutMillis: 50 })))
      // A flipped byte spoils the offer (dropped: OpenTimeout), names another channel (refused by the
      // host) or lands in a field that changes nothing (the open works).
      const tag = Exit.isSuccess(client) ? "opened" : Cause.failureOption(client.cause).pipe(Option.map((e) => e._tag), Option.getOrNull)
      assert.oneOf(tag, ["opened", "OpenTimeout", "GpadlCreateFailed", "OpenRejected"])
      yield* Fiber.await(server)
      const stats = yield* faultStats
      assert.isAbove(stats.messageCorrupted, 0)
      yield* assertLeakFree()
    }).pipe(Effect.provide(faulty({ seed: 5, messages: { corrupt: 1, corruptOnly: ["OfferChannel"] } }))))

  it.live("a stalled reader sees nothing until the stall ends", () =>
    Effect.gen(function*() {
      const control = yield* FaultInjectingTransport.FaultControl
      yield* Effect.scoped(Effect.gen(function*() {
        const { client, server } = yield* openPair()
        yield* echo(server)
        yield* roundTrips(client, 1)
        assert.isTrue(yield* control.stallReader("server", 50))
        const request = yield* Effect.fork(client.request(filled(1)))
        yield* Effect.sleep(20)
        assert.isNull(request.unsafePoll())
        assertBytes(yield* Fiber.join(request), filled(1))
      }))
      assert.strictEqual((yield* faultStats).readerStalled, 1)
      yield* assertLeakFree()
    }).pipe(Effect.provide(faulty({}))))

  it.live.each(["rescind", "killClient", "killServer"] as const)("%s: both sides end with the matching reason, nothing leaks", (fault) =>
    Effect.gen(function*() {
      const control = yield* FaultInjectingTransport.FaultControl
      const pair = yield* openPairInScope()
      yield* Effect.forkIn(echo(pair.server).pipe(Scope.extend(pair.scope)), pair.scope)
      yield* roundTrips(pair.client, 3)
      const done = fault === "rescind"
        ? yield* control.rescind()
        : yield* control.kill(fault === "killClient" ? "client" : "server")
      assert.isTrue(done)
      const expected = { rescind: ["Rescinded", "Rescinded"], killClient: ["PeerClose", "PeerClose"], killServer: ["PeerClose", "Rescinded"] }[fault]
      assert.deepStrictEqual([yield* pair.server.closed, yield* pair.client.closed], expected)
      yield* pair.close
      yield* assertLeakFree(fault)
    }).pipe(Effect.provide(faulty({}))))

  it.live("a corrupted ring ends the reader's open period as Corrupt", () =>
    Effect.gen(function*() {
      const control = yield* FaultInjectingTransport.FaultControl
      const pair = yield* openPairInScope()
      yield* pair.client.send(filled(1)) // unread: the next descriptor is corrupted
      assert.isTrue(yield* control.corruptRing("clientToServer"))
      assert.strictEqual(yield* pair.server.closed, "Corrupt")
      yield* pair.close
      yield* assertLeakFree()
    }).pipe(Effect.provide(faulty({}))))

  it.live("schedule: a rescind at a chosen step", () =>
    Effect.gen(function*() {
      const control = yield* FaultInjectingTransport.FaultControl
      const pair = yield* openPairInScope()
      const stepped = yield* Deferred.make<void>()
      yield* Effect.forkIn(echo(pair.server).pipe(Scope.extend(pair.scope)), pair.scope)
      const results = yield* Effect.forEach(Array.from({ length: 40 }, (_, i) => i), (i) =>
        Effect.either(pair.client.request(filled(i), { timeout: "5 seconds" })))
      yield* Deferred.succeed(stepped, undefined)
      const failed = results.filter(Either.isLeft).map((r) => r.left._tag)
      assert.isAbove(failed.length, 0)
      for (const tag of failed) assert.oneOf(tag, ["ChannelClosed"])
      assert.strictEqual(yield* pair.client.closed, "Rescinded")
      assert.strictEqual((yield* control.stats).rescind, 1)
      yield* pair.close
      yield* assertLeakFree()
    }).pipe(Effect.provide(faulty({ schedule: [{ atStep: 30, fault: "rescind" }] }))))

  it.live("open waits through the fault layer like any transport (client before server)", () =>
    Effect.gen(function*() {
      const clientFiber = yield* Effect.fork(Effect.scoped(Effect.gen(function*() {
        const client = yield* Channel.open({ role: "client", interfaceType: TYPE })
        return yield* client.request(filled(3), { timeout: "5 seconds" })
      })))
      yield* Effect.sleep(5)
      yield* Effect.scoped(Effect.gen(function*() {
        const server = yield* Channel.open({ role: "server", interfaceType: TYPE, interfaceInstance: "9e5e1a6f-2c34-4b8e-9d2a-0b1c2d3e4f50" })
        yield* echo(server)
        assertBytes(yield* Fiber.join(clientFiber), filled(3))
      }))
      yield* assertLeakFree()
    }).pipe(Effect.provide(faulty({ seed: 3, signals: { delay: 0.5 }, messages: { delay: 0.5 } }))))

  it.live("regression (sim seed 402248): a killed guest's own close waits for the host to let go before its pins go", () =>
    Effect.gen(function*() {
      const control = yield* FaultInjectingTransport.FaultControl
      const memory = yield* GuestMemory.GuestMemory
      const bus = yield* InMemoryTransport.Control
      const serverFiber = yield* Effect.fork(Channel.open({ role: "server", interfaceType: TYPE, interfaceInstance: INSTANCE }))
      const clientScope = yield* Scope.make()
      const client = yield* Channel.open({ role: "client", interfaceType: TYPE, interfaceInstance: INSTANCE })
        .pipe(Scope.extend(clientScope))
      const server = yield* Fiber.join(serverFiber)
      const bufferScope = yield* Scope.make()
      const buffer = yield* memory.allocate(1).pipe(Scope.extend(bufferScope))
      buffer.bytes.fill(0x11)
      const request = yield* Effect.fork(Effect.either(client.request(filled(1), { external: [buffer] })))
      const held = yield* hold(server)
      yield* Scope.close(bufferScope, Exit.void) // the transaction pins it
      const view = (yield* held.packet.externalData)[0]!
      // The host has not processed the dead guest's CLOSECHANNEL yet (a delayed control message).
      yield* control.holdMessages(["CloseChannel"])
      const killing = yield* Effect.fork(control.kill("client"))
      yield* Effect.sleep(5)
      // The guest's own close of the killed channel (seed 402248: closeClient 1 ms after killClient).
      const closing = yield* Effect.fork(Scope.close(clientScope, Exit.void))
      yield* Effect.sleep(20)
      assert.isNull(closing.unsafePoll(), "the close waits for the host, as the kill's close does")
      assert.isAtLeast((yield* bus.stats).pinnedBuffers, 1, "the external buffer is still pinned")
      const reused = yield* memory.allocate(1)
      reused.bytes.fill(0x55)
      assert.deepStrictEqual(view.read(0, 8), Either.right(filled(0x11)), "the host still reads the request's own bytes")
      assert.strictEqual(yield* control.releaseMessages, 1)
      yield* Fiber.join(closing)
      assert.isTrue(yield* Fiber.join(killing))
      assert.isTrue(Either.isLeft(view.read(0, 8)), "the host's view died with the channel")
      assert.isTrue(reused.bytes.every((b) => b === 0x55), "nothing was written into the new allocation")
      yield* held.release
      assert.isTrue(Either.isLeft(yield* Fiber.join(request)))
    }).pipe(Effect.scoped, Effect.zipRight(assertLeakFree()), Effect.provide(faulty({}))))
  it.live("regression (sim seed 5000137): a closer interrupted while the corruption close runs returns only after the offer is gone", () =>
    Effect.gen(function*() {
      const control = yield* FaultInjectingTransport.FaultControl
      const bus = yield* InMemoryTransport.Control
      const serverScope = yield* Scope.make()
      const clientScope = yield* Scope.make()
      const serverFiber = yield* Effect.fork(
        Channel.open({ role: "server", interfaceType: TYPE, interfaceInstance: INSTANCE, drainTimeoutMillis: 60_000 })
          .pipe(Scope.extend(serverScope))
      )
      const client = yield* Channel.open({ role: "client", interfaceType: TYPE, interfaceInstance: INSTANCE })
        .pipe(Scope.extend(clientScope))
      const server = yield* Fiber.join(serverFiber)
      // A packet in a consumer's hands: the corruption close's drain waits for it.
      yield* client.send(filled(1))
      const held = yield* hold(server)
      assert.isTrue(yield* control.corruptRing("clientToServer"))
      assert.strictEqual(yield* server.closed, "Corrupt")
      // A handler closes its own channel's scope (closeFromHandler): it waits for the close under way…
      const closer = yield* Effect.fork(Scope.close(serverScope, Exit.void))
      yield* eventually(Effect.map(Fiber.status(closer), (status) => status._tag === "Suspended"), "the closer waits")
      // …and its owner interrupts it (the simulation tears its consumers down). Had the interrupt stopped
      // the scope's close there, the owner would go on while the offer is still up.
      const interrupting = yield* Effect.fork(Fiber.interrupt(closer))
      yield* settle(200)
      assert.isNull(interrupting.unsafePoll(), "the interrupted closer still waits for the close under way")
      assert.strictEqual((yield* bus.stats).offers, 1)
      yield* held.release
      yield* Fiber.join(interrupting)
      assert.strictEqual((yield* bus.stats).offers, 0, "the offer is gone once the closer returned")
      yield* Scope.close(clientScope, Exit.void)
    }).pipe(Effect.scoped, Effect.zipRight(assertLeakFree()), Effect.provide(faulty({}))))
})

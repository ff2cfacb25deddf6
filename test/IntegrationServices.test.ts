// Integration services end to end over the in-memory transport: a full host↔guest session (version
// negotiation, heartbeats, KVP, time samples, shutdown), negotiation failures, and malformed or
// truncated messages sent to the real guest from a hand-driven host (raw server channels).
// Time is TestClock time; nothing sleeps for real, and every wait for a guest answer is bounded by
// scheduler yields (`within`) so a missing answer fails the test instead of hanging it.
import { describe, it } from "@effect/vitest"
import { assertNone, assertSome, assertTrue, deepStrictEqual, strictEqual } from "@effect/vitest/utils"
import { Chunk, Deferred, Effect, Either, Exit, Fiber, Option, Ref, Scope, Stream, TestClock } from "effect"
import * as BinarySchema from "../src/BinarySchema.js"
import * as Channel from "../src/Channel.js"
import * as Ic from "../src/IcMessages.js"
import * as InMemoryTransport from "../src/InMemoryTransport.js"
import * as IS from "../src/IntegrationServices.js"
import { busStats, eventually, settle } from "./utils/channels.js"
import {
  exchangeRaw,
  heartbeatAnswer,
  heartbeatRequest,
  negotiateRequest,
  request,
  RESPONSE_FLAGS,
  sendRaw,
  shutdownRequest,
  V3,
  rawSession,
  within
} from "./utils/ic.js"

const v = (major: number, minor: number): Ic.IcVersion => ({ major, minor })

const session = (hostOptions: IS.HostOptions = {}, guestOptions: IS.GuestOptions = {}) =>
  Effect.all([IS.host(hostOptions), IS.guest(guestOptions)], { concurrency: 2 })

const withBus = <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.provide(self, InMemoryTransport.layer)

/** The first `n` guest events matching `tag`, bounded (never hangs). */
const eventsOf = <T extends IS.GuestEvent["_tag"]>(guest: IS.GuestServices, tag: T, n = 1) =>
  within(
    guest.events.pipe(
      Stream.filter((event): event is Extract<IS.GuestEvent, { _tag: T }> => event._tag === tag),
      Stream.take(n),
      Stream.runCollect,
      Effect.map(Chunk.toReadonlyArray)
    ),
    `${n} ${tag} event(s)`
  )

const statusOf = (reply: { readonly header: Ic.IcPacketHeader }) => reply.header.icmsg_hdr.status >>> 0

describe("IntegrationServices", () => {
  describe("full session host ↔ guest", () => {
    it.scoped("negotiates the highest common versions (host offering Linux's lists)", () =>
      Effect.gen(function*() {
        const [host, guest] = yield* session()
        const expected = new Map<IS.ServiceName, IS.Negotiation>([
          ["heartbeat", { framework: v(3, 0), message: v(3, 0) }],
          ["shutdown", { framework: v(3, 0), message: v(3, 2) }],
          ["timesync", { framework: v(3, 0), message: v(4, 0) }],
          ["kvp", { framework: v(3, 0), message: v(4, 0) }]
        ])
        // Linux's lists, most preferred first: the first entry is the highest common version.
        deepStrictEqual(Ic.UTIL_FW_VERSIONS[0], v(3, 0))
        deepStrictEqual(Ic.HB_VERSIONS[0], v(3, 0))
        deepStrictEqual(Ic.SD_VERSIONS[0], v(3, 2))
        deepStrictEqual(Ic.TS_VERSIONS[0], v(4, 0))
        deepStrictEqual(Ic.KVP_VERSIONS[0], v(4, 0))
        deepStrictEqual(new Map(host.negotiated), expected)
        deepStrictEqual(new Map(yield* guest.negotiated), expected)
        const negotiatedEvents = yield* eventsOf(guest, "Negotiated", 4)
        deepStrictEqual(new Set(negotiatedEvents.map((e) => e.service)), new Set(expected.keys()))
        // Every negotiate answer is status OK with the response flags.
        const replies = yield* host.replies
        strictEqual(replies.length, 4)
        for (const reply of replies) {
          strictEqual(reply.type, Ic.ICMSGTYPE_NEGOTIATE)
          strictEqual(reply.status, Ic.HV_S_OK)
          strictEqual(reply.header.icmsg_hdr.icflags, RESPONSE_FLAGS)
        }
      }).pipe(withBus))

    it.scoped("picks the highest common version whatever order and subset the host offers", () =>
      Effect.gen(function*() {
        const [host, guest] = yield* session({
          frameworkVersions: [v(1, 0), v(3, 0)],
          messageVersions: {
            heartbeat: [v(1, 0), v(3, 0), v(7, 7)],
            shutdown: [v(1, 0), v(3, 1)],
            timesync: [v(3, 0), v(1, 0)],
            kvp: [v(1, 0), v(3, 0)]
          }
        })
        deepStrictEqual(
          new Map(host.negotiated),
          new Map<IS.ServiceName, IS.Negotiation>([
            ["heartbeat", { framework: v(3, 0), message: v(3, 0) }],
            ["shutdown", { framework: v(3, 0), message: v(3, 1) }],
            ["timesync", { framework: v(3, 0), message: v(3, 0) }],
            ["kvp", { framework: v(3, 0), message: v(3, 0) }]
          ])
        )
        deepStrictEqual(new Map(yield* guest.negotiated), new Map(host.negotiated))
        // The agreed versions are used in the following requests' headers.
        yield* host.heartbeat
        const last = (yield* host.replies).at(-1)!
        deepStrictEqual(last.header.icmsg_hdr.icverframe, v(3, 0))
        deepStrictEqual(last.header.icmsg_hdr.icvermsg, v(3, 0))
      }).pipe(withBus))

    it.scoped("100 heartbeats, each answered with the sequence number plus one", () =>
      Effect.gen(function*() {
        const [host, guest] = yield* session()
        const answers: Array<bigint> = []
        for (let i = 0; i < 100; i++) answers.push(yield* host.heartbeat)
        // The host sends 0, 2, 4, …; Linux answers seq_num + 1.
        deepStrictEqual(answers, Array.from({ length: 100 }, (_, i) => BigInt(2 * i + 1)))
        strictEqual((yield* guest.stats).heartbeats, 100)
        const heartbeats = (yield* host.replies).filter((r) => r.type === Ic.ICMSGTYPE_HEARTBEAT)
        strictEqual(heartbeats.length, 100)
        assertTrue(heartbeats.every((r) => r.status === Ic.HV_S_OK && r.header.icmsg_hdr.icflags === RESPONSE_FLAGS))
        const events = yield* eventsOf(guest, "Heartbeat", 100)
        deepStrictEqual(events.map((e) => e.sequence), Array.from({ length: 100 }, (_, i) => BigInt(2 * i)))
        strictEqual((yield* guest.stats).malformed, 0)
      }).pipe(withBus))

    it.scoped("heartbeatEvery(1 second) over 10 seconds of TestClock time", () =>
      Effect.gen(function*() {
        const [host, guest] = yield* session()
        yield* host.heartbeatEvery("1 second")
        yield* TestClock.adjust("10 seconds")
        // Schedule.spaced: one at t = 0, then one per second → 11 by t = 10 s.
        yield* eventually(Effect.map(guest.stats, (s) => s.heartbeats >= 11), "11 heartbeats")
        yield* settle()
        const heartbeats = (yield* host.replies).filter((r) => r.type === Ic.ICMSGTYPE_HEARTBEAT)
        strictEqual(heartbeats.length, 11)
        strictEqual((yield* guest.stats).heartbeats, 11)
        assertTrue(heartbeats.every((r) => r.status === Ic.HV_S_OK))
        // No more without the clock moving.
        yield* settle()
        strictEqual((yield* guest.stats).heartbeats, 11)
      }).pipe(withBus))

    it.scoped("KVP set/get/delete/enumerate across pools with the default in-memory store", () =>
      Effect.gen(function*() {
        const [host, guest] = yield* session()
        // Enumerating an empty pool: the guest answers HV_S_CONT at index 0.
        deepStrictEqual(yield* host.kvpEnumerate(0), [])
        for (let pool = Ic.KVP_POOL_EXTERNAL; pool <= Ic.KVP_POOL_AUTO_INTERNAL; pool++) {
          yield* host.kvpSet(pool, "Shared", `pool-${pool}`)
          yield* host.kvpSet(pool, `Only${pool}`, String(pool * 10))
        }
        for (let pool = Ic.KVP_POOL_EXTERNAL; pool <= Ic.KVP_POOL_AUTO_INTERNAL; pool++) {
          assertSome(yield* host.kvpGet(pool, "Shared"), `pool-${pool}`)
          assertSome(yield* host.kvpGet(pool, `Only${pool}`), String(pool * 10))
          // A key of another pool is not visible here.
          assertNone(yield* host.kvpGet(pool, `Only${(pool + 1) % 5}`))
          deepStrictEqual(yield* host.kvpEnumerate(pool), [
            { key: "Shared", value: `pool-${pool}` },
            { key: `Only${pool}`, value: String(pool * 10) }
          ])
        }
        // Missing key: get → None, delete → false.
        assertNone(yield* host.kvpGet(0, "Missing"))
        strictEqual(yield* host.kvpDelete(0, "Missing"), false)
        // Overwrite keeps the insertion position; delete + set moves the key to the end.
        yield* host.kvpSet(0, "C", "3")
        yield* host.kvpSet(0, "Shared", "updated")
        deepStrictEqual((yield* host.kvpEnumerate(0)).map((e) => e.key), ["Shared", "Only0", "C"])
        strictEqual(yield* host.kvpDelete(0, "Shared"), true)
        assertNone(yield* host.kvpGet(0, "Shared"))
        strictEqual(yield* host.kvpDelete(0, "Shared"), false)
        yield* host.kvpSet(0, "Shared", "again")
        deepStrictEqual(yield* host.kvpEnumerate(0), [
          { key: "Only0", value: "0" },
          { key: "C", value: "3" },
          { key: "Shared", value: "again" }
        ])
        // The other pools are untouched; an empty value round-trips.
        assertSome(yield* host.kvpGet(1, "Shared"), "pool-1")
        yield* host.kvpSet(2, "Empty", "")
        assertSome(yield* host.kvpGet(2, "Empty"), "")
        // The guest's store is the one it exposes.
        assertSome(yield* guest.kvp.get(0, "C"), "3")
        strictEqual((yield* guest.stats).malformed, 0)
      }).pipe(withBus))

    it.scoped("KVP keys and values in UTF-16: non-ASCII, surrogate pairs, maximum sizes", () =>
      Effect.gen(function*() {
        const [host] = yield* session()
        const pairs: ReadonlyArray<readonly [string, string]> = [
          ["Grüße", "Ünïcødé ✓"],
          ["日本語のキー", "値"],
          ["emoji 😀", "𝄞 clef and 🎉"],
          ["e\u0301", "combining"]
        ]
        for (const [key, value] of pairs) yield* host.kvpSet(1, key, value)
        for (const [key, value] of pairs) assertSome(yield* host.kvpGet(1, key), value)
        deepStrictEqual(yield* host.kvpEnumerate(1), pairs.map(([key, value]) => ({ key, value })))

        // 255 UTF-16 code units of key and 1023 of value (the fields' capacity with the NUL).
        const maxKey = "😀".repeat(127) + "é"
        const maxValue = "ü" + "𝄞".repeat(511)
        strictEqual(maxKey.length, 255)
        strictEqual(maxValue.length, 1023)
        yield* host.kvpSet(3, maxKey, maxValue)
        assertSome(yield* host.kvpGet(3, maxKey), maxValue)
        deepStrictEqual(yield* host.kvpEnumerate(3), [{ key: maxKey, value: maxValue }])
        strictEqual(yield* host.kvpDelete(3, maxKey), true)
        assertNone(yield* host.kvpGet(3, maxKey))

        // One code unit more is refused by the host before anything is sent.
        const before = (yield* host.replies).length
        const longKey = yield* Effect.flip(host.kvpSet(3, maxKey + "x", "v"))
        strictEqual(longKey._tag, "ProtocolError")
        const longValue = yield* Effect.flip(host.kvpSet(3, "k", maxValue + "x"))
        strictEqual(longValue._tag, "ProtocolError")
        strictEqual((yield* host.replies).length, before)
      }).pipe(withBus))

    it.scoped("KVP on a user-supplied store; a pool beyond AUTO_INTERNAL is refused", () =>
      Effect.gen(function*() {
        const calls: Array<string> = []
        const backing = new Map<string, string>([["0\u0000Preset", "from the store"], ["0\u0000Other", "x"]])
        const store: IS.KvpStore = {
          get: (pool, key) =>
            Effect.sync(() => {
              calls.push(`get ${pool} ${key}`)
              return Option.fromNullable(backing.get(`${pool}\u0000${key}`))
            }),
          set: (pool, key, value) =>
            Effect.sync(() => {
              calls.push(`set ${pool} ${key}=${value}`)
              backing.set(`${pool}\u0000${key}`, value)
            }),
          delete: (pool, key) =>
            Effect.sync(() => {
              calls.push(`delete ${pool} ${key}`)
              return backing.delete(`${pool}\u0000${key}`)
            }),
          // Enumerates in reverse lexicographic order, to show the guest follows the store's order.
          enumerate: (pool, index) =>
            Effect.sync(() => {
              calls.push(`enumerate ${pool} ${index}`)
              const entries = Array.from(backing.entries())
                .filter(([k]) => k.startsWith(`${pool}\u0000`))
                .map(([k, value]) => [k.slice(`${pool}\u0000`.length), value] as const)
                .sort(([a], [b]) => (a < b ? 1 : a > b ? -1 : 0))
              return Option.fromNullable(entries[index])
            })
        }
        const [host, guest] = yield* session({}, { kvpStore: store })
        strictEqual(guest.kvp, store)
        assertSome(yield* host.kvpGet(0, "Preset"), "from the store")
        yield* host.kvpSet(0, "New", "value")
        strictEqual(backing.get("0\u0000New"), "value")
        deepStrictEqual(yield* host.kvpEnumerate(0), [
          { key: "Preset", value: "from the store" },
          { key: "Other", value: "x" },
          { key: "New", value: "value" }
        ])
        strictEqual(yield* host.kvpDelete(0, "Other"), true)
        deepStrictEqual(calls, [
          "get 0 Preset",
          "set 0 New=value",
          "enumerate 0 0",
          "enumerate 0 1",
          "enumerate 0 2",
          "enumerate 0 3",
          "delete 0 Other"
        ])
        // Pool 5 does not exist (hv_kvp_exchg_pool ends at 4): HV_E_FAIL, the store is not asked.
        const refused = yield* Effect.flip(host.kvpSet(5, "k", "v"))
        strictEqual(refused._tag, "ProtocolError")
        assertNone(yield* host.kvpGet(5, "Preset"))
        strictEqual(calls.length, 7)
        const kvpEvents = yield* eventsOf(guest, "Kvp", 9)
        deepStrictEqual(kvpEvents.slice(-2).map((e) => [e.pool, e.status >>> 0]), [[5, Ic.HV_E_FAIL], [5, Ic.HV_E_FAIL]])
      }).pipe(withBus))

    it.scoped("time samples: host time, guest clock and offset as a Stream", () =>
      Effect.gen(function*() {
        const [host, guest] = yield* session()
        const collector = yield* Effect.fork(Stream.runCollect(Stream.take(guest.timeSamples, 3)))
        assertNone(yield* guest.latestTimeSample)
        yield* TestClock.adjust("5 seconds")
        yield* host.sendTimeSample({ hostTimeMillis: 1_700_000_000_000 })
        yield* TestClock.adjust("2 seconds")
        yield* host.sendTimeSample({ hostTimeMillis: 1_234.5, flags: Ic.ICTIMESYNCFLAG_SYNC })
        yield* TestClock.adjust("3 seconds")
        // Without hostTimeMillis the host sends its own clock: offset 0.
        yield* host.sendTimeSample()
        const samples = Chunk.toReadonlyArray(yield* within(Fiber.join(collector), "3 samples"))
        deepStrictEqual(samples, [
          {
            hostTimeMillis: 1_700_000_000_000,
            guestTimeMillis: 5_000,
            offsetMillis: 1_700_000_000_000 - 5_000,
            flags: Ic.ICTIMESYNCFLAG_SAMPLE,
            version: "ref"
          },
          { hostTimeMillis: 1_234.5, guestTimeMillis: 7_000, offsetMillis: 1_234.5 - 7_000, flags: Ic.ICTIMESYNCFLAG_SYNC, version: "ref" },
          { hostTimeMillis: 10_000, guestTimeMillis: 10_000, offsetMillis: 0, flags: Ic.ICTIMESYNCFLAG_SAMPLE, version: "ref" }
        ])
        assertSome(yield* guest.latestTimeSample, samples[2]!)
        strictEqual((yield* guest.stats).timeSamples, 3)
        // 4.0 carries ictimesync_ref_data (22 bytes).
        const last = (yield* host.replies).at(-1)!
        strictEqual(last.type, Ic.ICMSGTYPE_TIMESYNC)
        strictEqual(last.status, Ic.HV_S_OK)
        strictEqual(last.header.pipe_hdr.msgsize, Ic.ICMSG_HDR_SIZE + Ic.ICTIMESYNC_REF_DATA_SIZE)
      }).pipe(withBus))

    it.scoped("legacy timesync: host offering only message version 3.0", () =>
      Effect.gen(function*() {
        const [host, guest] = yield* session({ messageVersions: { timesync: [v(3, 0)] } })
        deepStrictEqual(host.negotiated.get("timesync")?.message, v(3, 0))
        yield* TestClock.adjust("1 second")
        yield* host.sendTimeSample({ hostTimeMillis: 61_000 })
        const [sample] = Chunk.toReadonlyArray(yield* within(Stream.runCollect(Stream.take(guest.timeSamples, 1)), "sample"))
        deepStrictEqual(sample, {
          hostTimeMillis: 61_000,
          guestTimeMillis: 1_000,
          offsetMillis: 60_000,
          flags: Ic.ICTIMESYNCFLAG_SAMPLE,
          version: "legacy"
        })
        // ≤ 3.0 carries ictimesync_data (25 bytes).
        strictEqual((yield* host.replies).at(-1)!.header.pipe_hdr.msgsize, Ic.ICMSG_HDR_SIZE + Ic.ICTIMESYNC_DATA_SIZE)
      }).pipe(withBus))

    it.scoped("shutdown: acknowledged (status 0) before the user's shutdown effect runs", () =>
      Effect.gen(function*() {
        const log = yield* Ref.make<ReadonlyArray<string>>([])
        const gate = yield* Deferred.make<void>()
        const guestChannel = yield* Deferred.make<Channel.OpenedChannel>()
        const onShutdown = (request: IS.ShutdownRequest) =>
          Effect.gen(function*() {
            const channel = yield* Deferred.await(guestChannel)
            // The negotiate answer and the shutdown acknowledgement are already on the wire.
            const sent = (yield* channel.stats).packetsSent
            yield* Ref.update(log, (l) => [...l, `onShutdown ${request.kind} (guest packets sent: ${sent})`])
            yield* Deferred.await(gate)
            yield* Ref.update(log, (l) => [...l, "onShutdown done"])
          })
        const [host, guest] = yield* session({}, { onShutdown })
        yield* Deferred.succeed(guestChannel, guest.channels.get("shutdown")!)
        // The user effect is blocked on the gate, yet the host already has its answer.
        const status = yield* host.shutdown({ reasonCode: 7, timeoutSeconds: 30 })
        strictEqual(status, Ic.HV_S_OK)
        yield* Ref.update(log, (l) => [...l, "host got status"])
        deepStrictEqual(yield* guest.shutdownRequested, { kind: "shutdown", force: false, reasonCode: 7, timeoutSeconds: 30 })
        yield* eventually(Effect.map(Ref.get(log), (l) => l.length >= 2), "onShutdown started")
        yield* Deferred.succeed(gate, undefined)
        yield* eventually(Effect.map(Ref.get(log), (l) => l.length === 3), "onShutdown finished")
        const entries = yield* Ref.get(log)
        deepStrictEqual(new Set(entries.slice(0, 2)), new Set(["onShutdown shutdown (guest packets sent: 2)", "host got status"]))
        strictEqual(entries[2], "onShutdown done")
        strictEqual((yield* guest.stats).shutdowns, 1)
        const [event] = yield* eventsOf(guest, "Shutdown")
        strictEqual(event!.status, Ic.HV_S_OK)
      }).pipe(withBus))

    it.scoped("shutdown: reboot and force flags", () =>
      Effect.gen(function*() {
        const seen = yield* Ref.make<ReadonlyArray<IS.ShutdownRequest>>([])
        const [host, guest] = yield* session({}, { onShutdown: (r) => Ref.update(seen, (l) => [...l, r]) })
        strictEqual(yield* host.shutdown({ reboot: true }), Ic.HV_S_OK)
        strictEqual(yield* host.shutdown({ reboot: true, force: true, reasonCode: 3 }), Ic.HV_S_OK)
        strictEqual(yield* host.shutdown({ force: true }), Ic.HV_S_OK)
        yield* eventually(Effect.map(Ref.get(seen), (l) => l.length === 3), "three shutdown effects")
        deepStrictEqual(yield* Ref.get(seen), [
          { kind: "reboot", force: false, reasonCode: 0, timeoutSeconds: 0 },
          { kind: "reboot", force: true, reasonCode: 3, timeoutSeconds: 0 },
          { kind: "shutdown", force: true, reasonCode: 0, timeoutSeconds: 0 }
        ])
        // shutdownRequested is the first acknowledged request.
        strictEqual((yield* guest.shutdownRequested).kind, "reboot")
      }).pipe(withBus))

    it.scoped("shutdown: hibernate refused (HV_E_FAIL) unless allowHibernate", () =>
      Effect.gen(function*() {
        const ran = yield* Ref.make(0)
        const refusing = yield* rawSession(["shutdown"], { onShutdown: () => Ref.update(ran, (n) => n + 1) })
        const refused = yield* exchangeRaw(refusing.channel("shutdown"), 1n, shutdownRequest(4))
        strictEqual(statusOf(refused), Ic.HV_E_FAIL)
        strictEqual(refused.header.icmsg_hdr.icflags, RESPONSE_FLAGS)
        const [event] = yield* eventsOf(refusing.guest, "Shutdown")
        deepStrictEqual(event!.request.kind, "hibernate")
        strictEqual(event!.status >>> 0, Ic.HV_E_FAIL)
        strictEqual((yield* refusing.guest.stats).shutdowns, 0)
        yield* settle()
        strictEqual(yield* Ref.get(ran), 0)
        const pending = yield* Effect.fork(refusing.guest.shutdownRequested)
        yield* settle()
        assertTrue(Option.isNone(yield* pending.poll))
      }).pipe(withBus))

    it.scoped("shutdown: hibernate (with force) accepted when allowHibernate", () =>
      Effect.gen(function*() {
        const { channel, guest } = yield* rawSession(["shutdown"], { allowHibernate: true })
        const reply = yield* exchangeRaw(channel("shutdown"), 9n, shutdownRequest(4 | 1, 9))
        strictEqual(statusOf(reply), Ic.HV_S_OK)
        strictEqual(reply.header.icmsg_hdr.ictransaction_id, 9)
        deepStrictEqual(yield* guest.shutdownRequested, { kind: "hibernate", force: true, reasonCode: 0, timeoutSeconds: 0 })
      }).pipe(withBus))

    it.effect("leak check: nothing open or outstanding once the session's scope closes", () =>
      Effect.gen(function*() {
        const scope = yield* Scope.make()
        const [host, guest] = yield* session().pipe(Scope.extend(scope))
        yield* host.heartbeatEvery("1 second").pipe(Scope.extend(scope))
        yield* host.kvpSet(0, "k", "v")
        yield* host.sendTimeSample({ hostTimeMillis: 1 })
        yield* TestClock.adjust("3 seconds")
        strictEqual(yield* host.shutdown(), Ic.HV_S_OK)
        yield* eventually(Effect.map(guest.stats, (s) => s.heartbeats >= 4), "4 heartbeats")
        const open = yield* busStats
        strictEqual(open.openChannels, 4)
        yield* Scope.close(scope, Exit.void)
        const stats = yield* busStats
        strictEqual(stats.openChannels, 0)
        strictEqual(stats.outstandingTransactions, 0)
        strictEqual(stats.outstandingPackets, 0)
      }).pipe(withBus))
  })

  describe("negotiation failure", () => {
    it.scoped("host offering only heartbeat 9.9: IS.host fails with NegotiationFailed; the guest reports it", () =>
      Effect.gen(function*() {
        const [result, guest] = yield* Effect.all([
          Effect.either(IS.host({ messageVersions: { heartbeat: [v(9, 9)] } })),
          IS.guest()
        ], { concurrency: 2 })
        assertTrue(Either.isLeft(result))
        strictEqual(result.left._tag, "NegotiationFailed")
        if (result.left._tag === "NegotiationFailed") {
          strictEqual(result.left.service, "heartbeat")
          assertTrue(result.left.offered.includes("9.9"))
        }
        const [event] = yield* eventsOf(guest, "NegotiationFailed")
        strictEqual(event!.service, "heartbeat")
        strictEqual(event!.error._tag, "NegotiationFailed")
        deepStrictEqual(event!.error.offered, ["3.0", "1.0", "9.9"])
        deepStrictEqual(event!.error.supported, ["3.0", "1.0", "3.0", "1.0"])
        strictEqual((yield* guest.stats).negotiationFailures, 1)
        assertTrue(!(yield* guest.negotiated).has("heartbeat"))
      }).pipe(withBus))

    it.scoped("no common framework version: NegotiationFailed", () =>
      Effect.gen(function*() {
        const [result, guest] = yield* Effect.all([
          Effect.either(IS.host({ frameworkVersions: [v(2, 0)], services: ["kvp"] })),
          IS.guest({ services: ["kvp"] })
        ], { concurrency: 2 })
        assertTrue(Either.isLeft(result))
        strictEqual(result.left._tag, "NegotiationFailed")
        const [event] = yield* eventsOf(guest, "NegotiationFailed")
        strictEqual(event!.service, "kvp")
      }).pipe(withBus))

    it.scoped("the guest's negotiate answer without a common version has counts 0/0", () =>
      Effect.gen(function*() {
        const { channel, guest } = yield* rawSession(["heartbeat"])
        const hb = channel("heartbeat")
        const failed = yield* exchangeRaw(hb, 1n, negotiateRequest([v(3, 0), v(1, 0)], [v(9, 9)], 1))
        strictEqual(statusOf(failed), Ic.HV_S_OK)
        strictEqual(failed.header.icmsg_hdr.icflags, RESPONSE_FLAGS)
        strictEqual(failed.header.icmsg_hdr.icmsgsize, 0x10)
        const view = new DataView(failed.body.buffer, failed.body.byteOffset, failed.body.byteLength)
        strictEqual(view.getUint16(0, true), 0) // icframe_vercnt
        strictEqual(view.getUint16(2, true), 0) // icmsg_vercnt
        const decoded = BinarySchema.decodePrefix(Ic.IcMsgNegotiate)(failed.body)
        assertTrue(Either.isRight(decoded))
        deepStrictEqual(decoded.right.value.framework_versions, [])
        deepStrictEqual(decoded.right.value.message_versions, [])
        const [event] = yield* eventsOf(guest, "NegotiationFailed")
        strictEqual(event!.service, "heartbeat")

        // A negotiate announcing more versions than it carries (InvalidRequest): counts 0/0 too.
        const lying = negotiateRequest([v(3, 0)], [v(3, 0)], 2)
        new DataView(lying.buffer).setUint16(Ic.ICMSG_HDR + 2, 50, true)
        const invalid = yield* exchangeRaw(hb, 2n, lying)
        strictEqual(new DataView(invalid.body.buffer, invalid.body.byteOffset).getUint32(0, true), 0)
        strictEqual((yield* guest.stats).negotiationFailures, 2)

        // A proper negotiate afterwards succeeds: counts 1/1 and the chosen versions.
        const ok = yield* exchangeRaw(hb, 3n, negotiateRequest([v(1, 0), v(3, 0)], [v(3, 0), v(1, 0)], 3))
        const agreed = BinarySchema.decodePrefix(Ic.IcMsgNegotiate)(ok.body)
        assertTrue(Either.isRight(agreed))
        deepStrictEqual(agreed.right.value.framework_versions, [v(3, 0)])
        deepStrictEqual(agreed.right.value.message_versions, [v(3, 0)])
        deepStrictEqual((yield* guest.negotiated).get("heartbeat"), { framework: v(3, 0), message: v(3, 0) })
      }).pipe(withBus))
  })

  describe("malformed and truncated messages to the guest", () => {
    it.scoped("heartbeat channel: short packet, truncated body, unknown type — then a valid heartbeat", () =>
      Effect.gen(function*() {
        const { channel, guest } = yield* rawSession(["heartbeat"])
        const hb = channel("heartbeat")
        let tid = 100n
        const checkAlive = Effect.gen(function*() {
          tid++
          const reply = yield* exchangeRaw(hb, tid, heartbeatRequest(41n, Number(tid)))
          strictEqual(statusOf(reply), Ic.HV_S_OK)
          strictEqual(reply.header.icmsg_hdr.icflags, RESPONSE_FLAGS)
          strictEqual(heartbeatAnswer(reply), 42n)
        })
        yield* checkAlive

        // Shorter than the 28-byte header (20 bytes, padded to 24 on the wire): no answer, counted.
        yield* sendRaw(hb, 1n, heartbeatRequest(0n).subarray(0, 20))
        yield* eventually(Effect.map(guest.stats, (s) => s.malformed === 1), "short packet counted")
        const [shortEvent] = yield* eventsOf(guest, "Malformed")
        strictEqual(shortEvent!.error._tag, "ProtocolError")
        strictEqual(shortEvent!.service, "heartbeat")
        // The next answer is the valid heartbeat's: nothing was sent for the short packet.
        yield* checkAlive

        // A heartbeat whose body cannot hold seq_num (4 bytes; Linux needs 8 of the 40): HV_E_FAIL.
        const truncated = heartbeatRequest(5n, 2).subarray(0, Ic.ICMSG_HDR + 4)
        const failed = yield* exchangeRaw(hb, 2n, truncated)
        strictEqual(statusOf(failed), Ic.HV_E_FAIL)
        strictEqual(failed.header.icmsg_hdr.icflags, RESPONSE_FLAGS)
        strictEqual((yield* guest.stats).malformed, 2)
        yield* checkAlive

        // An unknown icmsgtype, and a message of another service on this channel: HV_E_FAIL (hv_util.c).
        const unknown = yield* exchangeRaw(hb, 3n, request(0x99, new Uint8Array(40), 3))
        strictEqual(statusOf(unknown), Ic.HV_E_FAIL)
        const wrongService = yield* exchangeRaw(hb, 4n, shutdownRequest(0, 4))
        strictEqual(statusOf(wrongService), Ic.HV_E_FAIL)
        strictEqual((yield* guest.stats).malformed, 4)
        yield* checkAlive

        // Sequence numbers wrap at 2^64.
        const wrapped = yield* exchangeRaw(hb, 5n, heartbeatRequest(0xffff_ffff_ffff_ffffn, 5))
        strictEqual(heartbeatAnswer(wrapped), 0n)
        strictEqual((yield* guest.stats).heartbeats, 5)
        // Answers: 5 heartbeats, the truncated one, the two unsupported — none for the short packet.
        strictEqual((yield* hb.stats).packetsReceived, 8)
      }).pipe(withBus))

    it.scoped("KVP channel: garbage operation, truncated message, bad pool — then valid operations", () =>
      Effect.gen(function*() {
        const { channel, guest } = yield* rawSession(["kvp", "heartbeat"])
        const kvp = channel("kvp")
        const hbAlive = (tid: bigint) =>
          Effect.map(exchangeRaw(channel("heartbeat"), tid, heartbeatRequest(tid * 2n, Number(tid))), (reply) => {
            strictEqual(heartbeatAnswer(reply), tid * 2n + 1n)
          })
        const kvpRequest = (message: Ic.KvpMessage, tid: number) => {
          const body = Ic.encodeKvpMessage(message)
          if (Either.isLeft(body)) throw new Error(body.left.message)
          return request(Ic.ICMSGTYPE_KVPEXCHANGE, body.right, tid)
        }
        const data = (key: string, value: string) => {
          const encoded = Ic.kvpStringValue(key, value)
          if (Either.isLeft(encoded)) throw new Error(encoded.left.message)
          return encoded.right
        }

        // kvp_hdr.operation 0xee: not an operation the guest knows → HV_ERROR_NOT_SUPPORTED.
        const garbageBody = new Uint8Array(Ic.HV_KVP_MSG_SIZE).fill(0xab)
        garbageBody[0] = 0xee
        garbageBody[1] = 0
        const garbage = yield* exchangeRaw(kvp, 1n, request(Ic.ICMSGTYPE_KVPEXCHANGE, garbageBody, 1))
        strictEqual(statusOf(garbage), Ic.HV_ERROR_NOT_SUPPORTED)
        yield* hbAlive(1n)

        // A SET whose hv_kvp_msg stops after 100 bytes: HV_E_FAIL, reported as malformed.
        const fullSet = kvpRequest({ _tag: "Set", kvp_hdr: { operation: Ic.KVP_OP_SET, pool: 0 }, kvp_set: { data: data("k", "v") } }, 2)
        const truncated = yield* exchangeRaw(kvp, 2n, fullSet.subarray(0, Ic.ICMSG_HDR + 100))
        strictEqual(statusOf(truncated), Ic.HV_E_FAIL)
        const malformedEvents = yield* eventsOf(guest, "Malformed")
        strictEqual(malformedEvents[0]!.service, "kvp")
        strictEqual((yield* guest.stats).malformed, 1)
        assertNone(yield* guest.kvp.get(0, "k"))
        yield* hbAlive(2n)

        // Only the kvp_hdr (4 bytes, padded): HV_E_FAIL too.
        const headerOnly = yield* exchangeRaw(kvp, 3n, request(Ic.ICMSGTYPE_KVPEXCHANGE, Uint8Array.of(Ic.KVP_OP_GET, 0, 0, 0), 3))
        strictEqual(statusOf(headerOnly), Ic.HV_E_FAIL)

        // A pool that does not exist.
        const badPool = yield* exchangeRaw(
          kvp,
          4n,
          kvpRequest({ _tag: "Set", kvp_hdr: { operation: Ic.KVP_OP_SET, pool: 200 }, kvp_set: { data: data("k", "v") } }, 4)
        )
        strictEqual(statusOf(badPool), Ic.HV_E_FAIL)
        yield* hbAlive(3n)

        // Valid operations still work on the same channel.
        const set = yield* exchangeRaw(kvp, 5n, fullSet)
        strictEqual(statusOf(set), Ic.HV_S_OK)
        assertSome(yield* guest.kvp.get(0, "k"), "v")
        const get = yield* exchangeRaw(
          kvp,
          6n,
          kvpRequest({ _tag: "Get", kvp_hdr: { operation: Ic.KVP_OP_GET, pool: 0 }, kvp_get: { data: data("k", "") } }, 6)
        )
        strictEqual(statusOf(get), Ic.HV_S_OK)
        const decoded = Ic.decodeKvpMessage(get.body)
        assertTrue(Either.isRight(decoded) && decoded.right._tag === "Get")
        if (Either.isRight(decoded) && decoded.right._tag === "Get") {
          strictEqual(Ic.kvpValueOf(decoded.right.kvp_get.data), "v")
        }
        // REG_U32 / REG_U64 values are stored as decimal strings (as Linux's hv_kvp.c sprintf's them).
        const numeric = (key: string, type: number, write: (view: DataView) => void, size: number) => {
          const value = new Uint8Array(Ic.HV_KVP_EXCHANGE_MAX_VALUE_SIZE)
          write(new DataView(value.buffer))
          const base = data(key, "")
          return { ...base, value_type: type, value_size: size, value }
        }
        const u32Set = yield* exchangeRaw(kvp, 7n, kvpRequest({
          _tag: "Set",
          kvp_hdr: { operation: Ic.KVP_OP_SET, pool: 1 },
          kvp_set: { data: numeric("n32", Ic.REG_U32, (view) => view.setUint32(0, 4_000_000_000, true), 4) }
        }, 7))
        strictEqual(statusOf(u32Set), Ic.HV_S_OK)
        const u64Set = yield* exchangeRaw(kvp, 8n, kvpRequest({
          _tag: "Set",
          kvp_hdr: { operation: Ic.KVP_OP_SET, pool: 1 },
          kvp_set: { data: numeric("n64", Ic.REG_U64, (view) => view.setBigUint64(0, 2n ** 63n + 1n, true), 8) }
        }, 8))
        strictEqual(statusOf(u64Set), Ic.HV_S_OK)
        assertSome(yield* guest.kvp.get(1, "n32"), "4000000000")
        assertSome(yield* guest.kvp.get(1, "n64"), String(2n ** 63n + 1n))
      }).pipe(withBus))

    it.scoped("shutdown channel: unknown flags and a truncated body are refused and nothing runs", () =>
      Effect.gen(function*() {
        const ran = yield* Ref.make(0)
        const { channel, guest } = yield* rawSession(["shutdown", "heartbeat"], {
          onShutdown: () => Ref.update(ran, (n) => n + 1)
        })
        const sd = channel("shutdown")
        const unknownFlags = yield* exchangeRaw(sd, 1n, shutdownRequest(8, 1))
        strictEqual(statusOf(unknownFlags), Ic.HV_E_FAIL)
        const truncated = yield* exchangeRaw(sd, 2n, shutdownRequest(0, 2).subarray(0, Ic.ICMSG_HDR + 8))
        strictEqual(statusOf(truncated), Ic.HV_E_FAIL)
        strictEqual((yield* guest.stats).malformed, 2)
        strictEqual((yield* guest.stats).shutdowns, 0)
        yield* settle()
        strictEqual(yield* Ref.get(ran), 0)
        const hb = yield* exchangeRaw(channel("heartbeat"), 3n, heartbeatRequest(10n, 3))
        strictEqual(heartbeatAnswer(hb), 11n)
        // A valid request is still honoured.
        const ok = yield* exchangeRaw(sd, 4n, shutdownRequest(2, 4))
        strictEqual(statusOf(ok), Ic.HV_S_OK)
        strictEqual((yield* guest.shutdownRequested).kind, "reboot")
        yield* eventually(Effect.map(Ref.get(ran), (n) => n === 1), "onShutdown ran once")
      }).pipe(withBus))

    it.scoped("timesync channel: a truncated sample is refused (HV_E_FAIL), not published", () =>
      Effect.gen(function*() {
        const { channel, guest } = yield* rawSession(["timesync"])
        const ts = channel("timesync")
        const negotiated = yield* exchangeRaw(ts, 1n, negotiateRequest([V3], [v(4, 0)], 1))
        strictEqual(statusOf(negotiated), Ic.HV_S_OK)
        const sample = BinarySchema.encodeSync(Ic.IcTimesyncRefData)({
          parenttime: Ic.WLTIMEDELTA + 10_000n,
          vmreferencetime: 0n,
          flags: Ic.ICTIMESYNCFLAG_SAMPLE,
          leapflags: 0,
          stratum: 0
        })
        const truncated = yield* exchangeRaw(ts, 2n, request(Ic.ICMSGTYPE_TIMESYNC, sample.subarray(0, 4), 2))
        strictEqual(statusOf(truncated), Ic.HV_E_FAIL)
        assertNone(yield* guest.latestTimeSample)
        strictEqual((yield* guest.stats).malformed, 1)
        const ok = yield* exchangeRaw(ts, 3n, request(Ic.ICMSGTYPE_TIMESYNC, sample, 3))
        strictEqual(statusOf(ok), Ic.HV_S_OK)
        const latest = yield* guest.latestTimeSample
        assertTrue(Option.isSome(latest))
        strictEqual(latest.value.hostTimeMillis, 1)
        strictEqual((yield* guest.stats).timeSamples, 1)
      }).pipe(withBus))
  })

  describe("malformed answers to the host", () => {
    const fakeGuest = (answer: (request: Uint8Array) => Uint8Array) =>
      Effect.gen(function*() {
        const channel = yield* Channel.open({
          role: "client",
          interfaceType: IS.ServiceGuids.heartbeat,
          maxPacketSize: IS.IC_MAX_PACKET_SIZE
        })
        yield* Effect.forkScoped(
          channel.serve((packet) =>
            channel.sendPacket({
              _tag: "InBand",
              transactionId: packet.packet.transactionId,
              completionRequested: false,
              payload: answer(packet.payload)
            })
          ).pipe(Effect.ignore)
        )
      })

    it.scoped.each([
      ["an answer shorter than the IC header", () => new Uint8Array(8)],
      ["an answer without the RESPONSE flag", (request: Uint8Array) => request.slice()],
      ["a negotiate answer whose counts overrun it", (request: Uint8Array) => {
        const answer = request.slice()
        answer[Ic.VMBUSPIPE_HDR_SIZE + 17] = RESPONSE_FLAGS
        new DataView(answer.buffer).setUint16(Ic.ICMSG_HDR, 90, true)
        return answer
      }]
    ] as const)("IS.host fails with ProtocolError on %s", ([_, answer]) =>
      Effect.gen(function*() {
        const [result] = yield* Effect.all([
          Effect.either(IS.host({ services: ["heartbeat"] })),
          fakeGuest(answer)
        ], { concurrency: 2 })
        assertTrue(Either.isLeft(result))
        strictEqual(result.left._tag, "ProtocolError")
      }).pipe(withBus))

    it.scoped("a guest that never answers: the host gives up with Cancelled after replyTimeout", () =>
      Effect.gen(function*() {
        const fiber = yield* Effect.fork(
          Effect.all([
            Effect.either(IS.host({ services: ["heartbeat"], replyTimeout: "2 seconds" })),
            Channel.open({ role: "client", interfaceType: IS.ServiceGuids.heartbeat, maxPacketSize: IS.IC_MAX_PACKET_SIZE })
          ], { concurrency: 2 })
        )
        yield* settle()
        yield* TestClock.adjust("2 seconds")
        const [result] = yield* within(Fiber.join(fiber), "host gave up")
        assertTrue(Either.isLeft(result))
        strictEqual(result.left._tag, "Cancelled")
      }).pipe(withBus))
  })
})

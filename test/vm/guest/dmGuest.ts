// The guest program of `npm run test:vm`, run ONCE inside the VM (L2) as root with the host's node: it
// binds QEMU's hv-balloon to uio_hv_generic, opens it with UioTransport, and runs the cases below, each
// on a fresh VMBus connection (hv-balloon accepts one channel open per connection). It drives QEMU's
// monitor by printing `@@HMP <command>` lines (forwarded by L1, see l1-job.sh) and ends with one
// `@@REPORT <json>` line. Bundled by esbuild before the boot (starting node in L2 is slow; one file).
import { Duration, Effect, Layer, Option, Stream } from "effect"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as DM from "../../../src/DynamicMemory.js"
import * as UioTransport from "../../../src/UioTransport.js"

const MODULES = "/run/dm-vm"
const FUTURE_VERSION = DM.makeVersion(3, 0) // QEMU accepts WIN7..WIN10: this one must be refused
const say = (line: string) => void process.stdout.write(`${line}\n`)
const hmp = (command: string) => Effect.sync(() => say(`@@HMP ${command}`))
const sh = (script: string) => execFileSync("/bin/sh", ["-c", script], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] })
const lockedKb = () => Number(/VmLck:\s+(\d+) kB/.exec(fs.readFileSync("/proc/self/status", "utf8"))?.[1] ?? -1)

/** The instance GUID of the Dynamic Memory device, once the bus offered it. */
const findDevice = (): string | undefined => {
  const root = "/sys/bus/vmbus/devices"
  if (!fs.existsSync(root)) return undefined
  for (const entry of fs.readdirSync(root)) {
    try {
      if (fs.readFileSync(`${root}/${entry}/class_id`, "utf8").trim() === `{${DM.DM_GUID}}`) return entry
    } catch {
      // a device going away while listed
    }
  }
  return undefined
}

const waitFor = <A>(what: string, check: () => A | undefined, seconds = 60): Effect.Effect<A> =>
  Effect.gen(function*() {
    for (let i = 0; i < seconds * 10; i++) {
      const value = check()
      if (value !== undefined) return value
      yield* Effect.sleep("100 millis")
    }
    return yield* Effect.dieMessage(`timed out waiting for ${what}`)
  })

/** Binds the device to uio_hv_generic (new_id binds every unbound device of the class). */
const bind = Effect.gen(function*() {
  const device = yield* waitFor("the Dynamic Memory offer", findDevice)
  if (!fs.existsSync(`/sys/bus/vmbus/devices/${device}/uio`)) {
    yield* Effect.sync(() => sh(`echo ${DM.DM_GUID} > /sys/bus/vmbus/drivers/uio_hv_generic/new_id`))
  }
  yield* waitFor("the uio device", () => (fs.existsSync(`/sys/bus/vmbus/devices/${device}/uio`) ? true : undefined))
  return device
})

/** A new VMBus connection: unload and reload both modules, then bind again. */
const reconnect = Effect.zipRight(
  Effect.sync(() =>
    sh(`rmmod uio_hv_generic && rmmod hv_vmbus && insmod ${MODULES}/hv_vmbus.ko && insmod ${MODULES}/uio_hv_generic.ko`)
  ),
  bind
)

const eventOf = <T extends DM.GuestEvent["_tag"]>(guest: DM.Guest, tag: T, seconds: number) =>
  guest.events.pipe(
    Stream.filter((e): e is Extract<DM.GuestEvent, { _tag: T }> => e._tag === tag),
    Stream.runHead,
    Effect.map(Option.getOrThrow),
    Effect.timeoutFail({ duration: Duration.seconds(seconds), onTimeout: () => new Error(`no ${tag} within ${seconds} s`) })
  )

const layers = (device: string) => Layer.merge(UioTransport.layer({ device }), DM.layerProcessPages())

const summary = (guest: DM.Guest) => Effect.map(guest.stats, (s) => ({ ...s }))

/**
 * Case "status": version fallback against QEMU (a future version first, which QEMU refuses), then a
 * status report every second for a while; QEMU publishes them as QMP events (status-report=on).
 * No monitor command runs meanwhile: see `quiet` below.
 */
const caseStatus = (device: string) =>
  Effect.scoped(Effect.gen(function*() {
    const guest = yield* DM.guest({ versions: [FUTURE_VERSION, ...DM.LINUX_VERSIONS], replyTimeout: "20 seconds" })
    const rejected = yield* Stream.runCollect(
      guest.events.pipe(Stream.takeUntil((e) => e._tag === "Negotiated"), Stream.filter((e) => e._tag === "VersionRejected"))
    )
    yield* Effect.sleep("6 seconds")
    return {
      case: "status",
      version: guest.version,
      versionsRejected: [...rejected].map((e) => (e as Extract<DM.GuestEvent, { _tag: "VersionRejected" }>).version),
      suppressPressureReports: guest.suppressPressureReports,
      stats: yield* summary(guest)
    }
  }).pipe(Effect.provide(layers(device))))

// QEMU 10.0's hv-balloon runs its event loop, receive included, from the monitor's `balloon` command and
// from its post-init timer, outside the receive bracket of its channel callback: a guest packet waiting
// in the ring at that moment aborts QEMU (vmbus.c gpadl_iter_seek: `iter->active`). So the balloon
// cases send nothing unprompted: no status reports (Linux guests, reporting every second, race too).
const quiet = { statusReports: "never", replyTimeout: "20 seconds" } as const

/**
 * Case "balloon": `balloon 504` (8 MiB out; QEMU acts 50 s after the capabilities), `balloon 512`
 * (all back), `balloon 508` (4 MiB out again), then the channel closes while QEMU holds those pages.
 */
const caseBalloon = (device: string) =>
  Effect.gen(function*() {
    const lockedBefore = lockedKb()
    const inside = yield* Effect.scoped(Effect.gen(function*() {
      const guest = yield* DM.guest(quiet)
      yield* hmp("balloon 504")
      say("@@CASE balloon: negotiated, waiting for QEMU's balloon request")
      const first = yield* eventOf(guest, "Ballooned", 150)
      const lockedFirst = lockedKb()
      yield* Effect.sleep("1 second")
      yield* hmp("info balloon")
      yield* Effect.sleep("1 second")
      yield* hmp("balloon 512")
      const unballooned = yield* guest.events.pipe(
        Stream.filter((e): e is Extract<DM.GuestEvent, { _tag: "Unballooned" }> => e._tag === "Unballooned"),
        Stream.takeUntil((e) => e.last),
        Stream.runCollect,
        Effect.timeoutFail({ duration: Duration.seconds(120), onTimeout: () => new Error("no unballoon within 120 s") })
      )
      const afterUnballoon = { locked: lockedKb(), stats: yield* summary(guest) }
      yield* Effect.sleep("1 second")
      yield* hmp("info balloon")
      yield* Effect.sleep("1 second")
      yield* hmp("balloon 508")
      const second = yield* guest.events.pipe(
        Stream.filter((e): e is Extract<DM.GuestEvent, { _tag: "Ballooned" }> => e._tag === "Ballooned"),
        Stream.drop(1),
        Stream.runHead,
        Effect.map(Option.getOrThrow),
        Effect.timeoutFail({ duration: Duration.seconds(60), onTimeout: () => new Error("no second balloon within 60 s") })
      )
      yield* Effect.sleep("1 second")
      yield* hmp("info balloon")
      yield* Effect.sleep("1 second")
      return {
        version: guest.version,
        balloon: { requested: first.requested, pages: first.pages, ranges: first.ranges.length, firstRange: first.ranges[0] },
        unballoon: {
          messages: unballooned.length,
          pages: [...unballooned].reduce((n, e) => n + e.pages, 0),
          unknownPages: [...unballooned].reduce((n, e) => n + e.unknownPages, 0),
          pagesHeldAfter: afterUnballoon.stats.pagesHeld
        },
        again: { requested: second.requested, pages: second.pages, lockedKb: lockedKb() },
        lockedKb: { before: lockedBefore, ballooned: lockedFirst, afterUnballoon: afterUnballoon.locked },
        stats: yield* summary(guest)
      }
    }).pipe(Effect.provide(layers(device))))
    // The scope closed while QEMU still held the second balloon: every page must be unmapped.
    return { case: "balloon", ...inside, lockedKbAfterClose: lockedKb() }
  })

/** Case "reset": after a reconnect QEMU has forgotten the balloon; negotiate and close at once. */
const caseReset = (device: string) =>
  Effect.scoped(Effect.gen(function*() {
    const guest = yield* DM.guest(quiet)
    yield* Effect.sleep("2 seconds")
    yield* hmp("info balloon")
    yield* Effect.sleep("1 second")
    return { case: "reset", version: guest.version, stats: yield* summary(guest) }
  }).pipe(Effect.provide(layers(device))))

const program = Effect.gen(function*() {
  const report: Record<string, unknown> = { node: process.version, kernel: fs.readFileSync("/proc/sys/kernel/osrelease", "utf8").trim() }
  const cases: Array<unknown> = []
  const run = <A>(name: string, effect: Effect.Effect<A, unknown>) =>
    Effect.gen(function*() {
      const t0 = Date.now()
      const exit = yield* Effect.exit(effect)
      const seconds = (Date.now() - t0) / 1000
      if (exit._tag === "Success") cases.push({ ...(exit.value as object), seconds })
      else cases.push({ case: name, seconds, error: String(exit.cause) })
      say(`@@CASE ${name} done in ${seconds} s`)
    })
  let device = yield* bind
  report["device"] = device
  report["startedAfterSeconds"] = Math.round(process.uptime())
  yield* run("status", caseStatus(device))
  device = yield* reconnect
  yield* run("balloon", caseBalloon(device))
  device = yield* reconnect
  yield* run("reset", caseReset(device))
  report["cases"] = cases
  say(`@@REPORT ${JSON.stringify(report, (_, v) => (typeof v === "bigint" ? v.toString() : v))}`)
})

Effect.runPromise(program).then(
  () => process.exit(0),
  (error) => {
    say(`@@REPORT ${JSON.stringify({ fatal: String(error) })}`)
    process.exit(1)
  }
)

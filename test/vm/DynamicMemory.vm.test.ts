// The real-host suite (`npm run test:vm`): one boot of the VM of test/vm/vm.sh, in which QEMU's
// hv-balloon (behind vmbus-bridge) is the VMBus host and a Node program (guest/dmGuest.ts) is the guest,
// through uio_hv_generic and UioTransport. Asserts on the guest's report AND on QEMU's side: its
// monitor (`info balloon`), its QMP status-report events and its hv_balloon trace.
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { beforeAll, describe, expect, it } from "vitest"
import * as DM from "../../src/DynamicMemory.js"

const root = path.resolve(import.meta.dirname, "../..")
const work = process.env["WORK"] ?? path.join(process.env["TMPDIR"] ?? "/tmp", "effect-vmbus-vm")
const out = path.join(work, "out")
// Inside the project so that the bundle resolves `koffi` from its node_modules.
const bundle = path.join(root, "node_modules/.cache/effect-vmbus-vm/dm-guest.mjs")

const skipReason = process.platform !== "linux"
  ? "needs Linux"
  : process.getuid?.() !== 0
  ? "needs root (packages, /dev/kvm, 9p)"
  : !fs.existsSync("/dev/kvm")
  ? "needs /dev/kvm"
  : undefined
if (skipReason !== undefined) console.warn(`test:vm skipped: ${skipReason}`)

interface CaseReport {
  readonly case: string
  readonly error?: string
  readonly [key: string]: any
}

let report: { readonly cases: ReadonlyArray<CaseReport>; readonly [key: string]: any } = { cases: [] }
let hmpSections: Array<{ command: string; output: string }> = []
let qmpStatus: Array<{ committed: number; available: number }> = []
let trace = ""
const timings: Record<string, number> = {}

const read = (file: string) => (fs.existsSync(path.join(out, file)) ? fs.readFileSync(path.join(out, file), "utf8") : "")
const caseOf = (name: string) => {
  const found = report.cases.find((c) => c.case === name)
  if (found === undefined) throw new Error(`no report for case ${name}: ${JSON.stringify(report)}`)
  if (found.error !== undefined) throw new Error(`case ${name} failed in the guest: ${found.error}`)
  return found
}
/** `balloon: actual=N` of every `info balloon`, in order. */
const actuals = () =>
  hmpSections.filter((s) => s.command.trim() === "info balloon").map((s) => Number(/balloon: actual=(\d+)/.exec(s.output)?.[1] ?? NaN))

describe.skipIf(skipReason !== undefined)(`Dynamic Memory against QEMU hv-balloon in a VM${skipReason ? ` (skipped: ${skipReason})` : ""}`, () => {
  beforeAll(async () => {
    // TEST_VM_REUSE=1 re-checks the output of the last boot without booting (while editing assertions).
    if (process.env["TEST_VM_REUSE"] === "1") return parse()
    const t0 = Date.now()
    const esbuild = await import("esbuild")
    fs.mkdirSync(path.dirname(bundle), { recursive: true })
    await esbuild.build({
      entryPoints: [path.join(root, "test/vm/guest/dmGuest.ts")],
      bundle: true,
      platform: "node",
      format: "esm",
      target: "node20",
      external: ["koffi"],
      outfile: bundle,
      logLevel: "warning",
      banner: { js: "import { createRequire as __createRequire } from \"node:module\"; const require = __createRequire(import.meta.url);" }
    })
    const env = { ...process.env, WORK: work }
    const prepare = spawnSync("bash", [path.join(root, "test/vm/vm.sh"), "prepare"], { env, encoding: "utf8" })
    if (prepare.status !== 0) throw new Error(`vm.sh prepare failed:\n${prepare.stdout}\n${prepare.stderr}`)
    timings["prepare"] = (Date.now() - t0) / 1000
    const t1 = Date.now()
    const run = spawnSync("bash", [path.join(root, "test/vm/vm.sh"), "run", bundle], { env, encoding: "utf8" })
    timings["boot+cases"] = (Date.now() - t1) / 1000
    parse(`vm.sh run exit ${run.status}`)
    console.log(`test:vm wall time (s): ${JSON.stringify(timings)}`)
  }, 20 * 60_000)

  const parse = (how = "reused output") => {
    const l2Console = read("l2-console.log")
    const line = l2Console.split("\n").find((l) => l.includes("@@REPORT "))
    if (line === undefined) {
      throw new Error(`no report from the guest (${how}).\nL1:\n${read("l1-console.log").slice(-3000)}\nL2:\n${l2Console.slice(-3000)}`)
    }
    report = JSON.parse(line.slice(line.indexOf("@@REPORT ") + 9))
    // Markers follow the monitor's "(qemu) " prompt on the same line.
    hmpSections = read("hmp.log").split("### ").slice(1).map((section) => {
      const newline = section.indexOf("\n")
      return { command: section.slice(0, newline), output: section.slice(newline + 1) }
    })
    qmpStatus = read("qmp.log").split("\n").filter((l) => l.includes("HV_BALLOON_STATUS_REPORT")).map((l) => JSON.parse(l).data)
    trace = read("l2-trace.log")
  }

  it("the guest ran every case", () => {
    expect(report["fatal"]).toBeUndefined()
    expect(report.cases.map((c) => c.case)).toEqual(["status", "balloon", "reset"])
    for (const c of report.cases) expect(c.error).toBeUndefined()
    expect(report["kernel"]).toMatch(/^6\.1[2-9]|^[7-9]\./)
  })

  it("negotiates with QEMU, falling back from a version QEMU refuses to WIN10", () => {
    const c = caseOf("status")
    expect(c["versionsRejected"]).toEqual([DM.makeVersion(3, 0)])
    expect(c["version"]).toBe(DM.VERSION_WIN10)
    // QEMU's own trace: the refused 3.0 request, then 2.0, then the capabilities.
    const versions = [...trace.matchAll(/incoming proto version (\d+\.\d+)/g)].map((m) => m[1])
    expect(versions.slice(0, 2)).toEqual(["3.0", "2.0"])
    expect(trace).toMatch(/hv_balloon_incoming_caps/)
    expect(caseOf("balloon")["version"]).toBe(DM.VERSION_WIN10)
    expect(caseOf("reset")["version"]).toBe(DM.VERSION_WIN10)
  })

  it("sends status reports that QEMU publishes (status-report=on)", () => {
    const c = caseOf("status")
    expect(c["suppressPressureReports"]).toBe(false)
    expect(c["stats"].statusReports).toBeGreaterThanOrEqual(4) // one a second, for 6 s
    // QEMU saw them: one QMP event per report (this case is the only one that reports).
    // (the last one may still be in the ring when the channel closes).
    expect(qmpStatus.length).toBeGreaterThanOrEqual(c["stats"].statusReports - 1)
    expect(qmpStatus.length).toBeLessThanOrEqual(c["stats"].statusReports)
    for (const s of qmpStatus) {
      expect(s.available).toBeGreaterThan(0)
      expect(s.committed).toBeGreaterThan(0)
      expect(s.available % 4096).toBe(0)
    }
  })

  it("answers QEMU's balloon request with pages it set aside, and QEMU's monitor sees the guest shrink", () => {
    const c = caseOf("balloon")
    // 512 MiB → 504 MiB: 8 MiB = 2048 pages of 4 KiB.
    expect(c["balloon"].requested).toBe(2048)
    expect(c["balloon"].pages).toBe(2048)
    expect(c["lockedKb"].ballooned - c["lockedKb"].before).toBe(2048 * 4)
    expect(actuals()[0]).toBe(504)
    expect(trace).toMatch(/hv_balloon_incoming_balloon/)
  })

  it("gives every page back on QEMU's unballoon request, and QEMU's monitor sees the guest grow", () => {
    const c = caseOf("balloon")
    expect(c["unballoon"].pages).toBe(2048)
    expect(c["unballoon"].unknownPages).toBe(0)
    expect(c["unballoon"].pagesHeldAfter).toBe(0)
    // QEMU sends one range per unballoon request (hv_balloon_unballoon_posting).
    expect(c["unballoon"].messages).toBe((trace.match(/hv_balloon_outgoing_unballoon/g) ?? []).length)
    expect(c["lockedKb"].afterUnballoon).toBe(c["lockedKb"].before)
    expect(actuals()[1]).toBe(512)
  })

  it("closing while QEMU holds pages releases all of them in the guest; a reconnect resets QEMU", () => {
    const c = caseOf("balloon")
    expect(c["again"].pages).toBe(1024) // 512 → 508 MiB
    expect(c["again"].lockedKb - c["lockedKb"].before).toBe(1024 * 4)
    expect(actuals()[2]).toBe(508)
    expect(c["lockedKbAfterClose"]).toBe(c["lockedKb"].before)
    // hv-balloon forgets the pages when the VMBus connection is reset (the next case's reconnect).
    expect(actuals()[3]).toBe(512)
  })
})

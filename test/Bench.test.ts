// The benchmark harness and command line (not the measurements: those are bench/, run by hand).
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { spawnSync } from "node:child_process"
import { fileURLToPath } from "node:url"
import { ArgsError, parse, SUBJECTS } from "../bench/args.js"
import { formatTable, type Row, runSubject, type Sample } from "../bench/harness.js"

const ROOT = fileURLToPath(new URL("..", import.meta.url))

describe("bench harness", () => {
  it.effect("interleaves the rows, starting one row later each round, and reports medians, spread and ratios", () =>
    Effect.gen(function*() {
      const calls: Array<string> = []
      // Rates per call, in call order per row: warm-up first, then one per round.
      const rates: Record<string, Array<number>> = { base: [1, 100, 300, 200], fast: [1, 250, 150, 200], pending: [] }
      const row = (name: string, extra: Partial<Row>): Row => ({
        name,
        unit: "op",
        bytesPerOp: 1000,
        measure: (millis) =>
          Effect.sync((): Sample => {
            calls.push(`${name}@${millis}`)
            const ops = rates[name]!.shift()!
            return { ops, seconds: 1, cpuSeconds: ops / 1e6, latencies: name === "fast" ? Float64Array.from([ops, ops + 1]) : undefined }
          }),
        ...extra
      })
      const result = yield* runSubject({
        name: "fake",
        title: "fake rows",
        description: [],
        rows: Effect.succeed([
          row("base", { baseline: true }),
          row("fast", { compareTo: "base" }),
          { name: "pending", unit: "op", bytesPerOp: 0, compareTo: "base", pending: "an API that does not exist" }
        ]),
        layer: Layer.empty
      }, { rounds: 3, millis: 50, warmupMillis: 5 }, () => {})
      assert.deepStrictEqual(calls, ["base@5", "fast@5", "base@50", "fast@50", "fast@50", "base@50", "base@50", "fast@50"])
      const [base, fast, pending] = result.rows
      assert.deepStrictEqual(base!.opsPerSecond, { min: 100, median: 200, max: 300 })
      assert.deepStrictEqual(fast!.opsPerSecond, { min: 150, median: 200, max: 250 })
      assert.strictEqual(fast!.ratio, 1)
      assert.strictEqual(base!.ratio, undefined)
      assert.closeTo(fast!.cpuMicrosPerOp!, 1, 1e-9)
      assert.strictEqual(fast!.samples.length, 3)
      assert.strictEqual(fast!.p50Micros, 201) // pooled over rounds: 150 151 200 201 250 251
      assert.strictEqual(pending!.opsPerSecond, undefined)
      const table = formatTable(result).split("\n")
      assert.strictEqual(table.length, 5)
      assert.match(table[2]!, /^\| base \(baseline\) \| 200 \| 100 – 300 \| 0\.2 \|/)
      assert.match(table[3]!, /^\| fast \| 200 \| 150 – 250 \| 0\.2 \| 1\.00 \| 201\.0 \| 251\.0 \| 1\.00× base \|$/)
      assert.include(table[4]!, "not measured: an API that does not exist")
    }))

  it("parses the command line and refuses what it does not know", () => {
    const all = parse([])
    assert.deepStrictEqual(all.subjects, SUBJECTS)
    assert.deepStrictEqual([all.rounds, all.millis, all.json, all.build], [5, 300, undefined, true])
    const some = parse(["sharedMemory", "ring", "--rounds=3", "--ms", "100", "--json", "out.json", "--no-build"])
    assert.deepStrictEqual(some.subjects, ["ring", "sharedMemory"])
    assert.deepStrictEqual([some.rounds, some.millis, some.json, some.build], [3, 100, "out.json", false])
    assert.isTrue(parse(["-h"]).help)
    for (const bad of [["--rounds", "0"], ["--ms", "x"], ["--json"], ["--fast"], ["rings"], ["--rounds"]]) {
      assert.throws(() => parse(bad), ArgsError)
    }
  })

  it("`npm run bench -- --help` prints the usage without compiling or running anything; a bad option exits 2", () => {
    const run = (args: ReadonlyArray<string>) =>
      spawnSync(process.execPath, ["--import", "tsx", "bench/main.ts", ...args], { cwd: ROOT, encoding: "utf8" })
    const help = run(["--help"])
    assert.strictEqual(help.status, 0, help.stderr)
    assert.include(help.stdout, "usage: npm run bench -- [SUBJECT ...] [options]")
    assert.include(help.stdout, "--json FILE")
    assert.notInclude(help.stderr, "compiling")
    const bad = run(["--rounds", "-1"])
    assert.strictEqual(bad.status, 2)
    assert.strictEqual(bad.stderr.trim(), "bench: --rounds must be a whole number from 1 to 1000, got '-1' (see 'npm run bench -- --help')")
  }, 60_000)
})

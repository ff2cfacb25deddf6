// `npm run test:sim -- --scenarios N --seed S [--exclude a,b] [--only SEED] [--concurrency C]
//   [--max-requests M] [--verbose]`
// Runs N scenarios with seeds S, S+1, …; prints every failure with the seed that replays it
// (`--only SEED`), totals of handler outcomes and request results, and exits non-zero on a failure.
import * as Effect from "effect/Effect"
import { classify } from "./classify.js"
import { runScenario, type Report } from "./harness.js"
import { type Feature, generate } from "./scenario.js"

const args = process.argv.slice(2)
const option = (name: string): string | undefined => {
  const i = args.indexOf(`--${name}`)
  return i >= 0 ? args[i + 1] : undefined
}
const scenarios = Number(option("scenarios") ?? 200)
const firstSeed = Number(option("seed") ?? 1)
const only = option("only")
const concurrency = Number(option("concurrency") ?? 4)
const verbose = args.includes("--verbose")
const maxRequests = option("max-requests") === undefined ? undefined : Number(option("max-requests"))
const exclude = new Set((option("exclude") ?? "").split(",").filter((s) => s.length > 0) as Array<Feature>)

const seeds = only !== undefined ? [Number(only)] : Array.from({ length: scenarios }, (_, i) => firstSeed + i)

const main = Effect.gen(function*() {
  const started = Date.now()
  const outcomes: Record<string, number> = {}
  const results: Record<string, number> = {}
  const faults: Record<string, number> = {}
  const failed: Array<Report> = []
  const classes: Record<string, Array<number>> = {}
  let done = 0
  yield* Effect.forEach(seeds, (seed) =>
    Effect.gen(function*() {
      const scenario = generate(seed, { exclude, maxRequests })
      const report = yield* runScenario(scenario)
      for (const [k, v] of Object.entries(report.outcomes)) outcomes[k] = (outcomes[k] ?? 0) + v
      for (const [k, v] of Object.entries(report.results)) results[k] = (results[k] ?? 0) + v
      for (const [k, v] of Object.entries(report.faults ?? {})) faults[k] = (faults[k] ?? 0) + v
      done++
      if (!report.ok) {
        failed.push(report)
        for (const c of classify(scenario, report)) (classes[c] ??= []).push(seed)
        console.log(`FAIL seed ${seed} (${report.millis} ms, phase ${report.phase}): ${report.failures.join(" | ")}`)
        if (verbose) console.log(JSON.stringify(scenario))
      } else if (verbose) {
        console.log(`ok   seed ${seed} (${report.millis} ms)`)
        if (only !== undefined) console.log(JSON.stringify(scenario))
      }
      if (done % 100 === 0) console.log(`… ${done}/${seeds.length} scenarios, ${failed.length} failed`)
    }), { concurrency, discard: true })
  const handlerOutcomes = Object.values(outcomes).reduce((a, b) => a + b, 0)
  console.log(`\n${seeds.length} scenarios (seeds ${seeds[0]}..${seeds[seeds.length - 1]}${exclude.size > 0 ? `, excluding ${Array.from(exclude).join(",")}` : ""}) in ${((Date.now() - started) / 1000).toFixed(1)} s`)
  console.log(`handler outcomes: ${handlerOutcomes} ${JSON.stringify(outcomes)}`)
  console.log(`request results: ${JSON.stringify(results)}`)
  console.log(`faults injected: ${JSON.stringify(faults)}`)
  console.log(failed.length === 0 ? "all invariants held" : `${failed.length} failed: seeds ${failed.map((r) => r.seed).join(" ")}`)
  for (const [c, list] of Object.entries(classes)) console.log(`  ${c}: ${list.length} (seeds ${list.slice(0, 12).join(" ")})`)
  return failed.length
})

Effect.runPromise(main).then((failures) => process.exit(failures === 0 ? 0 : 1), (error) => {
  console.error(error)
  process.exit(2)
})

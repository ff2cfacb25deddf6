/**
 * The benchmark harness every subject uses: rows (a baseline and the rows compared to it) are
 * opened once, warmed up, then measured in several rounds with the rows INTERLEAVED (each round
 * runs every row once, starting one row later than the previous round), so a load change on the
 * shared machine hits baseline and subject alike. Each row reports the median rate over rounds with
 * its spread (min and max), process CPU µs per operation (median), latency percentiles where the row
 * records them, and its ratio to its baseline in the same run. One table format for every subject,
 * and the same data as JSON.
 */
import * as Effect from "effect/Effect"
import type * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import * as os from "node:os"

/** One timed run of one row. */
export interface Sample {
  readonly ops: number
  readonly seconds: number
  /** Process CPU time (user + system, all threads) in the timed part. */
  readonly cpuSeconds: number
  /** Per-operation latencies in µs, for rows that time each operation. */
  readonly latencies?: Float64Array | undefined
}

export interface Row {
  readonly name: string
  /** What one operation is ("packet", "round trip", "transfer"). */
  readonly unit: string
  readonly bytesPerOp: number
  /** The name of the baseline row (same subject) this row's ratio is computed against. */
  readonly compareTo?: string | undefined
  readonly baseline?: boolean | undefined
  /** Rows that cannot be measured yet say why here (and have no `measure`). */
  readonly pending?: string | undefined
  readonly measure?: ((millis: number) => Effect.Effect<Sample, unknown>) | undefined
}

export interface Subject<R = never> {
  readonly name: string
  readonly title: string
  /** What is measured and how; printed above the table. */
  readonly description: ReadonlyArray<string>
  /** Opens every row's resources (closed when the subject ends). */
  readonly rows: Effect.Effect<ReadonlyArray<Row>, unknown, R | Scope.Scope>
  readonly layer: Layer.Layer<R, unknown>
}

export interface Settings {
  readonly rounds: number
  readonly millis: number
  readonly warmupMillis: number
}

export interface RowResult {
  readonly name: string
  readonly unit: string
  readonly bytesPerOp: number
  readonly baseline: boolean
  readonly compareTo: string | undefined
  readonly pending: string | undefined
  readonly samples: ReadonlyArray<{ readonly ops: number; readonly seconds: number; readonly cpuSeconds: number }>
  readonly opsPerSecond: { readonly min: number; readonly median: number; readonly max: number } | undefined
  readonly cpuMicrosPerOp: number | undefined
  readonly p50Micros: number | undefined
  readonly p99Micros: number | undefined
  /** Median rate / the baseline's median rate, same run. */
  readonly ratio: number | undefined
}

export interface SubjectResult {
  readonly name: string
  readonly title: string
  readonly description: ReadonlyArray<string>
  readonly settings: Settings
  readonly loadAverage: { readonly start: ReadonlyArray<number>; readonly end: ReadonlyArray<number> }
  readonly rows: ReadonlyArray<RowResult>
}

// ---------------------------------------------------------------------------------------------
// Measuring helpers
// ---------------------------------------------------------------------------------------------

export const cpuSeconds = (): number => {
  const { system, user } = process.cpuUsage()
  return (user + system) / 1e6
}

/**
 * A synchronous time-boxed loop: `step()` does some operations and returns how many; the clock is
 * read between steps only.
 */
export const timeBoxSync = (millis: number, step: () => number): Sample => {
  let ops = 0
  const cpu0 = cpuSeconds()
  const start = performance.now()
  const deadline = start + millis
  let now = start
  while (now < deadline) {
    ops += step()
    now = performance.now()
  }
  return { ops, seconds: (now - start) / 1000, cpuSeconds: cpuSeconds() - cpu0 }
}

/** Per-operation latencies, growing as needed. */
export const latencyRecorder = () => {
  let values = new Float64Array(1 << 14)
  let count = 0
  return {
    record: (micros: number) => {
      if (count === values.length) {
        const bigger = new Float64Array(values.length * 2)
        bigger.set(values)
        values = bigger
      }
      values[count++] = micros
    },
    take: (): Float64Array => values.slice(0, count)
  }
}

const median = (values: ReadonlyArray<number>): number => {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

const percentile = (sorted: Float64Array, p: number): number | undefined =>
  sorted.length === 0 ? undefined : sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!

// ---------------------------------------------------------------------------------------------
// Running a subject
// ---------------------------------------------------------------------------------------------

const loadAverage = () => os.loadavg().map((x) => Math.round(x * 100) / 100)

export const runSubject = <R>(subject: Subject<R>, settings: Settings, onProgress: (text: string) => void) =>
  Effect.gen(function*() {
    const loadStart = loadAverage()
    const rows = yield* subject.rows
    const measured = rows.filter((row) => row.measure !== undefined)
    const samples = new Map<string, Array<Sample>>(measured.map((row) => [row.name, []]))
    for (const row of measured) {
      onProgress(`${subject.name}: warming up ${row.name}`)
      yield* row.measure!(settings.warmupMillis)
    }
    for (let round = 0; round < settings.rounds; round++) {
      onProgress(`${subject.name}: round ${round + 1}/${settings.rounds}`)
      for (let i = 0; i < measured.length; i++) {
        const row = measured[(i + round) % measured.length]!
        samples.get(row.name)!.push(yield* row.measure!(settings.millis))
      }
    }
    const results: Array<RowResult> = rows.map((row) => {
      const taken = samples.get(row.name) ?? []
      const rates = taken.map((s) => s.ops / s.seconds)
      const latencies = taken.some((s) => s.latencies !== undefined)
        ? Float64Array.from(taken.flatMap((s) => Array.from(s.latencies ?? []))).sort()
        : new Float64Array(0)
      return {
        name: row.name,
        unit: row.unit,
        bytesPerOp: row.bytesPerOp,
        baseline: row.baseline === true,
        compareTo: row.compareTo,
        pending: row.pending,
        samples: taken.map(({ cpuSeconds, ops, seconds }) => ({ ops, seconds, cpuSeconds })),
        opsPerSecond: rates.length === 0 ? undefined : { min: Math.min(...rates), median: median(rates), max: Math.max(...rates) },
        cpuMicrosPerOp: taken.length === 0 ? undefined : median(taken.map((s) => (s.cpuSeconds / Math.max(1, s.ops)) * 1e6)),
        p50Micros: percentile(latencies, 0.5),
        p99Micros: percentile(latencies, 0.99),
        ratio: undefined
      }
    })
    const withRatios = results.map((row) => {
      const base = results.find((r) => r.name === row.compareTo)
      const ratio = base?.opsPerSecond !== undefined && row.opsPerSecond !== undefined
        ? row.opsPerSecond.median / base.opsPerSecond.median
        : undefined
      return { ...row, ratio }
    })
    return {
      name: subject.name,
      title: subject.title,
      description: subject.description,
      settings,
      loadAverage: { start: loadStart, end: loadAverage() },
      rows: withRatios
    } satisfies SubjectResult
  }).pipe(Effect.scoped, Effect.provide(subject.layer))

// ---------------------------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------------------------

const number = (n: number | undefined, digits = 0): string =>
  n === undefined ? "" : n.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits })

const compact = (n: number): string =>
  n >= 1e6 ? `${number(n / 1e6, 2)} M` : n >= 1e4 ? `${number(n / 1e3, 0)} k` : n >= 1e3 ? `${number(n / 1e3, 1)} k` : number(n, 0)

/** Every subject's table: Markdown, so the README takes it as printed. */
export const formatTable = (result: SubjectResult): string => {
  const header = ["row", "ops/s (median)", "min – max ops/s", "MB/s", "CPU µs/op", "p50 µs", "p99 µs", "× baseline"]
  const lines = result.rows.map((row) => {
    if (row.pending !== undefined) return [row.name, `not measured: ${row.pending}`, "", "", "", "", "", ""]
    const rate = row.opsPerSecond
    return [
      row.baseline ? `${row.name} (baseline)` : row.name,
      rate === undefined ? "" : number(rate.median),
      rate === undefined ? "" : `${compact(rate.min)} – ${compact(rate.max)}`,
      rate === undefined || row.bytesPerOp === 0 ? "" : number((rate.median * row.bytesPerOp) / 1e6, 1),
      number(row.cpuMicrosPerOp, row.cpuMicrosPerOp !== undefined && row.cpuMicrosPerOp < 10 ? 2 : 1),
      number(row.p50Micros, 1),
      number(row.p99Micros, 1),
      row.ratio === undefined ? "" : `${number(row.ratio, row.ratio < 0.1 ? 3 : 2)}× ${row.compareTo}`
    ]
  })
  const right = [false, true, true, true, true, true, true, false]
  const out = [
    `| ${header.join(" | ")} |`,
    `|${right.map((r) => (r ? "---:" : "---")).join("|")}|`,
    ...lines.map((cells) => `| ${cells.join(" | ")} |`)
  ]
  return out.join("\n")
}

export const formatHeading = (result: SubjectResult): string => {
  const { rounds, millis, warmupMillis } = result.settings
  return [
    `== ${result.name}: ${result.title}`,
    ...result.description,
    `${rounds} rounds × ${millis} ms per row (warm-up ${warmupMillis} ms), rows interleaved; medians, spread min – max over ` +
      `rounds; CPU = process CPU (all threads) per op. Node ${process.version}, ${os.cpus().length} CPUs, load average ` +
      `${result.loadAverage.start.join(" ")} at start, ${result.loadAverage.end.join(" ")} at end.`
  ].join("\n")
}

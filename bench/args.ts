/**
 * The benchmark command line, shared by the launcher (bench/main.ts, which compiles first) and the
 * compiled runner (bench/run.ts).
 */
export const SUBJECTS = ["ring", "channel", "gpadl", "sharedMemory", "uio"] as const
export type SubjectName = (typeof SUBJECTS)[number]

export interface BenchArgs {
  readonly help: boolean
  readonly subjects: ReadonlyArray<SubjectName>
  readonly rounds: number
  readonly millis: number
  readonly warmupMillis: number
  readonly json: string | undefined
  readonly build: boolean
}

export const USAGE = `usage: npm run bench -- [SUBJECT ...] [options]

Compiles src/ and bench/ with tsc to build/bench/ and runs the compiled JavaScript with plain node
(no tsx), so the figures are those of a built package.

subjects (default: all, in this order):
  ring          one VMBus ring, write a batch then read it; baseline: a JavaScript array queue
  channel       the Effect channel layer over InMemoryTransport; baseline: the raw ring
  gpadl         GPA-direct page ranges vs 4000-byte in-band chunks (baseline)
  sharedMemory  a client in a worker thread over SharedMemoryTransport; baselines: MessagePort
  uio           UioTransport on the emulated device, host in a child process; baselines: a Unix
                SOCK_SEQPACKET ping-pong and one message per packet between the same two processes

options:
  --rounds N      rounds per subject; every row runs once per round, rows interleaved (default 5)
  --ms N          milliseconds per row per round (default 300)
  --warmup-ms N   warm-up per row before the first round (default 200)
  --json FILE     also write every result (samples per round included) to FILE as JSON
  --no-build      run the last build without compiling again
  -h, --help      this text

Each table: median ops/s over rounds with min – max, MB/s, CPU µs per op (process CPU, all
threads), p50/p99 where the row times each op, and the ratio to its baseline in the same run.`

export class ArgsError extends Error {}

const whole = (flag: string, value: string | undefined, min: number, max: number): number => {
  if (value === undefined) throw new ArgsError(`${flag} needs a value`)
  const n = Number(value)
  if (!Number.isInteger(n) || n < min || n > max) throw new ArgsError(`${flag} must be a whole number from ${min} to ${max}, got '${value}'`)
  return n
}

export const parse = (argv: ReadonlyArray<string>): BenchArgs => {
  const subjects: Array<SubjectName> = []
  let help = false
  let rounds = 5
  let millis = 300
  let warmupMillis = 200
  let json: string | undefined
  let build = true
  for (let i = 0; i < argv.length; i++) {
    const [arg, inline] = argv[i]!.startsWith("--") ? (argv[i]!.split("=", 2) as [string, string | undefined]) : [argv[i]!, undefined]
    const value = () => inline ?? argv[++i]
    switch (arg) {
      case "-h":
      case "--help":
        help = true
        break
      case "--rounds":
        rounds = whole(arg, value(), 1, 1000)
        break
      case "--ms":
        millis = whole(arg, value(), 10, 600_000)
        break
      case "--warmup-ms":
        warmupMillis = whole(arg, value(), 0, 600_000)
        break
      case "--json":
        json = value()
        if (json === undefined || json === "") throw new ArgsError("--json needs a file name")
        break
      case "--no-build":
        build = false
        break
      default:
        if (arg.startsWith("-")) throw new ArgsError(`unknown option '${arg}'`)
        if (!(SUBJECTS as ReadonlyArray<string>).includes(arg)) {
          throw new ArgsError(`unknown subject '${arg}' (subjects: ${SUBJECTS.join(", ")})`)
        }
        subjects.push(arg as SubjectName)
    }
  }
  return {
    help,
    subjects: subjects.length === 0 ? SUBJECTS : SUBJECTS.filter((s) => subjects.includes(s)),
    rounds,
    millis,
    warmupMillis,
    json,
    build
  }
}

/** Parses or prints the problem (exit code 2) / the usage (exit code 0); undefined when done. */
export const parseOrExit = (argv: ReadonlyArray<string>): BenchArgs | undefined => {
  try {
    const args = parse(argv)
    if (!args.help) return args
    console.log(USAGE)
    process.exitCode = 0
  } catch (error) {
    if (!(error instanceof ArgsError)) throw error
    console.error(`bench: ${error.message} (see 'npm run bench -- --help')`)
    process.exitCode = 2
  }
  return undefined
}

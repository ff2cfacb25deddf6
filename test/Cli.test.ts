// The command line driven as a user drives it: a subprocess, its exit code, its stdout and stderr.
import { assert, describe, it } from "@effect/vitest"
import { execFileSync, spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import * as HelpDoc from "@effect/cli/HelpDoc"
import * as ValidationError from "@effect/cli/ValidationError"
import * as Progress from "../src/bin/progress.js"
import * as Terminal from "../src/bin/terminal.js"

const ROOT = fileURLToPath(new URL("..", import.meta.url))
const MAIN = "src/bin/main.ts"
const ESC = "\u001b"
const TIMEOUT = 90_000 // a subprocess that loads tsx on a shared, busy machine

interface Run {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly stdout: string
  readonly stderr: string
}

const cleanEnv = (): NodeJS.ProcessEnv => {
  const env = { ...process.env }
  delete env.NO_COLOR
  delete env.FORCE_COLOR
  return env
}

/** Runs the CLI; `until` (if given) is called on every stderr chunk and may signal the process. */
const cli = (args: ReadonlyArray<string>, options: {
  readonly env?: NodeJS.ProcessEnv
  readonly until?: (stderr: string, stop: (signal: NodeJS.Signals) => void) => void
} = {}): Promise<Run> =>
  new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", MAIN, ...args], {
      cwd: ROOT,
      env: options.env ?? cleanEnv(),
      stdio: ["ignore", "pipe", "pipe"]
    })
    let stdout = ""
    let stderr = ""
    let stopped = false
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk))
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
      stderr += chunk
      if (options.until !== undefined && !stopped) {
        options.until(stderr, (signal) => {
          stopped = true
          child.kill(signal)
        })
      }
    })
    child.on("error", reject)
    child.on("close", (code, signal) => resolve({ code, signal, stdout, stderr }))
  })

const lines = (text: string): Array<string> => text.split("\n").filter((line) => line.trim() !== "")

/** Asserts a refused command line: exit code 2, one plain line on stderr that says `expected`, nothing run. */
const assertRefused = (run: Run, expected: string) => {
  assert.strictEqual(run.code, 2, run.stderr)
  assert.deepStrictEqual(lines(run.stderr).length, 1, run.stderr)
  assert.include(run.stderr, expected)
  assert.include(run.stderr, "--help")
  assert.notInclude(run.stderr, "_tag")
  assert.notInclude(run.stderr, "{")
  assert.notInclude(run.stderr, ESC)
  assert.strictEqual(run.stdout, "")
}

const hasScript = (() => {
  try {
    execFileSync("script", ["--version"], { stdio: "ignore" })
    return true
  } catch {
    return false
  }
})()

describe("command line", () => {
  it("refuses a negative count with exit code 2 before running anything", async () => {
    assertRefused(await cli(["--heartbeats", "-5"]), "--heartbeats must be from 0 to 10000000, got -5")
  }, TIMEOUT)

  it("refuses a value that is not a number, and an unknown option, naming them in one readable line", async () => {
    const [text, root, typo, command] = await Promise.all([
      cli(["--heartbeats", "1.5"]),
      cli(["--bogus"]),
      cli(["demo", "--hearbeats", "3"]),
      cli(["frobnicate"])
    ])
    assertRefused(text, "--heartbeats: '1.5' is not a whole number")
    assertRefused(root, "effect-vmbus: unknown option '--bogus'")
    assertRefused(typo, "unknown option '--hearbeats'; did you mean '--heartbeats'?")
    assertRefused(command, "unknown command 'frobnicate' (commands: demo, ring, devices, doctor)")
  }, TIMEOUT)

  it("--help shows every option's default and each command's description, as plain text off a terminal", async () => {
    const root = await cli(["--help"])
    assert.strictEqual(root.code, 0, root.stderr)
    for (const text of ["(default 20;", "(default 50;", "(default 3;", "(default 1000;"]) assert.include(root.stdout, text)
    assert.match(root.stdout, /- demo .*An integration-services session/)
    assert.match(root.stdout, /- ring .*Writes and reads one ring/)
    assert.include(root.stdout, "Exit codes: 0 done, 1 failed, 2 invalid command line, 130 interrupted")
    assert.include(root.stdout, "Ctrl-C stops it and prints the summary so far")
    assert.notInclude(root.stdout, ESC)
  }, TIMEOUT)

  it.skipIf(!hasScript)("on a terminal help is coloured, unless NO_COLOR is set (needs util-linux `script` for a pty)", async () => {
    const onTerminal = (env: NodeJS.ProcessEnv) =>
      execFileSync("script", ["-qec", `"${process.execPath}" --import tsx ${MAIN} --help`, "/dev/null"], {
        cwd: ROOT,
        env,
        encoding: "utf8"
      })
    const coloured = onTerminal(cleanEnv())
    const plain = onTerminal({ ...cleanEnv(), NO_COLOR: "1" })
    assert.include(coloured, ESC)
    assert.notInclude(plain, ESC)
    assert.include(plain, "(default 20;")
  }, TIMEOUT)

  it("a short session exits 0 with a summary, and off a terminal prints a progress line per period", async () => {
    const run = await cli(["--heartbeats", "3", "--interval-ms", "0", "--time-samples", "1", "--progress-ms", "0"])
    assert.strictEqual(run.code, 0, run.stderr)
    assert.include(run.stdout, "\nsummary\n")
    assert.match(run.stdout, /heartbeats +3 of 3 answered/)
    assert.match(run.stdout, /shutdown +shutdown, effect ran: true/)
    const progress = lines(run.stderr).filter((line) => line.startsWith("progress: "))
    assert.deepStrictEqual(progress.map((line) => line.slice(0, "progress: heartbeat 1/3".length)), [
      "progress: heartbeat 1/3",
      "progress: heartbeat 2/3",
      "progress: heartbeat 3/3"
    ])
    assert.notInclude(run.stdout + run.stderr, ESC)
    assert.notInclude(run.stderr, "\r")
  }, TIMEOUT)

  it("Ctrl-C prints the summary so far and exits 130", async () => {
    const run = await cli(["--heartbeats", "1000000", "--interval-ms", "1", "--progress-ms", "0"], {
      until: (stderr, stop) => {
        if (stderr.includes("progress: heartbeat 3/")) stop("SIGINT")
      }
    })
    assert.strictEqual(run.code, 130, run.stderr)
    assert.include(run.stdout, "summary so far (interrupted while sending heartbeats)")
    const answered = /heartbeats +(\d+) of 1000000 answered/.exec(run.stdout)
    assert.isNotNull(answered, run.stdout)
    assert.isAtLeast(Number(answered![1]), 3)
    assert.match(run.stdout, /shutdown +not requested/)
  }, TIMEOUT)

  it("the ring command runs", async () => {
    const run = await cli(["ring"])
    assert.strictEqual(run.code, 0, run.stderr)
    assert.include(run.stdout, "signal the reader? true")
    assert.include(run.stdout, "writer withdraws its request")
  }, TIMEOUT)
})

describe("usage messages", () => {
  const grammar: Terminal.Grammar = {
    program: "effect-vmbus",
    commands: ["demo", "ring"],
    valueOptions: ["heartbeats", "interval-ms"],
    flags: ["help"]
  }
  const message = (error: ValidationError.ValidationError, args: ReadonlyArray<string>) =>
    Terminal.usageMessage(error, args, grammar)
  const mismatch = ValidationError.commandMismatch(HelpDoc.p("Invalid subcommand for effect-vmbus - use one of 'demo', 'ring'"))

  it("find the argument a command mismatch is about", () => {
    assert.strictEqual(message(mismatch, ["--heartbeats"]), "effect-vmbus: option '--heartbeats' needs a value (see 'effect-vmbus --help')")
    assert.include(message(mismatch, ["--heartbeats", "3", "extra"]), "unknown command 'extra'")
    assert.include(message(mismatch, ["--heartbeats=3", "-x"]), "unknown option '-x'")
    assert.include(message(mismatch, ["--help", "--interval", "3"]), "unknown option '--interval'; did you mean '--interval-ms'?")
    assert.include(message(mismatch, ["rng"]), "unknown command 'rng' (commands: demo, ring); did you mean 'ring'?")
    // Nothing recognisably wrong: the parser's own words.
    assert.include(message(mismatch, ["demo"]), "Invalid subcommand for effect-vmbus")
  })

  it("name the option of a value that is not a number, and reword unknown arguments", () => {
    const notInteger = (value: string) => ValidationError.invalidValue(HelpDoc.p(`'${value}' is not a integer`))
    assert.include(message(notInteger("x"), ["demo", "--interval-ms=x"]), ": --interval-ms: 'x' is not a whole number (")
    assert.include(message(notInteger("x"), ["x"]), ": 'x' is not a whole number (")
    const unknown = (arg: string) => ValidationError.invalidValue(HelpDoc.p(`Received unknown argument: '${arg}'`))
    assert.include(message(unknown("--hep=1"), []), "unknown option '--hep'; did you mean '--help'?")
    assert.include(message(unknown("stray"), []), "unexpected argument 'stray'")
  })
})

describe("progress", () => {
  const recorder = (isTTY: boolean) => {
    const writes: Array<string> = []
    return { writes, stream: { isTTY, write: (text: string) => writes.push(text) } }
  }

  it("on a terminal rewrites one live line at most every 100 ms and clears it around output", () => {
    let now = 0
    const { stream, writes } = recorder(true)
    const progress = Progress.make({ stream, periodMillis: 5000, now: () => now })
    progress.update("a")
    progress.update("b") // too soon: not drawn
    now = 150
    progress.update("c")
    assert.deepStrictEqual(writes, ["\r\u001b[2Ka", "\r\u001b[2Kc"])
    progress.hide()
    progress.show()
    assert.deepStrictEqual(writes.slice(2), ["\r\u001b[2K", "c"])
    progress.end()
    assert.deepStrictEqual(writes.slice(4), ["\r\u001b[2K"])
    progress.end()
    assert.strictEqual(writes.length, 5)
  })

  it("off a terminal writes whole lines, one per period", () => {
    let now = 0
    const { stream, writes } = recorder(false)
    const progress = Progress.make({ stream, periodMillis: 1000, now: () => now })
    progress.update("first")
    now = 999
    progress.update("skipped")
    now = 1000
    progress.update("second")
    progress.hide()
    progress.show()
    progress.end()
    assert.deepStrictEqual(writes, ["first\n", "second\n"])
  })
})

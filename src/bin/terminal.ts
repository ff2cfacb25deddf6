/**
 * Terminal plumbing for the command line: plain text when colour is not wanted, one-line usage
 * errors, exit codes, and signals. Nothing here knows about VMBus.
 */
import * as HelpDoc from "@effect/cli/HelpDoc"
import * as ValidationError from "@effect/cli/ValidationError"
import * as Cause from "effect/Cause"
import type * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"

/** Exit codes: 2 for a command line that cannot run (as getopt programs do), 128 + n for signal n. */
export const EXIT_FAILURE = 1
export const EXIT_USAGE = 2
const SIGNAL_EXIT: Record<string, number> = { SIGINT: 130, SIGTERM: 143 }

const ANSI = new RegExp("\u001b\\[[0-9;?]*[A-Za-z]", "g")

/** Removes ANSI escape sequences (colours, cursor moves). */
export const stripAnsi = (text: string): string => text.replace(ANSI, "")

/**
 * Colour only on a terminal, and never when `NO_COLOR` is set to anything (https://no-color.org) or
 * the terminal is `dumb`.
 */
export const colorWanted = (stream: { readonly isTTY?: boolean }, env: NodeJS.ProcessEnv = process.env): boolean =>
  stream.isTTY === true && (env.NO_COLOR === undefined || env.NO_COLOR === "") && env.TERM !== "dumb"

/**
 * The console the command line writes through: strings lose their escape sequences unless the
 * stream they go to wants colour. @effect/cli renders help and errors with ANSI styles
 * unconditionally; this is where they become plain text.
 */
export const plainConsole = (base: Console.Console): Console.Console => {
  const clean = (wanted: boolean) => (args: ReadonlyArray<unknown>) =>
    wanted ? args : args.map((arg) => (typeof arg === "string" ? stripAnsi(arg) : arg))
  const out = clean(colorWanted(process.stdout))
  const err = clean(colorWanted(process.stderr))
  return {
    ...base,
    log: (...args) => base.log(...out(args)),
    info: (...args) => base.info(...out(args)),
    error: (...args) => base.error(...err(args)),
    warn: (...args) => base.warn(...err(args))
  }
}

/**
 * A console for the parsing phase: @effect/cli prints a parse error's help document to
 * `Console.error` before failing with it; that text is dropped here and `usageMessage` prints one
 * line instead. Everything else goes through.
 */
export const parsingConsole = (base: Console.Console): Console.Console => ({ ...base, error: () => Effect.void })

// ---------------------------------------------------------------------------------------------
// Usage errors
// ---------------------------------------------------------------------------------------------

/** What the command line accepts, for naming the argument a parse failure is about. */
export interface Grammar {
  readonly program: string
  readonly commands: ReadonlyArray<string>
  /** Options that take a value (`--name value` or `--name=value`), without the dashes. */
  readonly valueOptions: ReadonlyArray<string>
  /** Options that take no value, without the dashes. */
  readonly flags: ReadonlyArray<string>
}

const distance = (a: string, b: string): number => {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    let previous = row[0]!
    row[0] = i
    for (let j = 1; j <= b.length; j++) {
      const kept = row[j]!
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, previous + (a[i - 1] === b[j - 1] ? 0 : 1))
      previous = kept
    }
  }
  return row[b.length]!
}

const suggestion = (word: string, candidates: ReadonlyArray<string>): string => {
  let best = word.length > 3 ? candidates.find((candidate) => candidate.startsWith(word)) : undefined
  let bestDistance = best === undefined ? 3 : 0
  for (const candidate of candidates) {
    const d = distance(word, candidate)
    if (d < bestDistance) {
      best = candidate
      bestDistance = d
    }
  }
  return best === undefined ? "" : `; did you mean '${best}'?`
}

/** The first argument the grammar does not accept, described in a few words. */
const firstProblem = (args: ReadonlyArray<string>, grammar: Grammar): string | undefined => {
  const options = [...grammar.valueOptions, ...grammar.flags].map((name) => `--${name}`)
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!
    if (arg === "-h") continue
    if (arg.startsWith("-")) {
      const [name, inline] = arg.split("=", 2) as [string, string | undefined]
      if (grammar.valueOptions.includes(name.replace(/^--/, "")) && name.startsWith("--")) {
        if (inline !== undefined) continue
        if (i + 1 >= args.length) return `option '${name}' needs a value`
        i++
        continue
      }
      if (grammar.flags.includes(name.replace(/^--/, "")) && name.startsWith("--")) continue
      return `unknown option '${name}'${suggestion(name, options)}`
    }
    if (grammar.commands.includes(arg)) return undefined // a subcommand's own arguments: its parser's message is precise
    return `unknown command '${arg}' (commands: ${grammar.commands.join(", ")})${suggestion(arg, grammar.commands)}`
  }
  return undefined
}

const docText = (doc: HelpDoc.HelpDoc): string =>
  stripAnsi(HelpDoc.toAnsiText(doc)).split("\n").map((line) => line.trim()).filter((line) => line !== "").join(" ")

/**
 * One line for a command line that cannot run: which argument, what is wrong with it, where to
 * look. `args` are the user's arguments (without `node` and the script).
 */
export const usageMessage = (error: ValidationError.ValidationError, args: ReadonlyArray<string>, grammar: Grammar): string => {
  const text = docText(error.error)
  const options = [...grammar.valueOptions, ...grammar.flags].map((name) => `--${name}`)
  const unknown = /^Received unknown argument: '(.*)'$/.exec(text)
  const badValue = /^'(.*)' is not a integer$/.exec(text)
  let what: string
  if (unknown !== null) {
    const arg = unknown[1]!
    const name = arg.split("=")[0]!
    what = arg.startsWith("-") ? `unknown option '${name}'${suggestion(name, options)}` : `unexpected argument '${arg}'`
  } else if (badValue !== null) {
    // Name the option the value was given to.
    const at = args.indexOf(badValue[1]!)
    const inline = args.find((arg) => arg.startsWith("--") && arg.endsWith(`=${badValue[1]}`))
    const option = inline?.split("=")[0] ?? (at > 0 && args[at - 1]!.startsWith("-") ? args[at - 1] : undefined)
    what = `${option === undefined ? "" : `${option}: `}'${badValue[1]}' is not a whole number`
  } else if (ValidationError.isCommandMismatch(error)) {
    what = firstProblem(args, grammar) ?? text
  } else {
    what = text
  }
  return `${grammar.program}: ${what} (see '${grammar.program} --help')`
}

// ---------------------------------------------------------------------------------------------
// Exit codes and signals
// ---------------------------------------------------------------------------------------------

let signalled: string | undefined

/**
 * Records which signal stopped the program (runMain interrupts the main fiber on SIGINT and
 * SIGTERM, and summaries run while it unwinds); a second signal ends the process at once.
 */
export const watchSignals = (): void => {
  for (const signal of Object.keys(SIGNAL_EXIT)) {
    process.on(signal, () => {
      if (signalled !== undefined) process.exit(SIGNAL_EXIT[signal])
      signalled = signal
    })
  }
  // `effect-vmbus | head` closes stdout early: that is the reader's choice, not an error.
  process.stdout.on("error", (error: NodeJS.ErrnoException) => {
    if (error.code === "EPIPE") process.exit(0)
    throw error
  })
}

/** The process exit code for how the program ended; prints what a failure was about. */
export const exitCode = <E, A>(exit: Exit.Exit<E, A>): number => {
  if (Exit.isSuccess(exit)) return signalled === undefined ? 0 : SIGNAL_EXIT[signalled]!
  if (Cause.isInterruptedOnly(exit.cause)) return SIGNAL_EXIT[signalled ?? "SIGINT"]!
  const failure = Cause.failureOption(exit.cause)
  if (failure._tag === "Some" && ValidationError.isValidationError(failure.value)) return EXIT_USAGE
  return EXIT_FAILURE
}

/**
 * The effect-vmbus command line. `effect-vmbus` (or `demo`) runs an integration-services session
 * between the simulated Hyper-V host and the guest services over the in-memory transport; `ring`
 * shows the ring itself (writes, reads, signal decisions).
 *
 * Exit codes: 0 done, 1 the run failed, 2 the command line was refused, 130/143 stopped by
 * SIGINT/SIGTERM (after printing what was done so far).
 *
 * To add a command: build it in its own file with `Command.make` and append it to `commands` below.
 */
import * as CliConfig from "@effect/cli/CliConfig"
import * as Command from "@effect/cli/Command"
import * as HelpDoc from "@effect/cli/HelpDoc"
import * as Options from "@effect/cli/Options"
import * as ValidationError from "@effect/cli/ValidationError"
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Logger from "effect/Logger"
import { devices, doctor } from "./devices.js"
import * as Terminal from "./terminal.js"

const PROGRAM = "effect-vmbus"
const VERSION = "0.1.0"

/** A whole-number option with a range; the default and the range are part of its help. */
const wholeNumber = (name: string, description: string, fallback: number, min: number, max: number) =>
  Options.integer(name).pipe(
    Options.mapEffect((n) =>
      n >= min && n <= max
        ? Effect.succeed(n)
        : Effect.fail(ValidationError.invalidValue(HelpDoc.p(`--${name} must be from ${min} to ${max}, got ${n}`)))
    ),
    Options.withDefault(fallback),
    Options.withDescription(`${description} (default ${fallback}; ${min} to ${max})`)
  )

const demoOptions = {
  heartbeats: wholeNumber("heartbeats", "heartbeats the host sends", 20, 0, 10_000_000),
  interval: wholeNumber("interval-ms", "milliseconds between heartbeats", 50, 0, 60_000),
  samples: wholeNumber("time-samples", "time samples the host sends", 3, 0, 10_000),
  progress: wholeNumber("progress-ms", "milliseconds between progress lines when stderr is not a terminal", 1000, 0, 3_600_000)
}
const demoOptionNames = ["heartbeats", "interval-ms", "time-samples", "progress-ms"]

// Commands load their implementation when they run: `--help` and a refused command line stay quick.
const runDemo = (o: { readonly heartbeats: number; readonly interval: number; readonly samples: number; readonly progress: number }) =>
  Effect.flatMap(
    Effect.promise(() => import("./demo.js")),
    (Demo) => Demo.run({ heartbeats: o.heartbeats, intervalMillis: o.interval, samples: o.samples, progressMillis: o.progress })
  )

const DEMO_DESCRIPTION =
  "An integration-services session between a simulated Hyper-V host and the guest services " +
  "(heartbeat, shutdown, time sync, KVP) over the in-memory transport, then a summary. " +
  "Ctrl-C stops it and prints the summary so far."

const demo = Command.make("demo", demoOptions, runDemo).pipe(Command.withDescription(DEMO_DESCRIPTION))

const ring = Command.make("ring", {}, () => Effect.flatMap(Effect.promise(() => import("./ringDemo.js")), (RingDemo) => RingDemo.run)).pipe(
  Command.withDescription("Writes and reads one ring in this process, showing the bytes, the indices and the signal decisions.")
)

/** The subcommands, in the order `--help` lists them. */
const commands = [demo, ring, devices, doctor] as const

const root = Command.make(PROGRAM, demoOptions, runDemo).pipe(
  Command.withDescription("Hyper-V VMBus channels as Effect resources. Without a command it runs the demo session (see demo)."),
  Command.withSubcommands(commands)
)

const grammar: Terminal.Grammar = {
  program: PROGRAM,
  commands: (commands as ReadonlyArray<Command.Command<string, any, any, any>>).flatMap((command) => [...Command.getNames(command)]),
  valueOptions: [...demoOptionNames, "sysfs-root", "dev-root", "device", "completions", "log-level"],
  flags: ["help", "version", "wizard"]
}

const footer = HelpDoc.blocks([
  HelpDoc.h1("ALSO"),
  HelpDoc.p("-h, --help: this text (also after a command: effect-vmbus ring --help); --version: the version; " +
    "--log-level LEVEL: all, trace, debug, info, warning, error, fatal or none; --completions SHELL: sh, bash, fish or zsh."),
  HelpDoc.p("Exit codes: 0 done, 1 failed, 2 invalid command line, 130 interrupted (Ctrl-C), 143 terminated. " +
    "Progress goes to stderr: a live line on a terminal, a line every --progress-ms otherwise. " +
    "Output is plain text when NO_COLOR is set or it is not a terminal.")
])

const main = Effect.gen(function*() {
  const console = Terminal.plainConsole(yield* Effect.console)
  const args = process.argv.slice(2)
  const cli = Command.run(
    Command.transformHandler(root, (handler) => Effect.withConsole(handler, console)),
    { name: PROGRAM, version: VERSION, footer }
  )
  yield* cli(process.argv).pipe(
    Effect.withConsole(Terminal.parsingConsole(console)),
    Effect.provide(CliConfig.layer({ showBuiltIns: false })),
    Effect.tapErrorCause((cause) => {
      if (Cause.isInterruptedOnly(cause)) return Effect.void
      const failure = Cause.failureOption(cause)
      if (failure._tag === "None") return console.error(`${PROGRAM}: unexpected failure\n${Cause.pretty(cause)}`)
      const error = failure.value
      if (ValidationError.isValidationError(error)) return console.error(Terminal.usageMessage(error, args, grammar))
      const message = typeof error === "object" && error !== null && "message" in error ? String(error.message) : String(error)
      return console.error(`${PROGRAM}: ${message}`)
    })
  )
})

Terminal.watchSignals()
main.pipe(
  Effect.provide(NodeContext.layer),
  Effect.provide(Logger.replace(Logger.defaultLogger, Logger.prettyLogger({ colors: Terminal.colorWanted(process.stderr), stderr: true }))),
  NodeRuntime.runMain({ disableErrorReporting: true, disablePrettyLogger: true, teardown: (exit, onExit) => onExit(Terminal.exitCode(exit)) })
)

#!/usr/bin/env node
// The `effect-vmbus` command. Its dependencies (@effect/cli, @effect/platform, @effect/platform-node,
// @effect/printer, @effect/printer-ansi) are optional peer dependencies, so that the library alone
// installs only `effect`: say what to install instead of printing a module-resolution stack trace.
const cliPackages = ["@effect/cli", "@effect/platform", "@effect/platform-node", "@effect/printer", "@effect/printer-ansi"]

try {
  await import("../dist/bin/main.js")
} catch (error) {
  const missing = error?.code === "ERR_MODULE_NOT_FOUND" &&
    cliPackages.find((name) => String(error.message).includes(`'${name}'`))
  if (!missing) throw error
  process.stderr.write(
    `effect-vmbus: the command line needs ${missing}, which is not installed.\n` +
      `Install the command line's dependencies next to effect-vmbus:\n` +
      `  npm install ${cliPackages.join(" ")}\n`
  )
  process.exitCode = 1
}

// `npm run bench`: checks the arguments (and answers --help) at once, compiles src/ and bench/ with
// tsc (tsconfig.bench.json → build/bench/), then runs the compiled bench/run.js with plain node:
// no tsx in the measured process (its keepNames transform alone costs 10–20 %).
import { spawnSync } from "node:child_process"
import { createRequire } from "node:module"
import { fileURLToPath } from "node:url"
import { parseOrExit } from "./args.js"

const root = fileURLToPath(new URL("..", import.meta.url))
const argv = process.argv.slice(2)
const args = parseOrExit(argv)
if (args !== undefined) {
  let status = 0
  if (args.build) {
    process.stderr.write("bench: compiling src/ and bench/ (tsc -p tsconfig.bench.json)\n")
    const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc")
    status = spawnSync(process.execPath, [tsc, "-p", "tsconfig.bench.json"], { cwd: root, stdio: "inherit" }).status ?? 1
  }
  if (status === 0) {
    const run = spawnSync(process.execPath, ["build/bench/bench/run.js", ...argv], { cwd: root, stdio: "inherit" })
    status = run.status ?? (run.signal === "SIGINT" ? 130 : 1)
  }
  process.exitCode = status
}

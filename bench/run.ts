// Runs the benchmark modules in turn: `npm run bench` runs every one that exists, `npm run bench -- ring`
// (or `npx tsx bench/run.ts ring gpadl`) only the named ones. Each module exports
// `async function run(): Promise<void>`.
import { existsSync } from "node:fs"

const MODULES = ["ring", "channel", "gpadl", "sharedMemory", "uio"] as const

interface BenchModule {
  readonly run: () => Promise<void>
}

const main = async (): Promise<void> => {
  const wanted = process.argv.slice(2).filter((arg) => !arg.startsWith("-"))
  const unknown = wanted.filter((name) => !(MODULES as ReadonlyArray<string>).includes(name))
  if (unknown.length > 0) {
    console.error(`unknown bench ${unknown.join(", ")}; available: ${MODULES.join(", ")}`)
    process.exitCode = 2
    return
  }
  const started = performance.now()
  for (const name of MODULES) {
    if (wanted.length > 0 && !wanted.includes(name)) continue
    const file = new URL(`./${name}.ts`, import.meta.url)
    // A module not written yet is skipped; any error inside an existing module is reported.
    if (!existsSync(file)) {
      if (wanted.includes(name)) console.log(`bench/${name}.ts does not exist yet; skipped`)
      continue
    }
    const module = (await import(file.href)) as Partial<BenchModule>
    if (typeof module.run !== "function") {
      console.error(`bench/${name}.ts does not export run()`)
      process.exitCode = 1
      continue
    }
    console.log(`\n== bench/${name}.ts`)
    await module.run()
  }
  console.log(`\ndone in ${((performance.now() - started) / 1000).toFixed(1)} s`)
}

await main()

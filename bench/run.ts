// Runs the benchmark subjects (see bench/args.ts for the command line) and prints one table per
// subject in the same format (bench/harness.ts). `npm run bench` runs this file compiled; it also
// runs under tsx (`npx tsx bench/run.ts ring`), slower.
import * as Effect from "effect/Effect"
import { writeFileSync } from "node:fs"
import * as os from "node:os"
import { parseOrExit, type SubjectName } from "./args.js"
import { formatHeading, formatTable, runSubject, type Subject, type SubjectResult } from "./harness.js"

const progress = (text: string): void => {
  if (process.stderr.isTTY) process.stderr.write(`\r\u001b[2K${text}`)
  else process.stderr.write(`${text}\n`)
}
const endProgress = (): void => {
  if (process.stderr.isTTY) process.stderr.write("\r\u001b[2K")
}

const load = async (name: SubjectName): Promise<Subject<any>> => {
  const module = (await import(`./${name}.js`)) as { readonly subject?: Subject<any> }
  if (module.subject === undefined) throw new Error(`bench/${name} does not export a subject`)
  return module.subject
}

const main = async (): Promise<void> => {
  const args = parseOrExit(process.argv.slice(2))
  if (args === undefined) return
  const started = performance.now()
  const results: Array<SubjectResult> = []
  const compiled = import.meta.url.endsWith(".js")
  console.log(`benchmarks: ${args.subjects.join(", ")}; ${compiled ? "compiled JavaScript, plain node" : "through tsx (slower than a build)"}`)
  for (const name of args.subjects) {
    const subject = await load(name)
    const result = await Effect.runPromise(runSubject(subject, args, progress))
    endProgress()
    results.push(result)
    console.log(`\n${formatHeading(result)}\n\n${formatTable(result)}`)
  }
  if (args.json !== undefined) {
    const cpus = os.cpus()
    writeFileSync(args.json, JSON.stringify({
      node: process.version,
      compiled,
      cpus: { count: cpus.length, model: cpus[0]?.model },
      date: new Date().toISOString(),
      subjects: results
    }, null, 2))
    console.log(`\nwrote ${args.json}`)
  }
  console.log(`\ndone in ${((performance.now() - started) / 1000).toFixed(1)} s`)
}

await main()

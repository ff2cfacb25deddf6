// Worker entry for benchmarks written in TypeScript: Node 20 does not apply `execArgv: ["--import",
// "tsx"]` to a worker's own entry, so register tsx here and import `workerData.entry`.
import { workerData } from "node:worker_threads"
import { register } from "tsx/esm/api"

register()
await import(workerData.entry)

// Worker entry that runs a TypeScript module: Node 20 does not apply `execArgv: ["--import", "tsx"]`
// to a worker's own entry (ERR_UNKNOWN_FILE_EXTENSION), so register tsx here and import the module
// named by `workerData.entry` (a file URL).
import { workerData } from "node:worker_threads"
import { register } from "tsx/esm/api"

register()
await import(workerData.entry)

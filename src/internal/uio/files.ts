// The file reads discovery needs, as an interface that @effect/platform's FileSystem satisfies as it is
// (same method names and shapes), so a FileSystem can be passed in — tests and the CLI do — while the
// library itself imports nothing beyond effect (@effect/platform is an optional peer). The default reads
// through node:fs/promises.
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as fsp from "node:fs/promises"

export interface FilesError {
  readonly message: string
}

export interface Files {
  /** A whole text file (sysfs attributes). */
  readFileString(path: string): Effect.Effect<string, FilesError>
  /** Whether the path exists (attributes the kernel hides, like `monitor_id`). */
  exists(path: string): Effect.Effect<boolean, FilesError>
  /** Entry names of a directory (`uio/`, `channels/`, the devices). */
  readDirectory(path: string): Effect.Effect<ReadonlyArray<string>, FilesError>
  /** A symbolic link's target (the `driver` link). */
  readLink(path: string): Effect.Effect<string, FilesError>
  /** Fails unless the path is readable / writable by this process (the device node). */
  access(path: string, options?: { readonly readable?: boolean; readonly writable?: boolean }): Effect.Effect<void, FilesError>
}

export class UioFiles extends Context.Tag("effect-vmbus/UioFiles")<UioFiles, Files>() {}

const attempt = <A>(run: () => Promise<A>): Effect.Effect<A, FilesError> =>
  Effect.tryPromise({ try: run, catch: (error) => ({ message: error instanceof Error ? error.message : String(error) }) })

export const nodeFiles: Files = {
  readFileString: (path) => attempt(() => fsp.readFile(path, "utf8")),
  exists: (path) => Effect.promise(() => fsp.access(path).then(() => true, () => false)),
  readDirectory: (path) => attempt(() => fsp.readdir(path)),
  readLink: (path) => attempt(() => fsp.readlink(path)),
  access: (path, options) =>
    attempt(() => fsp.access(path, (options?.readable ? fsp.constants.R_OK : 0) | (options?.writable ? fsp.constants.W_OK : 0)))
}

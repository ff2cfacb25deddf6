// Builds what a user gets: `npm pack` of this repository (its `prepare` script compiles dist/), the
// tarball installed into a fresh temporary project through a local registry (no network: the
// tarballs come from the npm cache that `npm ci` filled), then the project's own checks.
import { execFile } from "node:child_process"
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import * as LocalRegistry from "./localRegistry.js"

export const repoRoot = fileURLToPath(new URL("../..", import.meta.url)).replace(/\/$/, "")

export interface RunResult {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

/** Runs a command; never rejects, so a test can assert on the exit code and both streams. */
export const run = (command: string, args: ReadonlyArray<string>, cwd: string, env?: NodeJS.ProcessEnv) =>
  new Promise<RunResult>((done) => {
    execFile(
      command,
      args,
      { cwd, env: { ...process.env, ...env }, maxBuffer: 64 * 1024 * 1024, timeout: 180_000 },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === "number" ? error.code : 1
        done({ code, stdout: String(stdout), stderr: String(stderr) })
      }
    )
  })

const mustRun = async (command: string, args: ReadonlyArray<string>, cwd: string): Promise<RunResult> => {
  const result = await run(command, args, cwd)
  if (result.code !== 0) {
    throw new Error(`${command} ${args.join(" ")} (in ${cwd}) exited ${result.code}\n${result.stdout}\n${result.stderr}`)
  }
  return result
}

export interface PackedFile {
  readonly path: string
  readonly size: number
}

export interface PackedProject {
  /** The temporary directory; the consumer project is `consumer/` inside it. */
  readonly root: string
  readonly consumer: string
  readonly tarball: string
  readonly files: ReadonlyArray<PackedFile>
  /** `npm install` of the tarball alone, in the consumer project. */
  readonly install: (...extra: ReadonlyArray<string>) => Promise<RunResult>
  readonly node: (file: string, args?: ReadonlyArray<string>) => Promise<RunResult>
  readonly dispose: () => Promise<void>
}

export const create = async (): Promise<PackedProject> => {
  const root = mkdtempSync(join(tmpdir(), "effect-vmbus-pack-"))
  const registry = await LocalRegistry.start(join(repoRoot, "package-lock.json"))
  try {
    const packed = await mustRun("npm", ["pack", "--json", "--pack-destination", root], repoRoot)
    const [report] = JSON.parse(packed.stdout) as Array<{ filename: string; files: Array<PackedFile> }>
    const tarball = join(root, report!.filename)
    const consumer = join(root, "consumer")
    cpSync(join(repoRoot, "test", "fixtures", "consumer"), consumer, { recursive: true })
    writeFileSync(
      join(consumer, "package.json"),
      JSON.stringify({ name: "consumer", version: "1.0.0", private: true, type: "module" }, null, 2)
    )
    const npmOptions = ["--registry", registry.url, "--cache", join(root, "npm-cache"), "--no-audit", "--no-fund"]
    return {
      root,
      consumer,
      tarball,
      files: report!.files,
      install: (...extra) => mustRun("npm", ["install", ...npmOptions, ...extra], consumer),
      node: (file, args = []) => run(process.execPath, [file, ...args], consumer),
      dispose: async () => {
        await registry.close()
        rmSync(root, { recursive: true, force: true })
      }
    }
  } catch (error) {
    await registry.close()
    rmSync(root, { recursive: true, force: true })
    throw error
  }
}

export interface InstalledPackage {
  readonly name: string
  readonly version: string
  readonly path: string
}

/** Every package under `node_modules`, nested ones included. */
export const installedPackages = (dir: string): Array<InstalledPackage> => {
  const found: Array<InstalledPackage> = []
  const visit = (modules: string) => {
    let entries: Array<string>
    try {
      entries = readdirSync(modules)
    } catch {
      return
    }
    for (const entry of entries) {
      if (entry.startsWith(".")) continue
      const dirs = entry.startsWith("@") ? readdirSync(join(modules, entry)).map((n) => join(entry, n)) : [entry]
      for (const name of dirs) {
        const path = join(modules, name)
        const manifest = JSON.parse(readFileSync(join(path, "package.json"), "utf8")) as { name: string; version: string }
        found.push({ name: manifest.name, version: manifest.version, path })
        visit(join(path, "node_modules"))
      }
    }
  }
  visit(join(dir, "node_modules"))
  return found
}

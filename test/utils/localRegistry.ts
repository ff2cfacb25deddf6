// A throw-away npm registry on 127.0.0.1 that serves exactly the packages of this repository's
// package-lock.json, with the tarballs `npm ci` left in the local npm cache. The packaging test
// installs the packed tarball through it, so npm resolves peers and dependencies for real (a plain
// `npm install --offline` cannot: `npm ci` caches tarballs, not the registry documents that
// resolution needs) and no request leaves the machine.
import { execFile } from "node:child_process"
import { existsSync, readFileSync } from "node:fs"
import { createServer } from "node:http"
import type { AddressInfo } from "node:net"
import { join } from "node:path"
import { promisify } from "node:util"

const run = promisify(execFile)

interface LockEntry {
  readonly version?: string
  readonly integrity?: string
  readonly name?: string
  readonly [field: string]: unknown
}

export interface LocalRegistry {
  readonly url: string
  readonly close: () => Promise<void>
}

// cacache stores a tarball under its integrity digest: content-v2/<algorithm>/<hex[0..2]>/<hex[2..4]>/<rest>.
const contentPath = (cache: string, integrity: string): string => {
  const [algorithm, base64] = integrity.split("-", 2) as [string, string]
  const hex = Buffer.from(base64, "base64").toString("hex")
  return join(cache, "_cacache", "content-v2", algorithm, hex.slice(0, 2), hex.slice(2, 4), hex.slice(4))
}

const manifestFields = [
  "dependencies",
  "optionalDependencies",
  "peerDependencies",
  "peerDependenciesMeta",
  "bin",
  "engines",
  "os",
  "cpu",
  "libc",
  "license"
] as const

/** Starts the registry; `lockFile` is the repository's package-lock.json. */
export const start = async (lockFile: string): Promise<LocalRegistry> => {
  const cache = (await run("npm", ["config", "get", "cache"])).stdout.trim()
  const lock = JSON.parse(readFileSync(lockFile, "utf8")) as { packages: Record<string, LockEntry> }
  const packuments = new Map<string, { versions: Map<string, LockEntry> }>()
  for (const [path, entry] of Object.entries(lock.packages)) {
    const at = path.lastIndexOf("node_modules/")
    if (at < 0 || entry.version === undefined || entry.integrity === undefined) continue
    // Platform binaries of other systems were never downloaded; leave them out (npm skips optional
    // packages it cannot find).
    if (!existsSync(contentPath(cache, entry.integrity))) continue
    const name = entry.name ?? path.slice(at + "node_modules/".length)
    const packument = packuments.get(name) ?? { versions: new Map() }
    packument.versions.set(entry.version, entry)
    packuments.set(name, packument)
  }

  const tarballs = new Map<string, string>()
  const server = createServer((request, response) => {
    const path = decodeURIComponent(new URL(request.url ?? "/", "http://localhost").pathname).slice(1)
    const tarball = tarballs.get(path)
    if (tarball !== undefined) {
      response.writeHead(200, { "content-type": "application/octet-stream" })
      response.end(readFileSync(tarball))
      return
    }
    const packument = packuments.get(path)
    if (packument === undefined) {
      response.writeHead(404, { "content-type": "application/json" })
      response.end(JSON.stringify({ error: "not found" }))
      return
    }
    const versions: Record<string, unknown> = {}
    let latest = ""
    for (const [version, entry] of packument.versions) {
      const file = `-/${path}/${version}.tgz`
      tarballs.set(file, contentPath(cache, entry.integrity!))
      const manifest: Record<string, unknown> = { name: path, version }
      for (const field of manifestFields) if (entry[field] !== undefined) manifest[field] = entry[field]
      manifest.dist = { tarball: `${url}/${file}`, integrity: entry.integrity }
      versions[version] = manifest
      latest = version
    }
    response.writeHead(200, { "content-type": "application/json" })
    response.end(JSON.stringify({ name: path, "dist-tags": { latest }, versions }))
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  return {
    url,
    close: () => new Promise<void>((resolve) => server.close(() => resolve()))
  }
}

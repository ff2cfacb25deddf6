// What a user installs: the packed tarball in a fresh project, run with plain node and type-checked
// by a strict NodeNext consumer (see test/utils/packedProject.ts; no network is used).
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { cpSync, existsSync, readdirSync, readFileSync } from "node:fs"
import { join } from "node:path"
import ts from "typescript"
import * as PackedProject from "./utils/packedProject.js"

// Every program in examples/ and what its output must show; helpers (run by another example) map to
// undefined. A new example must be added here, so that the tests run it.
const examples: Record<string, ReadonlyArray<string | RegExp> | undefined> = {
  "request-serve.ts": ["replies: HELLO VMBUS", "requests sent: 2"],
  "typed-protocol.ts": ["sum: 4294967296", "described: calculator (c7fb7bca-e1c6-4f3c-9a3c-6f1f0e7a5b21)", "refused: ProtocolError"],
  "gpadl-shared-buffer.ts": [/GPADL 0x[0-9a-f]+ over 4 pages/, "host checksum: 596 (matches)", "guest reads: seen by the host"],
  "integration-services.ts": [
    "negotiated: heartbeat, shutdown, timesync, kvp",
    "heartbeat answer: 1",
    "KVP VirtualMachineName: example-vm (guest store: example-vm)",
    "shutdown status: 0x0 (shutdown)"
  ],
  "worker-thread.ts": ["worker thread: 100 requests answered, first reply 1,2,3", "server saw the client close: PeerClose"],
  "worker-thread-guest.ts": undefined,
  "ring-dump.ts": [
    "published 4 packets; signal the reader: true",
    "control page: write index 128, read index 0, 128 bytes to read",
    'InBand transaction 2, 8 payload bytes "second"',
    "Completion transaction 7, 8 payload bytes"
  ],
  "metrics-and-tracing.ts": [
    "client stats: 10 packets sent, 10 completions received",
    "metric vmbus_packets_sent{channel=echo-client,role=client} 10",
    /span vmbus\.channel\.request × 10/,
    /span vmbus\.channel\.open × 2/,
    "a request's parent span: example.session"
  ]
}

const cliPackages = ["@effect/cli", "@effect/platform-node", "@effect/printer", "@effect/printer-ansi"]

interface Manifest {
  readonly main?: string
  readonly types?: string
  readonly exports: Record<string, unknown>
  readonly bin?: Record<string, string>
  readonly dependencies?: Record<string, string>
  readonly peerDependencies?: Record<string, string>
  readonly peerDependenciesMeta?: Record<string, { optional?: boolean }>
}

// The packages `effect` needs, from the repository's lock file (so a patch release of effect that
// adds a dependency does not break this test).
const effectClosure = (): Set<string> => {
  const lock = JSON.parse(readFileSync(join(PackedProject.repoRoot, "package-lock.json"), "utf8")) as {
    packages: Record<string, { dependencies?: Record<string, string> }>
  }
  const names = new Set<string>()
  const visit = (name: string) => {
    if (names.has(name)) return
    names.add(name)
    for (const dependency of Object.keys(lock.packages[`node_modules/${name}`]?.dependencies ?? {})) visit(dependency)
  }
  visit("effect")
  return names
}

// Type-checks a consumer the way tsc does with `strict` and NodeNext resolution, and reports the
// diagnostics of the consumer's files and of effect-vmbus's declarations (with `skipLibCheck` off for
// those; checking all of effect's own declarations as well would triple the time and test effect, not
// us). With `outDir`, the consumer's files are also compiled to JavaScript.
const typeCheck = (consumer: string, entries: ReadonlyArray<string>, options: ts.CompilerOptions) => {
  const program = ts.createProgram(entries.map((entry) => join(consumer, entry)), {
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    strict: true,
    exactOptionalPropertyTypes: true,
    skipLibCheck: false,
    noEmit: options.outDir === undefined,
    ...options
  })
  const relative = (fileName: string) => fileName.slice(consumer.length + 1)
  const files = program.getSourceFiles().filter((file) =>
    relative(file.fileName).startsWith("node_modules/effect-vmbus/") || !relative(file.fileName).startsWith("node_modules/")
  )
  const emitted = options.outDir === undefined ? undefined : program.emit()
  const diagnostics = [
    ...program.getOptionsDiagnostics(),
    ...program.getGlobalDiagnostics(),
    ...files.flatMap((file) => [...program.getSyntacticDiagnostics(file), ...program.getSemanticDiagnostics(file)]),
    ...(emitted?.diagnostics ?? [])
  ].map((d) => {
    const text = ts.flattenDiagnosticMessageText(d.messageText, "\n")
    if (d.file === undefined || d.start === undefined) return text
    const { line, character } = d.file.getLineAndCharacterOfPosition(d.start)
    return `${relative(d.file.fileName)}(${line + 1},${character + 1}): ${text}`
  })
  return {
    diagnostics,
    checked: files.map((file) => relative(file.fileName)),
    nodeTypesLoaded: program.getSourceFiles().some((file) => file.fileName.includes("/node_modules/@types/node/"))
  }
}

describe("the packed package", () => {
  let project: PackedProject.PackedProject
  let manifest: Manifest
  let withoutNodeTypes: ReturnType<typeof typeCheck>
  let withNodeTypes: ReturnType<typeof typeCheck>

  beforeAll(async () => {
    project = await PackedProject.create()
    await project.install(project.tarball)
    // Before @types/node is there: a consumer of the non-Node modules needs only the ES and DOM libs.
    withoutNodeTypes = typeCheck(project.consumer, ["nonode.ts"], { lib: ["lib.es2022.d.ts", "lib.dom.d.ts"], types: [] })
    await project.install("--save-dev", "@types/node@^20")
    // The examples, exactly as a user would copy them, compiled against the installed package.
    cpSync(join(PackedProject.repoRoot, "examples"), join(project.consumer, "examples"), { recursive: true })
    const exampleFiles = readdirSync(join(project.consumer, "examples")).filter((name) => name.endsWith(".ts"))
    withNodeTypes = typeCheck(project.consumer, ["consumer.ts", ...exampleFiles.map((name) => join("examples", name))], {
      lib: ["lib.es2022.d.ts"],
      types: ["node"],
      rootDir: project.consumer,
      outDir: join(project.consumer, "out")
    })
    manifest = JSON.parse(readFileSync(join(project.consumer, "node_modules", "effect-vmbus", "package.json"), "utf8"))
  }, 240_000)

  afterAll(async () => {
    await project?.dispose()
  })

  it("exports, main and types point at compiled JavaScript and declarations in dist/", () => {
    const installed = join(project.consumer, "node_modules", "effect-vmbus")
    const targets: Array<[string, string]> = []
    for (const [subpath, target] of Object.entries(manifest.exports)) {
      if (target === null || typeof target === "string") {
        if (typeof target === "string") targets.push([subpath, target])
        continue
      }
      const conditions = target as Record<string, string>
      assert.deepStrictEqual(Object.keys(conditions), ["types", "default"], `${subpath}: types first, then default`)
      assert.match(conditions.types!, /^\.\/dist\/.+\.d\.ts$/, `${subpath} types`)
      assert.match(conditions.default!, /^\.\/dist\/.+\.js$/, `${subpath} default`)
      targets.push([subpath, conditions.types!], [subpath, conditions.default!], [subpath, `${conditions.types!}.map`])
    }
    assert.strictEqual(manifest.exports["./package.json"], "./package.json")
    assert.strictEqual(manifest.exports["./internal/*"], null)
    assert.strictEqual(manifest.main, "./dist/index.js")
    assert.strictEqual(manifest.types, "./dist/index.d.ts")
    for (const [subpath, target] of targets) {
      const ok = /\.(js|d\.ts|d\.ts\.map|json)$/.test(target) && !target.includes("/src/")
      assert.isTrue(ok, `${subpath} must not point at sources: ${target}`)
      assert.isTrue(existsSync(join(installed, target)), `${subpath}: ${target} is in the tarball`)
    }
  })

  it("the tarball holds dist with declaration maps, sources for them, the bin, LICENSE and CHANGELOG, and no tests", () => {
    const paths = new Set(project.files.map((file) => file.path))
    for (const path of ["dist/index.js", "dist/index.d.ts", "dist/index.d.ts.map", "dist/Channel.js.map", "src/Channel.ts"]) {
      assert.isTrue(paths.has(path), path)
    }
    for (const path of ["bin/effect-vmbus.js", "dist/bin/main.js", "README.md", "LICENSE", "CHANGELOG.md", "package.json"]) {
      assert.isTrue(paths.has(path), path)
    }
    const unwanted = [...paths].filter((path) => /^(test|bench|examples|docs|node_modules|\.ci)\//.test(path))
    assert.deepStrictEqual(unwanted, [])
  })

  it("effect is a peer dependency and the command line's packages are optional peers", () => {
    assert.deepStrictEqual(manifest.dependencies ?? {}, {})
    assert.match(manifest.peerDependencies?.effect ?? "", /^\^3\./)
    assert.isUndefined(manifest.peerDependenciesMeta?.effect)
    for (const name of cliPackages) {
      assert.isDefined(manifest.peerDependencies?.[name], name)
      assert.strictEqual(manifest.peerDependenciesMeta?.[name]?.optional, true, name)
    }
  })

  it("installs exactly one effect, its own dependencies, and nothing of the command line", () => {
    const installed = PackedProject.installedPackages(project.consumer)
    assert.deepStrictEqual(installed.filter((p) => p.name === "effect").map((p) => p.path), [
      join(project.consumer, "node_modules", "effect")
    ])
    const expected = new Set([...effectClosure(), "effect-vmbus", "@types/node", "undici-types"])
    const unexpected = installed.filter((p) => !expected.has(p.name)).map((p) => p.name)
    assert.deepStrictEqual(unexpected, [], "nothing but effect-vmbus, effect and what effect needs")
    for (const name of [...cliPackages, "@effect/platform"]) {
      assert.isFalse(installed.some((p) => p.name === name), `${name} installed`)
    }
  })

  it("runs a server and a client over the in-memory transport with plain node (ESM, no tsx)", async () => {
    const result = await project.node("main.mjs")
    assert.strictEqual(result.code, 0, result.stderr)
    assert.include(result.stdout, "reply 2,4,6")
    assert.include(result.stdout, "ring module function")
  })

  it("the declarations of the non-Node modules type-check without @types/node", () => {
    assert.deepStrictEqual(withoutNodeTypes.diagnostics, [])
    assert.isFalse(withoutNodeTypes.nodeTypesLoaded)
    assert.include(withoutNodeTypes.checked, "node_modules/effect-vmbus/dist/Channel.d.ts")
    assert.include(withoutNodeTypes.checked, "node_modules/effect-vmbus/dist/Ring.d.ts")
  })

  it("a strict NodeNext TypeScript consumer type-checks (with every declaration, the Node-only ones too) and runs", async () => {
    assert.deepStrictEqual(withNodeTypes.diagnostics, [])
    assert.include(withNodeTypes.checked, "node_modules/effect-vmbus/dist/SharedMemoryTransport.d.ts")
    assert.include(withNodeTypes.checked, "consumer.ts")
    assert.include(withNodeTypes.checked, "examples/request-serve.ts")
    const result = await project.node(join("out", "consumer.js"))
    assert.strictEqual(result.code, 0, result.stderr)
    assert.include(result.stdout, "reply 9,8,7,6")
    assert.include(result.stdout, `ring ${4 * 4096} function`)
  })

  it("the effect-vmbus command says which packages to install when the optional ones are missing", async () => {
    const result = await project.node(join("node_modules", ".bin", "effect-vmbus"), ["--help"])
    assert.strictEqual(result.code, 1)
    assert.include(result.stderr, "npm install @effect/cli @effect/platform @effect/platform-node")
  })

  it("the compiled command runs in the repository, where its packages are installed", async () => {
    const result = await PackedProject.run(process.execPath, ["bin/effect-vmbus.js", "--help"], PackedProject.repoRoot)
    assert.strictEqual(result.code, 0, result.stderr)
    assert.include(result.stdout, "effect-vmbus")
  })

  it("every file in examples/ is listed here", () => {
    const files = readdirSync(join(PackedProject.repoRoot, "examples")).filter((name) => name.endsWith(".ts")).sort()
    assert.deepStrictEqual(files, Object.keys(examples).sort())
  })

  for (const [file, expected] of Object.entries(examples)) {
    if (expected === undefined) continue
    it(`examples/${file} runs with plain node against the installed package`, async () => {
      const result = await project.node(join("out", "examples", file.replace(/\.ts$/, ".js")))
      assert.strictEqual(result.code, 0, result.stdout + result.stderr)
      for (const line of expected) {
        if (typeof line === "string") assert.include(result.stdout, line)
        else assert.match(result.stdout, line)
      }
    })
  }
})

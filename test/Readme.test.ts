// The README as a user reads it: every ```ts block is a complete program that type-checks (strict,
// NodeNext, as this repository's tsconfig.json, where "effect-vmbus" maps to src/) and runs as
// written; ```ts compile-only blocks are type-checked only. And no link leaves the repository.
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { dirname, join, relative, resolve } from "node:path"
import ts from "typescript"
import * as PackedProject from "./utils/packedProject.js"

const root = PackedProject.repoRoot
const readme = readFileSync(join(root, "README.md"), "utf8")

interface Snippet {
  readonly index: number
  readonly line: number
  readonly code: string
  readonly run: boolean
  readonly file: string
}

const snippetDir = join(root, ".readme-snippets")
const snippets: Array<Snippet> = []
for (const match of readme.matchAll(/^```(ts|typescript)([^\n]*)\n([\s\S]*?)^```$/gm)) {
  const index = snippets.length
  snippets.push({
    index,
    line: readme.slice(0, match.index).split("\n").length,
    code: match[3]!,
    run: !match[2]!.includes("compile-only"),
    file: join(snippetDir, `readme-${index}.ts`)
  })
}

// Output a snippet must print, for the snippets that say what they print.
const expectedOutput = (code: string): ReadonlyArray<string> =>
  code.includes("console.log(reply)")
    ? ["Uint8Array(8) [\n  1, 2, 3, 4,\n  0, 0, 0, 0\n]"]
    : code.includes("Ring.OutgoingRing.attach")
    ? ["signal the reader: true", "InBand hello"]
    : []

const markdownFiles = [
  "README.md",
  "CHANGELOG.md",
  ...readdirSync(join(root, "docs")).filter((name) => name.endsWith(".md")).map((name) => join("docs", name))
]

describe("README", () => {
  beforeAll(() => {
    rmSync(snippetDir, { recursive: true, force: true })
    mkdirSync(snippetDir, { recursive: true })
    for (const snippet of snippets) writeFileSync(snippet.file, snippet.code)
  })
  afterAll(() => {
    rmSync(snippetDir, { recursive: true, force: true })
  })

  it("has TypeScript snippets, the API tour and the ring narrowing among them", () => {
    assert.isAtLeast(snippets.length, 2)
    assert.isTrue(snippets.some((s) => s.run && s.code.includes("Effect.runPromise(program)")), "the tour runs its program")
    assert.isTrue(snippets.some((s) => s.run && s.code.includes("Ring.IncomingRing.attach")), "rings alone")
  })

  it("every snippet type-checks as written", () => {
    const config = ts.getParsedCommandLineOfConfigFile(join(root, "tsconfig.json"), {}, {
      ...ts.sys,
      onUnRecoverableConfigFileDiagnostic: (d) => assert.fail(ts.flattenDiagnosticMessageText(d.messageText, "\n"))
    })!
    const program = ts.createProgram(snippets.map((s) => s.file), { ...config.options, noEmit: true })
    const problems = snippets.flatMap((snippet) => {
      const source = program.getSourceFile(snippet.file)!
      return [...program.getSyntacticDiagnostics(source), ...program.getSemanticDiagnostics(source)].map((d) => {
        const { line } = source.getLineAndCharacterOfPosition(d.start ?? 0)
        return `README.md:${snippet.line + 1 + line}: ${ts.flattenDiagnosticMessageText(d.messageText, "\n")}`
      })
    })
    assert.deepStrictEqual([...program.getOptionsDiagnostics(), ...program.getGlobalDiagnostics()].length, 0)
    assert.deepStrictEqual(problems, [])
  })

  for (const snippet of snippets.filter((s) => s.run)) {
    it(`the snippet at README.md line ${snippet.line} runs as written`, async () => {
      const tsx = join(root, "node_modules", "tsx", "dist", "cli.mjs")
      const result = await PackedProject.run(process.execPath, [tsx, snippet.file], root)
      assert.strictEqual(result.code, 0, result.stdout + result.stderr)
      for (const text of expectedOutput(snippet.code)) assert.include(result.stdout, text)
    })
  }

  it("no link in the README, the changelog or docs/ leaves the repository, and every local link resolves", () => {
    const problems: Array<string> = []
    for (const file of markdownFiles) {
      const text = readFileSync(join(root, file), "utf8")
      if (text.includes("shared/spec")) problems.push(`${file}: mentions shared/spec`)
      for (const match of text.matchAll(/\]\(([^)\s]+)\)/g)) {
        const target = match[1]!.split("#")[0]!
        if (target === "" || /^[a-z]+:/.test(target)) continue
        const path = resolve(dirname(join(root, file)), target)
        if (relative(root, path).startsWith("..")) problems.push(`${file}: ${target} is outside the repository`)
        else if (!existsSync(path)) problems.push(`${file}: ${target} does not exist`)
      }
    }
    assert.deepStrictEqual(problems, [])
  })
})

// The package's boundaries, checked on the sources: what library modules may import, and that every
// public module is an entry point of the package and of its root module.
import { assert, describe, it } from "@effect/vitest"
import { readdirSync, readFileSync } from "node:fs"
import { join, relative } from "node:path"
import { fileURLToPath } from "node:url"
import ts from "typescript"

const root = fileURLToPath(new URL("..", import.meta.url))
const manifest = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as {
  exports: Record<string, unknown>
  dependencies?: Record<string, string>
  peerDependencies?: Record<string, string>
  peerDependenciesMeta?: Record<string, { optional?: boolean }>
  optionalDependencies?: Record<string, string>
}

// The command line's packages: optional peers that only src/bin may use.
const cliOnly = ["@effect/cli", "@effect/platform-node", "@effect/printer", "@effect/printer-ansi"]

const sourceFiles = (dir: string): Array<string> =>
  readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory() ? sourceFiles(join(dir, entry.name)) : entry.name.endsWith(".ts") ? [join(dir, entry.name)] : []
  )

interface ImportSite {
  readonly file: string
  readonly specifier: string
  /** Erased at compile time (`import type`, `export type`, or every binding `type`). */
  readonly typeOnly: boolean
  /** `import("…")`, evaluated only when reached. */
  readonly dynamic: boolean
}

const importsOf = (file: string): Array<ImportSite> => {
  const source = ts.createSourceFile(file, readFileSync(file, "utf8"), ts.ScriptTarget.ES2022, true)
  const sites: Array<ImportSite> = []
  const add = (specifier: ts.Expression | undefined, typeOnly: boolean, dynamic: boolean) => {
    if (specifier !== undefined && ts.isStringLiteral(specifier)) {
      sites.push({ file: relative(root, file), specifier: specifier.text, typeOnly, dynamic })
    }
  }
  const visit = (node: ts.Node) => {
    if (ts.isImportDeclaration(node)) {
      const clause = node.importClause
      const bindings = clause?.namedBindings
      const allTypes = clause !== undefined && clause.name === undefined && bindings !== undefined &&
        ts.isNamedImports(bindings) && bindings.elements.length > 0 && bindings.elements.every((e) => e.isTypeOnly)
      add(node.moduleSpecifier, clause?.isTypeOnly === true || allTypes, false)
    } else if (ts.isExportDeclaration(node)) {
      add(node.moduleSpecifier, node.isTypeOnly, false)
    } else if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword) {
      add(node.arguments[0], false, true)
    } else if (ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument)) {
      add(node.argument.literal as ts.Expression, true, false)
    }
    ts.forEachChild(node, visit)
  }
  visit(source)
  return sites
}

const packageName = (specifier: string): string =>
  specifier.startsWith("@") ? specifier.split("/").slice(0, 2).join("/") : specifier.split("/")[0]!

const libraryFiles = sourceFiles(join(root, "src")).filter((file) => !relative(root, file).startsWith(join("src", "bin")))
const publicModules = readdirSync(join(root, "src"))
  .filter((name) => name.endsWith(".ts") && name !== "index.ts")
  .map((name) => name.slice(0, -".ts".length))

describe("package boundaries", () => {
  it("library modules never import the command line's packages", () => {
    const offending = libraryFiles.flatMap(importsOf).filter((site) => cliOnly.includes(packageName(site.specifier)))
    assert.deepStrictEqual(offending, [])
  })

  it("library modules import only effect, node: built-ins and declared dependencies; optional ones only lazily", () => {
    const required = new Set([
      ...Object.keys(manifest.dependencies ?? {}),
      ...Object.keys(manifest.peerDependencies ?? {}).filter((name) => manifest.peerDependenciesMeta?.[name]?.optional !== true)
    ])
    const optional = new Set([
      ...Object.keys(manifest.optionalDependencies ?? {}),
      ...Object.keys(manifest.peerDependencies ?? {}).filter((name) => manifest.peerDependenciesMeta?.[name]?.optional === true)
    ])
    assert.isTrue(required.has("effect"))
    const problems = libraryFiles.flatMap(importsOf).flatMap((site) => {
      if (site.specifier.startsWith(".") || site.specifier.startsWith("node:")) return []
      const name = packageName(site.specifier)
      if (required.has(name)) return []
      // A missing optional package must not break `import "effect-vmbus"`: only a dynamic import
      // (or a type, erased at compile time) may name it.
      if (optional.has(name) && (site.dynamic || site.typeOnly)) return []
      return [`${site.file}: ${site.specifier}${optional.has(name) ? " (optional: import it dynamically)" : " (not declared)"}`]
    })
    assert.deepStrictEqual(problems, [])
  })

  it("the checks above see imports of every kind", () => {
    const sites = importsOf(join(root, "src", "bin", "main.ts"))
    assert.isTrue(sites.some((site) => site.specifier === "@effect/cli/Command" && !site.typeOnly))
    const channel = importsOf(join(root, "src", "Channel.ts"))
    assert.isTrue(channel.some((site) => site.specifier.startsWith("effect/")))
  })

  it("every public module is a package entry point with compiled targets and is re-exported by the root module", () => {
    const index = readFileSync(join(root, "src", "index.ts"), "utf8")
    for (const name of publicModules) {
      assert.deepStrictEqual(
        manifest.exports[`./${name}`],
        { types: `./dist/${name}.d.ts`, default: `./dist/${name}.js` },
        `package.json exports must have "./${name}": { "types": "./dist/${name}.d.ts", "default": "./dist/${name}.js" }`
      )
      assert.include(index, `export * as ${name} from "./${name}.js"`, `src/index.ts must re-export ${name}`)
    }
    const entries = Object.keys(manifest.exports).filter((key) => !["./package.json", "./internal/*", "."].includes(key))
    assert.deepStrictEqual(entries.sort(), publicModules.map((name) => `./${name}`).sort(), "no entry without a module")
  })
})

// Every export of every public module has a JSDoc description (what an editor shows on hover and what
// `npm run docs` renders), and so does every member of the interfaces and classes they export —
// `OpenedChannel.request`, `Ring.OutgoingRing.commit`, … — wherever those are declared in src/.
import { assert, describe, it } from "@effect/vitest"
import { readdirSync } from "node:fs"
import { join, sep } from "node:path"
import ts from "typescript"
import * as PackedProject from "./utils/packedProject.js"

const src = join(PackedProject.repoRoot, "src") + sep
const publicModules = readdirSync(src).filter((name) => name.endsWith(".ts") && name !== "index.ts")

const undocumented = (): Array<string> => {
  const config = ts.getParsedCommandLineOfConfigFile(join(PackedProject.repoRoot, "tsconfig.json"), {}, {
    ...ts.sys,
    onUnRecoverableConfigFileDiagnostic: () => undefined
  })!
  const program = ts.createProgram(publicModules.map((name) => join(src, name)), { ...config.options, noEmit: true })
  const checker = program.getTypeChecker()
  const describedBy = (symbol: ts.Symbol) => ts.displayPartsToString(symbol.getDocumentationComment(checker)).trim()
  const inSrc = (symbol: ts.Symbol) =>
    (symbol.declarations ?? []).some((d) => d.getSourceFile().fileName.startsWith(src.split(sep).join("/")))
  const missing: Array<string> = []
  const where = (node: ts.Node | undefined) => {
    if (node === undefined) return ""
    const file = node.getSourceFile()
    return ` (${file.fileName.slice(src.length)}:${file.getLineAndCharacterOfPosition(node.getStart()).line + 1})`
  }
  const seenTypes = new Set<ts.Type>()

  // Members of an exported interface, object type or class, when they are declared in src/. Schema
  // classes (errors, messages) are described by their class comment; their fields are data.
  const checkMembers = (owner: string, type: ts.Type) => {
    if (seenTypes.has(type)) return
    seenTypes.add(type)
    for (const property of checker.getPropertiesOfType(type)) {
      // `_tag` is the discriminant every Effect data type carries; it documents itself.
      if (!inSrc(property) || property.name === "_tag" || property.name.startsWith("__")) continue
      const declaration = property.declarations?.[0]
      if (declaration === undefined) continue
      const modifiers = ts.canHaveModifiers(declaration) ? ts.getModifiers(declaration) ?? [] : []
      if (modifiers.some((m) => m.kind === ts.SyntaxKind.PrivateKeyword || m.kind === ts.SyntaxKind.ProtectedKeyword)) continue
      if (ts.isPropertyAssignment(declaration) || ts.isShorthandPropertyAssignment(declaration)) continue
      if (describedBy(property) === "") missing.push(`${owner}.${property.name}${where(declaration)}`)
    }
  }

  for (const name of publicModules) {
    const file = program.getSourceFile(join(src, name))!
    const module = checker.getSymbolAtLocation(file)!
    const moduleName = name.slice(0, -3)
    for (const exported of checker.getExportsOfModule(module)) {
      const path = `${moduleName}.${exported.name}`
      if (describedBy(exported) === "") missing.push(`${path}${where(exported.declarations?.[0])}`)
      const target = exported.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(exported) : exported
      if (target.flags & (ts.SymbolFlags.Interface | ts.SymbolFlags.TypeAlias)) {
        const type = checker.getDeclaredTypeOfSymbol(target)
        if (type.isUnion()) continue
        if (type.getSymbol() !== undefined && inSrc(type.getSymbol()!)) checkMembers(path, type)
      }
      if (target.flags & ts.SymbolFlags.Class) {
        const declaration = target.valueDeclaration
        const heritage = declaration !== undefined && ts.isClassDeclaration(declaration) ? declaration.heritageClauses : undefined
        const schemaClass = heritage?.some((h) => h.types.some((t) => /Schema\.|TaggedError|TaggedClass|Data\./.test(t.expression.getText())))
        if (!schemaClass) checkMembers(path, checker.getDeclaredTypeOfSymbol(target))
      }
    }
  }
  return missing
}

describe("API documentation", () => {
  it("every export and every member of an exported interface or class has a JSDoc description", () => {
    assert.deepStrictEqual(undocumented(), [])
  })

  it("npm run docs renders the reference (typedoc, here without writing the files)", async () => {
    const typedoc = join(PackedProject.repoRoot, "node_modules", "typedoc", "bin", "typedoc")
    const result = await PackedProject.run(process.execPath, [typedoc, "--emit", "none"], PackedProject.repoRoot)
    assert.strictEqual(result.code, 0, result.stdout + result.stderr)
  }, 120_000)
})

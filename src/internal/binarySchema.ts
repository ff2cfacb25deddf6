// Little-endian binary structs as Schema<Type, Uint8Array>. A struct definition is compiled once into
// a synchronous reader / measurer / writer over DataView; the Schema wraps those with
// transformOrFail and the hot-path helpers wrap them with Either. Failures inside the compiled code
// are thrown as a private `Failure` (never escaping this module) and turned into a ParseError whose
// message names the field path, e.g. `icmsg_hdr.icverframe.major: ...`.
import * as Either from "effect/Either"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import type * as SchemaAST from "effect/SchemaAST"
import type * as Types from "effect/Types"

// ---------------------------------------------------------------------------------------------
// Models
// ---------------------------------------------------------------------------------------------

export const FieldTypeId: unique symbol = Symbol.for("effect-vmbus/BinarySchema/Field")
export type FieldTypeId = typeof FieldTypeId

export const StructTypeId: unique symbol = Symbol.for("effect-vmbus/BinarySchema/Struct")
export type StructTypeId = typeof StructTypeId

export interface Field<out A> {
  readonly [FieldTypeId]: { readonly _A: (_: never) => A }
  readonly _tag: "UInt" | "U64" | "Guid" | "Bytes" | "Utf16" | "Reserved" | "Array"
  /** Human-readable kind, used in error messages: `u16`, `bytes(16)`, `utf16(512)`, … */
  readonly label: string
  /** Encoded size in bytes, `undefined` when it depends on the value (arrays). */
  readonly size: number | undefined
}

export interface UInt extends Field<number> {
  readonly _tag: "UInt"
  readonly size: 1 | 2 | 4
  /** The largest value the field holds. */
  readonly max: number
}

export interface U64 extends Field<bigint> {
  readonly _tag: "U64"
  readonly size: 8
}

export interface Guid extends Field<string> {
  readonly _tag: "Guid"
  readonly size: 16
}

export interface Bytes extends Field<Uint8Array> {
  readonly _tag: "Bytes"
  readonly size: number
}

export interface Utf16 extends Field<string> {
  readonly _tag: "Utf16"
  readonly size: number
  /** Whether the encoded string must end with a NUL within the field. */
  readonly nulTerminated: boolean
  /** Longest string (in UTF-16 code units) that can be encoded. */
  readonly maxLength: number
}

export interface Reserved extends Field<never> {
  readonly _tag: "Reserved"
  readonly size: number
}

export interface ArrayField<C extends string, S extends Struct<any>> extends Field<ReadonlyArray<S["Type"]>> {
  readonly _tag: "Array"
  readonly size: undefined
  /** The name of the field that holds the element count. */
  readonly countField: C
  /** The struct of each element. */
  readonly element: S
  /** The most elements accepted when decoding (no limit when undefined). */
  readonly maxLength: number | undefined
}

export type AnyField = UInt | U64 | Guid | Bytes | Utf16 | Reserved | ArrayField<string, Struct<any>>

export type Fields = { readonly [name: string]: Field<any> | Struct<any> }

type CountKeys<F extends Fields> = { [K in keyof F]: F[K] extends ArrayField<infer C, any> ? C : never }[keyof F]

type ReservedKeys<F extends Fields> = { [K in keyof F]: F[K] extends Reserved ? K : never }[keyof F]

export type FieldType<X> = X extends Struct<infer G> ? StructType<G> : X extends Field<infer A> ? A : never

export type StructType<F extends Fields> = 0 extends (1 & F) ? any : Types.Simplify<
  { readonly [K in Exclude<keyof F, CountKeys<F> | ReservedKeys<F>>]: FieldType<F[K]> }
>

export interface StructOptions {
  /** The name used in error messages. */
  readonly identifier?: string
  /** What decoding does with bytes after the struct: `reject` (default) or `ignore`. */
  readonly trailingBytes?: "reject" | "ignore"
}

export interface Struct<F extends Fields> extends Schema.SchemaClass<StructType<F>, Uint8Array> {
  readonly [StructTypeId]: Layout
  /** The field descriptions, in wire order. */
  readonly fields: F
  /** The struct's name, used in error messages. */
  readonly identifier: string
  /** The schema of the decoded value alone (no byte codec). */
  readonly typeSchema: Schema.Schema<StructType<F>>
  /** The encoded size in bytes; undefined when it depends on the value (arrays). */
  readonly fixedSize: number | undefined
  /** Byte offset of each fixed-position field. */
  readonly offsets: Readonly<Record<string, number>>
}

// ---------------------------------------------------------------------------------------------
// Failures (internal only)
// ---------------------------------------------------------------------------------------------

class Failure {
  readonly path: Array<string | number> = []
  constructor(readonly message: string) {}
}

const fail = (message: string): never => {
  throw new Failure(message)
}

const within = (e: unknown, segment: string | number): unknown => {
  if (e instanceof Failure) e.path.unshift(segment)
  return e
}

const formatPath = (identifier: string, path: ReadonlyArray<string | number>): string => {
  let out = identifier
  for (const segment of path) out += typeof segment === "number" ? `[${segment}]` : `.${segment}`
  return out
}

const describe = (value: unknown): string => {
  if (typeof value === "bigint") return `${value}n`
  if (typeof value === "string") return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value)
  if (value instanceof Uint8Array) return `Uint8Array(${value.length})`
  if (Array.isArray(value)) return `array(${value.length})`
  return String(value)
}

// ---------------------------------------------------------------------------------------------
// Field constructors
// ---------------------------------------------------------------------------------------------

const fieldMarker = { _A: (_: never) => _ }

const makeUInt = (size: 1 | 2 | 4): UInt => ({
  [FieldTypeId]: fieldMarker,
  _tag: "UInt",
  label: `u${size * 8}`,
  size,
  max: size === 4 ? 0xffff_ffff : size === 2 ? 0xffff : 0xff
})

export const u8: UInt = makeUInt(1)
export const u16: UInt = makeUInt(2)
export const u32: UInt = makeUInt(4)
export const u64: U64 = { [FieldTypeId]: fieldMarker, _tag: "U64", label: "u64", size: 8 }
export const guid: Guid = { [FieldTypeId]: fieldMarker, _tag: "Guid", label: "guid", size: 16 }

const checkSize = (kind: string, n: number): void => {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`BinarySchema.${kind}: invalid size ${n}`)
}

export const bytes = (size: number): Bytes => {
  checkSize("bytes", size)
  return { [FieldTypeId]: fieldMarker, _tag: "Bytes", label: `bytes(${size})`, size }
}

export const utf16 = (size: number, options?: { readonly nulTerminated?: boolean }): Utf16 => {
  checkSize("utf16", size)
  if (size % 2 !== 0) throw new RangeError(`BinarySchema.utf16: size ${size} is not a whole number of code units`)
  const nulTerminated = options?.nulTerminated ?? true
  const maxLength = nulTerminated ? Math.max(0, size / 2 - 1) : size / 2
  if (nulTerminated && size === 0) throw new RangeError("BinarySchema.utf16: a NUL-terminated field needs 2 bytes")
  return { [FieldTypeId]: fieldMarker, _tag: "Utf16", label: `utf16(${size})`, size, nulTerminated, maxLength }
}

export const reserved = (size: number): Reserved => {
  checkSize("reserved", size)
  return { [FieldTypeId]: fieldMarker, _tag: "Reserved", label: `reserved(${size})`, size }
}

export const array = <const C extends string, S extends Struct<any>>(
  countField: C,
  element: S,
  options?: { readonly maxLength?: number }
): ArrayField<C, S> => {
  if (options?.maxLength !== undefined) checkSize("array maxLength", options.maxLength)
  return {
    [FieldTypeId]: fieldMarker,
    _tag: "Array",
    label: `array(${countField}, ${element.identifier})`,
    size: undefined,
    countField,
    element,
    maxLength: options?.maxLength
  }
}

export const isStruct = (u: unknown): u is Struct<Fields> =>
  typeof u === "function" && StructTypeId in u

// ---------------------------------------------------------------------------------------------
// Compiled layout
// ---------------------------------------------------------------------------------------------

interface Reader {
  readonly view: DataView
  readonly bytes: Uint8Array
  offset: number
}

export interface Layout {
  readonly identifier: string
  readonly fixedSize: number | undefined
  readonly ignoreTrailing: boolean
  readonly offsets: Readonly<Record<string, number>>
  readonly lastField: string | undefined
  /** Reads a value at `r.offset` and advances it. Throws Failure. */
  readonly read: (r: Reader) => Record<string, unknown>
  /** Validates the value's shape enough to size it; returns its encoded size. Throws Failure. */
  readonly measure: (value: unknown) => number
  /** Writes a measured value at `offset`; returns the end offset. Throws Failure. */
  readonly write: (view: DataView, target: Uint8Array, offset: number, value: unknown) => number
}

type Step =
  | { readonly _tag: "Value"; readonly name: string; readonly field: AnyField }
  | { readonly _tag: "Count"; readonly name: string; readonly field: UInt; readonly arrayName: string }
  | { readonly _tag: "Nested"; readonly name: string; readonly layout: Layout }

const GUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/
const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"))

const need = (r: Reader, n: number): void => {
  if (r.offset + n > r.bytes.length) {
    fail(`truncated: needs ${n} bytes at offset ${r.offset}, ${Math.max(0, r.bytes.length - r.offset)} available`)
  }
}

const readGuid = (b: Uint8Array, o: number): string =>
  HEX[b[o + 3]!]! + HEX[b[o + 2]!]! + HEX[b[o + 1]!]! + HEX[b[o]!]! + "-" +
  HEX[b[o + 5]!]! + HEX[b[o + 4]!]! + "-" + HEX[b[o + 7]!]! + HEX[b[o + 6]!]! + "-" +
  HEX[b[o + 8]!]! + HEX[b[o + 9]!]! + "-" +
  HEX[b[o + 10]!]! + HEX[b[o + 11]!]! + HEX[b[o + 12]!]! + HEX[b[o + 13]!]! + HEX[b[o + 14]!]! + HEX[b[o + 15]!]!

// Byte i of the Windows layout comes from the two hex digits at GUID_TEXT_POS[i] of the text form.
const GUID_TEXT_POS = [6, 4, 2, 0, 11, 9, 16, 14, 19, 21, 24, 26, 28, 30, 32, 34]

const writeGuid = (target: Uint8Array, o: number, text: string): void => {
  for (let i = 0; i < 16; i++) target[o + i] = parseInt(text.slice(GUID_TEXT_POS[i]!, GUID_TEXT_POS[i]! + 2), 16)
}

const readUtf16 = (view: DataView, o: number, size: number): string => {
  const units = size >> 1
  let out = ""
  const chunk: Array<number> = []
  for (let i = 0; i < units; i++) {
    const unit = view.getUint16(o + 2 * i, true)
    if (unit === 0) break
    chunk.push(unit)
    if (chunk.length === 4096) {
      out += String.fromCharCode(...chunk)
      chunk.length = 0
    }
  }
  return chunk.length === 0 ? out : out + String.fromCharCode(...chunk)
}

const readField = (r: Reader, field: AnyField, counts: Record<string, number>): unknown => {
  const { bytes: b, view } = r
  switch (field._tag) {
    case "UInt": {
      need(r, field.size)
      const o = r.offset
      r.offset += field.size
      return field.size === 1 ? b[o]! : field.size === 2 ? view.getUint16(o, true) : view.getUint32(o, true)
    }
    case "U64": {
      need(r, 8)
      const value = view.getBigUint64(r.offset, true)
      r.offset += 8
      return value
    }
    case "Guid": {
      need(r, 16)
      const value = readGuid(b, r.offset)
      r.offset += 16
      return value
    }
    case "Bytes": {
      need(r, field.size)
      const value = b.slice(r.offset, r.offset + field.size)
      r.offset += field.size
      return value
    }
    case "Utf16": {
      need(r, field.size)
      const value = readUtf16(view, r.offset, field.size)
      r.offset += field.size
      return value
    }
    case "Reserved": {
      need(r, field.size)
      r.offset += field.size
      return undefined
    }
    case "Array": {
      const count = counts[field.countField]!
      if (field.maxLength !== undefined && count > field.maxLength) {
        fail(`count ${count} (from ${field.countField}) exceeds the maximum of ${field.maxLength}`)
      }
      const layout = field.element[StructTypeId]
      const available = b.length - r.offset
      if (layout.fixedSize !== undefined && count * layout.fixedSize > available) {
        fail(
          `count ${count} (from ${field.countField}) needs ${
            count * layout.fixedSize
          } bytes at offset ${r.offset}, ${available} available`
        )
      }
      const out = new Array(count)
      for (let i = 0; i < count; i++) {
        try {
          out[i] = layout.read(r)
        } catch (e) {
          throw within(e, i)
        }
      }
      return out
    }
  }
}

const checkUInt = (field: UInt, value: unknown): number => {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value > field.max) {
    fail(`expected an integer in [0, ${field.max}] (${field.label}), got ${describe(value)}`)
  }
  return value as number
}

const U64_MAX = 0xffff_ffff_ffff_ffffn

const writeField = (view: DataView, t: Uint8Array, o: number, field: AnyField, value: unknown): number => {
  switch (field._tag) {
    case "UInt": {
      const v = checkUInt(field, value)
      if (field.size === 1) t[o] = v
      else if (field.size === 2) view.setUint16(o, v, true)
      else view.setUint32(o, v, true)
      return o + field.size
    }
    case "U64": {
      if (typeof value !== "bigint" || value < 0n || value > U64_MAX) {
        fail(`expected a bigint in [0, 2^64 - 1] (u64), got ${describe(value)}`)
      }
      view.setBigUint64(o, value as bigint, true)
      return o + 8
    }
    case "Guid": {
      if (typeof value !== "string" || !GUID_PATTERN.test(value)) {
        fail(`expected a lowercase GUID xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx, got ${describe(value)}`)
      }
      writeGuid(t, o, value as string)
      return o + 16
    }
    case "Bytes": {
      if (!(value instanceof Uint8Array) || value.length !== field.size) {
        fail(`expected a Uint8Array of ${field.size} bytes, got ${describe(value)}`)
      }
      t.set(value as Uint8Array, o)
      return o + field.size
    }
    case "Utf16": {
      if (typeof value !== "string") return fail(`expected a string, got ${describe(value)}`)
      if (value.length > field.maxLength) {
        fail(
          `string of ${value.length} UTF-16 code units does not fit ${field.label}: at most ${field.maxLength}${
            field.nulTerminated ? " plus the NUL terminator" : ""
          }`
        )
      }
      for (let i = 0; i < value.length; i++) {
        const unit = value.charCodeAt(i)
        if (unit === 0) fail(`string contains U+0000 at index ${i}; ${field.label} is NUL-terminated on the wire`)
        view.setUint16(o + 2 * i, unit, true)
      }
      t.fill(0, o + 2 * value.length, o + field.size)
      return o + field.size
    }
    case "Reserved": {
      t.fill(0, o, o + field.size)
      return o + field.size
    }
    case "Array": {
      const layout = field.element[StructTypeId]
      const items = value as ReadonlyArray<unknown>
      for (let i = 0; i < items.length; i++) {
        try {
          o = layout.write(view, t, o, items[i])
        } catch (e) {
          throw within(e, i)
        }
      }
      return o
    }
  }
}

const expectObject = (value: unknown): Record<string, unknown> => {
  if (typeof value !== "object" || value === null) fail(`expected an object, got ${describe(value)}`)
  return value as Record<string, unknown>
}

const INTEGER_LIKE = /^(0|[1-9][0-9]*)$/

export const compile = (fields: Fields, options?: StructOptions): Layout => {
  const identifier = options?.identifier ?? "struct"
  const names = Object.keys(fields)
  const countOf = new Map<string, string>() // count field -> array field
  names.forEach((name, index) => {
    if (INTEGER_LIKE.test(name)) {
      throw new TypeError(`BinarySchema.struct(${identifier}): field name "${name}" would be reordered by JavaScript`)
    }
    const field = fields[name]!
    if (isStruct(field) || (field as AnyField)._tag !== "Array") return
    const countField = (field as ArrayField<string, Struct<any>>).countField
    const count = fields[countField]
    const countIndex = names.indexOf(countField)
    if (countIndex < 0 || countIndex > index) {
      throw new TypeError(`BinarySchema.struct(${identifier}): count field "${countField}" must precede "${name}"`)
    }
    if (count === undefined || isStruct(count) || (count as AnyField)._tag !== "UInt") {
      throw new TypeError(`BinarySchema.struct(${identifier}): count field "${countField}" must be u8, u16 or u32`)
    }
    if (countOf.has(countField)) {
      throw new TypeError(`BinarySchema.struct(${identifier}): count field "${countField}" is used twice`)
    }
    countOf.set(countField, name)
  })

  const steps: Array<Step> = []
  const offsets: Record<string, number> = {}
  let fixed: number | undefined = 0
  for (const name of names) {
    const field = fields[name]!
    if (fixed !== undefined) offsets[name] = fixed
    if (isStruct(field)) {
      const layout = field[StructTypeId]
      steps.push({ _tag: "Nested", name, layout })
      if (fixed !== undefined) {
        for (const [inner, offset] of Object.entries(layout.offsets)) offsets[`${name}.${inner}`] = fixed + offset
      }
      fixed = fixed === undefined || layout.fixedSize === undefined ? undefined : fixed + layout.fixedSize
      continue
    }
    const f = field as AnyField
    const arrayName = countOf.get(name)
    steps.push(arrayName === undefined ? { _tag: "Value", name, field: f } : {
      _tag: "Count",
      name,
      field: f as UInt,
      arrayName
    })
    fixed = fixed === undefined || f.size === undefined ? undefined : fixed + f.size
  }

  const hasArrays = countOf.size > 0
  const fixedSize = fixed
  const ignoreTrailing = options?.trailingBytes === "ignore"

  const read = (r: Reader): Record<string, unknown> => {
    const out: Record<string, unknown> = {}
    const counts: Record<string, number> = hasArrays ? {} : EMPTY
    for (let i = 0; i < steps.length; i++) {
      const step = steps[i]!
      try {
        switch (step._tag) {
          case "Value": {
            const value = readField(r, step.field, counts)
            if (step.field._tag !== "Reserved") out[step.name] = value
            break
          }
          case "Count": {
            counts[step.name] = readField(r, step.field, counts) as number
            break
          }
          case "Nested": {
            out[step.name] = step.layout.read(r)
            break
          }
        }
      } catch (e) {
        throw within(e, step.name)
      }
    }
    return out
  }

  const measure = (value: unknown): number => {
    const v = expectObject(value)
    let size = 0
    for (let i = 0; i < steps.length; i++) {
      const step = steps[i]!
      try {
        if (step._tag === "Nested") {
          size += step.layout.fixedSize ?? step.layout.measure(v[step.name])
        } else if (step._tag === "Count") {
          size += step.field.size
        } else if (step.field._tag === "Array") {
          const items = v[step.name]
          if (!Array.isArray(items)) fail(`expected an array, got ${describe(items)}`)
          const max = Math.min(
            step.field.maxLength ?? Number.MAX_SAFE_INTEGER,
            (fields[step.field.countField] as UInt).max
          )
          if ((items as Array<unknown>).length > max) {
            fail(`array of ${(items as Array<unknown>).length} elements exceeds the maximum of ${max}`)
          }
          const element = step.field.element[StructTypeId]
          if (element.fixedSize !== undefined) {
            size += element.fixedSize * (items as Array<unknown>).length
          } else {
            for (let j = 0; j < (items as Array<unknown>).length; j++) {
              try {
                size += element.measure((items as Array<unknown>)[j])
              } catch (e) {
                throw within(e, j)
              }
            }
          }
        } else {
          size += step.field.size!
        }
      } catch (e) {
        throw within(e, step.name)
      }
    }
    return size
  }

  const write = (view: DataView, target: Uint8Array, offset: number, value: unknown): number => {
    const v = expectObject(value)
    let o = offset
    for (let i = 0; i < steps.length; i++) {
      const step = steps[i]!
      try {
        switch (step._tag) {
          case "Value": {
            o = writeField(view, target, o, step.field, v[step.name])
            break
          }
          case "Count": {
            const items = v[step.arrayName]
            o = writeField(view, target, o, step.field, Array.isArray(items) ? items.length : items)
            break
          }
          case "Nested": {
            o = step.layout.write(view, target, o, v[step.name])
            break
          }
        }
      } catch (e) {
        throw within(e, step.name)
      }
    }
    return o
  }

  return {
    identifier,
    fixedSize,
    ignoreTrailing,
    offsets,
    lastField: names[names.length - 1],
    read,
    measure: fixedSize === undefined ? measure : (value) => {
      expectObject(value)
      return fixedSize
    },
    write
  }
}

const EMPTY: Record<string, number> = {}

// ---------------------------------------------------------------------------------------------
// Typed schemas
// ---------------------------------------------------------------------------------------------

const uintSchema = (field: UInt): Schema.Schema<number> =>
  Schema.Number.pipe(Schema.int(), Schema.between(0, field.max)).annotations({ identifier: field.label })

const U64Schema: Schema.Schema<bigint> = Schema.BigIntFromSelf.pipe(Schema.betweenBigInt(0n, U64_MAX))
  .annotations({ identifier: "u64" })

const GuidSchema: Schema.Schema<string> = Schema.String.pipe(Schema.pattern(GUID_PATTERN)).annotations({
  identifier: "Guid",
  description: "a GUID in canonical lowercase form",
  arbitrary: () => (fc) => fc.uint8Array({ minLength: 16, maxLength: 16 }).map((b) => readGuid(b, 0))
})

const bytesSchema = (field: Bytes): Schema.Schema<Uint8Array> =>
  Schema.Uint8ArrayFromSelf.pipe(
    Schema.filter((b) => b.length === field.size || `expected ${field.size} bytes, got ${b.length}`)
  ).annotations({
    identifier: field.label,
    arbitrary: () => (fc) => fc.uint8Array({ minLength: field.size, maxLength: field.size })
  })

const utf16Schema = (field: Utf16): Schema.Schema<string> =>
  Schema.String.pipe(
    Schema.maxLength(field.maxLength),
    Schema.filter((s) => !s.includes("\u0000") || "must not contain U+0000")
  ).annotations({
    identifier: field.label,
    arbitrary: () => (fc) =>
      fc.array(fc.integer({ min: 1, max: 0xffff }), { maxLength: field.maxLength }).map((units) =>
        String.fromCharCode(...units)
      )
  })

const fieldSchema = (field: AnyField | Struct<any>, fields: Fields): Schema.Schema.AnyNoContext => {
  if (isStruct(field)) return field.typeSchema
  const f = field as AnyField
  switch (f._tag) {
    case "UInt":
      return uintSchema(f)
    case "U64":
      return U64Schema
    case "Guid":
      return GuidSchema
    case "Bytes":
      return bytesSchema(f)
    case "Utf16":
      return utf16Schema(f)
    case "Reserved":
      return Schema.Unknown // never reached: reserved fields are not part of the type
    case "Array": {
      const max = Math.min(f.maxLength ?? Number.MAX_SAFE_INTEGER, (fields[f.countField] as UInt).max)
      return Schema.Array(f.element.typeSchema).pipe(Schema.maxItems(max)) as Schema.Schema.AnyNoContext
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Running a layout
// ---------------------------------------------------------------------------------------------

const failureMessage = (layout: Layout, e: Failure): string => `${formatPath(layout.identifier, e.path)}: ${e.message}`

const rethrowUnlessFailure = (e: unknown): Failure => {
  if (e instanceof Failure) return e
  throw e
}

const runDecode = (
  layout: Layout,
  input: Uint8Array,
  offset: number,
  prefix: boolean
): Either.Either<{ readonly value: Record<string, unknown>; readonly bytesRead: number }, string> => {
  const r: Reader = { view: new DataView(input.buffer, input.byteOffset, input.byteLength), bytes: input, offset }
  try {
    const value = layout.read(r)
    const bytesRead = r.offset - offset
    if (!prefix && !layout.ignoreTrailing && r.offset !== input.length) {
      const extra = input.length - r.offset
      return Either.left(
        `${layout.identifier}: ${extra} unexpected trailing byte${extra === 1 ? "" : "s"} at offset ${r.offset}${
          layout.lastField === undefined ? "" : ` after field "${layout.lastField}"`
        } (${layout.fixedSize === undefined ? "decoded" : "struct is"} ${bytesRead} bytes, input is ${input.length})`
      )
    }
    return Either.right({ value, bytesRead })
  } catch (e) {
    return Either.left(failureMessage(layout, rethrowUnlessFailure(e)))
  }
}

const runEncode = (layout: Layout, value: unknown): Either.Either<Uint8Array, string> => {
  try {
    const size = layout.measure(value)
    const out = new Uint8Array(size)
    layout.write(new DataView(out.buffer), out, 0, value)
    return Either.right(out)
  } catch (e) {
    return Either.left(failureMessage(layout, rethrowUnlessFailure(e)))
  }
}

const issue = (ast: SchemaAST.AST, actual: unknown, message: string): ParseResult.ParseIssue =>
  new ParseResult.Type(ast, actual, message)

const toParseError = (ast: SchemaAST.AST, actual: unknown, message: string): ParseResult.ParseError =>
  ParseResult.parseError(issue(ast, actual, message))

// ---------------------------------------------------------------------------------------------
// struct
// ---------------------------------------------------------------------------------------------

export const struct = <const F extends Fields>(fields: F, options?: StructOptions): Struct<F> => {
  const layout = compile(fields, options)
  const schemas: Record<string, Schema.Schema.AnyNoContext> = {}
  for (const [name, field] of Object.entries(fields)) {
    if (!isStruct(field) && (field as AnyField)._tag === "Reserved") continue
    if (!isStruct(field) && (field as AnyField)._tag === "UInt" && isCountField(fields, name)) continue
    schemas[name] = fieldSchema(field as AnyField | Struct<any>, fields)
  }
  const typeSchema = Schema.Struct(schemas).annotations({ identifier: layout.identifier }) as unknown as Schema.Schema<
    StructType<F>
  >
  const transformation = Schema.transformOrFail(Schema.Uint8ArrayFromSelf, typeSchema, {
    strict: true,
    decode: (input, _, ast) =>
      Either.match(runDecode(layout, input, 0, false), {
        onLeft: (message) => ParseResult.fail(issue(ast, input, message)),
        onRight: ({ value }) => ParseResult.succeed(value as StructType<F>)
      }),
    encode: (value, _, ast) =>
      Either.match(runEncode(layout, value), {
        onLeft: (message) => ParseResult.fail(issue(ast, value, message)),
        onRight: ParseResult.succeed
      })
  })
  const statics = {
    [StructTypeId]: layout,
    fields,
    identifier: layout.identifier,
    typeSchema,
    fixedSize: layout.fixedSize,
    offsets: layout.offsets
  }
  return Object.assign(Schema.make<StructType<F>, Uint8Array, never>(transformation.ast), statics) as any
}

const isCountField = (fields: Fields, name: string): boolean =>
  Object.values(fields).some((f) => !isStruct(f) && (f as AnyField)._tag === "Array" && (f as any).countField === name)

// ---------------------------------------------------------------------------------------------
// Hot-path helpers
// ---------------------------------------------------------------------------------------------

export const decodeEither =
  <F extends Fields>(self: Struct<F>) => (input: Uint8Array): Either.Either<StructType<F>, ParseResult.ParseError> => {
    const result = runDecode(self[StructTypeId], input, 0, false)
    return Either.isRight(result)
      ? Either.right(result.right.value as StructType<F>)
      : Either.left(toParseError(self.ast, input, result.left))
  }

export const decodePrefix = <F extends Fields>(self: Struct<F>) =>
(
  input: Uint8Array,
  offset: number = 0
): Either.Either<{ readonly value: StructType<F>; readonly bytesRead: number }, ParseResult.ParseError> => {
  if (!Number.isSafeInteger(offset) || offset < 0 || offset > input.length) {
    return Either.left(
      toParseError(self.ast, input, `${self.identifier}: offset ${offset} is outside the ${input.length}-byte input`)
    )
  }
  const result = runDecode(self[StructTypeId], input, offset, true)
  return Either.isRight(result)
    ? Either.right(result.right as { readonly value: StructType<F>; readonly bytesRead: number })
    : Either.left(toParseError(self.ast, input, result.left))
}

export const encodeEither =
  <F extends Fields>(self: Struct<F>) => (value: StructType<F>): Either.Either<Uint8Array, ParseResult.ParseError> => {
    const result = runEncode(self[StructTypeId], value)
    return Either.isRight(result) ? Either.right(result.right) : Either.left(toParseError(self.ast, value, result.left))
  }

export const encodeInto = <F extends Fields>(self: Struct<F>) =>
(
  value: StructType<F>,
  target: Uint8Array,
  offset: number = 0
): Either.Either<number, ParseResult.ParseError> => {
  const layout = self[StructTypeId]
  const result = runEncode(layout, value)
  if (Either.isLeft(result)) return Either.left(toParseError(self.ast, value, result.left))
  const encoded = result.right
  if (!Number.isSafeInteger(offset) || offset < 0 || offset + encoded.length > target.length) {
    return Either.left(
      toParseError(
        self.ast,
        value,
        `${layout.identifier}: ${encoded.length} bytes do not fit at offset ${offset} of a ${target.length}-byte buffer`
      )
    )
  }
  target.set(encoded, offset)
  return Either.right(encoded.length)
}

export const decodeSync = <F extends Fields>(self: Struct<F>) => {
  const decode = decodeEither(self)
  return (input: Uint8Array): StructType<F> => Either.getOrThrowWith(decode(input), (e) => e)
}

export const encodeSync = <F extends Fields>(self: Struct<F>) => {
  const encode = encodeEither(self)
  return (value: StructType<F>): Uint8Array => Either.getOrThrowWith(encode(value), (e) => e)
}

// BinarySchema: round trips for arbitrary values (Arbitrary.make of the typed side), the GUID wire
// layout, truncated / oversized / inconsistent inputs, out-of-range encodes (messages name the field
// path), utf16 terminator rules, reserved fields, arrays, nested structs, decodePrefix / encodeInto,
// and the Schema integration. Nothing here may throw except the *Sync helpers and bad definitions.
import { describe, it } from "@effect/vitest"
import { assertInclude, assertTrue, deepStrictEqual, strictEqual, throws } from "@effect/vitest/utils"
import { Arbitrary, Either, FastCheck, ParseResult, Schema } from "effect"
import * as BinarySchema from "../src/BinarySchema.js"

const { u16, u32, u64, u8 } = BinarySchema

const hex = (text: string): Uint8Array => Uint8Array.from(text.trim().split(/\s+/).map((b) => parseInt(b, 16)))

const right = <A>(either: Either.Either<A, ParseResult.ParseError>): A => {
  if (Either.isLeft(either)) throw new Error(`unexpected failure: ${either.left.message}`)
  return either.right
}

/** Asserts a ParseError and returns its message. */
const leftMessage = <A>(either: Either.Either<A, ParseResult.ParseError>): string => {
  assertTrue(Either.isLeft(either), "expected a failure")
  assertTrue(ParseResult.isParseError(either.left))
  return either.left.message
}

const Point = BinarySchema.struct({ x: u16, y: u16 }, { identifier: "point" })

const Everything = BinarySchema.struct({
  a: u8,
  b: u16,
  c: u32,
  d: u64,
  id: BinarySchema.guid,
  raw: BinarySchema.bytes(5),
  name: BinarySchema.utf16(16),
  tag: BinarySchema.utf16(8, { nulTerminated: false }),
  pad: BinarySchema.padding(3),
  origin: Point
}, { identifier: "everything" })

const Polygon = BinarySchema.struct({
  kind: u8,
  count: u16,
  reserved: BinarySchema.reserved(1),
  points: BinarySchema.array("count", Point, { maxLength: 50 }),
  tail: u32
}, { identifier: "polygon" })

const Nested = BinarySchema.struct({ first: Polygon, second: Polygon }, { identifier: "nested" })

describe("BinarySchema", () => {
  describe("round trips", () => {
    it.prop("fixed struct with every field kind", [Arbitrary.make(Everything.typeSchema)], ([value]) => {
      const bytes = BinarySchema.encodeSync(Everything)(value)
      strictEqual(bytes.length, Everything.fixedSize)
      deepStrictEqual(BinarySchema.decodeSync(Everything)(bytes), value)
    })

    it.prop("structs with arrays, nested", { value: Nested.typeSchema }, ({ value }) => {
      const bytes = BinarySchema.encodeSync(Nested)(value)
      strictEqual(
        bytes.length,
        2 * (1 + 2 + 1 + 4) + 4 * (value.first.points.length + value.second.points.length)
      )
      deepStrictEqual(BinarySchema.decodeSync(Nested)(bytes), value)
    }, { fastCheck: { numRuns: 200 } })

    it.prop("the Schema agrees with the sync helpers", { value: Everything }, ({ value }) => {
      const viaSchema = Schema.encodeSync(Everything)(value)
      deepStrictEqual(viaSchema, BinarySchema.encodeSync(Everything)(value))
      deepStrictEqual(Schema.decodeSync(Everything)(viaSchema), value)
    })

    it("the typed value omits count and reserved fields", () => {
      const value: typeof Polygon.Type = { kind: 1, points: [{ x: 1, y: 2 }], tail: 7 }
      const bytes = BinarySchema.encodeSync(Polygon)(value)
      deepStrictEqual(bytes, hex("01 01 00 00 01 00 02 00 07 00 00 00"))
      deepStrictEqual(Object.keys(BinarySchema.decodeSync(Polygon)(bytes)), ["kind", "points", "tail"])
    })
  })

  describe("layout", () => {
    it("little-endian integers", () => {
      const S = BinarySchema.struct({ a: u8, b: u16, c: u32, d: u64 })
      deepStrictEqual(
        BinarySchema.encodeSync(S)({ a: 0x12, b: 0x3456, c: 0x789abcde, d: 0x0102030405060708n }),
        hex("12 56 34 de bc 9a 78 08 07 06 05 04 03 02 01")
      )
      deepStrictEqual(
        BinarySchema.decodeSync(S)(hex("ff ff ff ff ff ff ff ff ff ff ff ff ff ff ff")),
        { a: 0xff, b: 0xffff, c: 0xffff_ffff, d: 0xffff_ffff_ffff_ffffn }
      )
    })

    it("GUID uses the Windows mixed-endian layout (heartbeat service GUID)", () => {
      const G = BinarySchema.struct({ id: BinarySchema.guid }, { identifier: "g" })
      const bytes = hex("39 4f 16 57 15 91 78 4e ab 55 38 2f 3b d5 42 2d")
      deepStrictEqual(BinarySchema.encodeSync(G)({ id: "57164f39-9115-4e78-ab55-382f3bd5422d" }), bytes)
      deepStrictEqual(BinarySchema.decodeSync(G)(bytes), { id: "57164f39-9115-4e78-ab55-382f3bd5422d" })
    })

    it("fixedSize and offsets", () => {
      strictEqual(Everything.fixedSize, 1 + 2 + 4 + 8 + 16 + 5 + 16 + 8 + 3 + 4)
      deepStrictEqual(Everything.offsets, {
        a: 0,
        b: 1,
        c: 3,
        d: 7,
        id: 15,
        raw: 31,
        name: 36,
        tag: 52,
        pad: 60,
        origin: 63,
        "origin.x": 63,
        "origin.y": 65
      })
      strictEqual(Polygon.fixedSize, undefined)
      deepStrictEqual(Polygon.offsets, { kind: 0, count: 1, reserved: 3, points: 4 })
    })

    it("reserved bytes are written as zero and ignored on decode", () => {
      const S = BinarySchema.struct({ a: u8, r: BinarySchema.reserved(3), b: u8 })
      deepStrictEqual(BinarySchema.encodeSync(S)({ a: 1, b: 2 }), hex("01 00 00 00 02"))
      deepStrictEqual(BinarySchema.decodeSync(S)(hex("01 aa bb cc 02")), { a: 1, b: 2 })
    })

    it("bytes fields are copied on decode", () => {
      const S = BinarySchema.struct({ raw: BinarySchema.bytes(2) })
      const input = hex("01 02")
      const { raw } = BinarySchema.decodeSync(S)(input)
      input[0] = 9
      deepStrictEqual(raw, hex("01 02"))
    })
  })

  describe("utf16", () => {
    const Term = BinarySchema.struct({ s: BinarySchema.utf16(8) }, { identifier: "term" })
    const Full = BinarySchema.struct({ s: BinarySchema.utf16(8, { nulTerminated: false }) }, { identifier: "full" })

    it("is UTF-16LE, NUL-padded", () => {
      deepStrictEqual(BinarySchema.encodeSync(Term)({ s: "hé" }), hex("68 00 e9 00 00 00 00 00"))
      deepStrictEqual(BinarySchema.encodeSync(Term)({ s: "😀" }), hex("3d d8 00 de 00 00 00 00"))
      deepStrictEqual(BinarySchema.decodeSync(Term)(hex("3d d8 00 de 00 00 00 00")), { s: "😀" })
    })

    it("decoding stops at the first NUL", () => {
      deepStrictEqual(BinarySchema.decodeSync(Term)(hex("41 00 00 00 42 00 43 00")), { s: "A" })
      deepStrictEqual(BinarySchema.decodeSync(Full)(hex("41 00 42 00 43 00 44 00")), { s: "ABCD" })
    })

    it("a NUL-terminated field keeps room for the terminator", () => {
      right(BinarySchema.encodeEither(Term)({ s: "abc" }))
      assertInclude(
        leftMessage(BinarySchema.encodeEither(Term)({ s: "abcd" })),
        "term.s: string of 4 UTF-16 code units does not fit utf16(8): at most 3 plus the NUL terminator"
      )
      deepStrictEqual(BinarySchema.encodeSync(Full)({ s: "abcd" }), hex("61 00 62 00 63 00 64 00"))
      assertInclude(leftMessage(BinarySchema.encodeEither(Full)({ s: "abcde" })), "full.s:")
    })

    it("rejects embedded NUL", () => {
      assertInclude(leftMessage(BinarySchema.encodeEither(Term)({ s: "a\u0000b" })), "term.s: string contains U+0000")
    })
  })

  describe("malformed input", () => {
    it("every truncation of a fixed struct fails naming the field it cuts", () => {
      const bytes = BinarySchema.encodeSync(Everything)(FastCheck.sample(Arbitrary.make(Everything.typeSchema), 1)[0]!)
      const names = Object.keys(Everything.offsets).filter((name) => !name.includes("."))
      for (let length = 0; length < bytes.length; length++) {
        const message = leftMessage(BinarySchema.decodeEither(Everything)(bytes.subarray(0, length)))
        const field = names.filter((name) => Everything.offsets[name]! <= length).at(-1)!
        const expected = field === "origin" ? `everything.origin.${length < 65 ? "x" : "y"}:` : `everything.${field}:`
        assertInclude(message, expected)
        assertInclude(message, "truncated")
      }
    })

    it("oversized input is rejected by default, accepted with trailingBytes: \"ignore\"", () => {
      assertInclude(
        leftMessage(BinarySchema.decodeEither(Point)(hex("01 00 02 00 ff"))),
        "point: 1 unexpected trailing byte at offset 4 after field \"y\" (struct is 4 bytes, input is 5)"
      )
      const Lenient = BinarySchema.struct({ x: u16, y: u16 }, { trailingBytes: "ignore" })
      deepStrictEqual(BinarySchema.decodeSync(Lenient)(hex("01 00 02 00 ff")), { x: 1, y: 2 })
    })

    it("decodePrefix reads a header from a larger buffer", () => {
      const input = hex("aa 01 00 02 00 ff ff")
      deepStrictEqual(right(BinarySchema.decodePrefix(Point)(input, 1)), { value: { x: 1, y: 2 }, bytesRead: 4 })
      deepStrictEqual(right(BinarySchema.decodePrefix(Polygon)(hex("00 00 00 00 07 00 00 00 99"))), {
        value: { kind: 0, points: [], tail: 7 },
        bytesRead: 8
      })
      assertInclude(leftMessage(BinarySchema.decodePrefix(Point)(input, 5)), "point.y: truncated")
      assertInclude(leftMessage(BinarySchema.decodePrefix(Point)(input, 8)), "offset 8 is outside")
    })

    it("a count too large for the bytes names the array", () => {
      assertInclude(
        leftMessage(BinarySchema.decodeEither(Polygon)(hex("01 03 00 00 01 00 02 00 03 00 04 00"))),
        "polygon.points: count 3 (from count) needs 12 bytes at offset 4, 8 available"
      )
      assertInclude(
        leftMessage(BinarySchema.decodeEither(Nested)(hex("01 00 00 00 00 00 00 00 01 01 00 00"))),
        "nested.second.points: count 1"
      )
      assertInclude(
        leftMessage(BinarySchema.decodeEither(Polygon)(hex("01 33 00 00"))),
        "polygon.points: count 51 (from count) exceeds the maximum of 50"
      )
    })

    it("an element cut short names its index", () => {
      const S = BinarySchema.struct({
        n: u8,
        items: BinarySchema.array("n", BinarySchema.struct({ len: u8, data: BinarySchema.array("len", Point) }))
      }, { identifier: "s" })
      assertInclude(leftMessage(BinarySchema.decodeEither(S)(hex("02 00"))), "s.items[1].len: truncated")
      assertInclude(
        leftMessage(BinarySchema.decodeEither(S)(hex("02 00 01 01 00"))),
        "s.items[1].data: count 1 (from len) needs 4 bytes at offset 3, 2 available"
      )
    })

    it("the Schema rejects non-bytes and reports the field", () => {
      assertTrue(Either.isLeft(Schema.decodeUnknownEither(Point)([1, 2, 3, 4])))
      assertInclude(leftMessage(Schema.decodeUnknownEither(Point)(hex("01 00 02"))), "point.y: truncated")
    })
  })

  describe("encoding validation", () => {
    const S = BinarySchema.struct({ a: u8, b: u16, c: u32, d: u64, g: BinarySchema.guid, raw: BinarySchema.bytes(2) }, {
      identifier: "s"
    })
    const ok = { a: 1, b: 2, c: 3, d: 4n, g: "57164f39-9115-4e78-ab55-382f3bd5422d", raw: hex("00 00") }

    const cases: ReadonlyArray<readonly [string, Partial<typeof ok> | Record<string, unknown>, string]> = [
      ["u8 > 255", { a: 256 }, "s.a: expected an integer in [0, 255] (u8), got 256"],
      ["u16 > 65535", { b: 65536 }, "s.b: expected an integer in [0, 65535] (u16), got 65536"],
      ["negative", { b: -1 }, "s.b: expected an integer in [0, 65535] (u16), got -1"],
      ["non-integer", { c: 1.5 }, "s.c: expected an integer in [0, 4294967295] (u32), got 1.5"],
      ["u32 overflow", { c: 2 ** 32 }, "s.c:"],
      ["NaN", { c: NaN }, "s.c:"],
      ["u64 overflow", { d: 2n ** 64n }, "s.d: expected a bigint in [0, 2^64 - 1] (u64), got 18446744073709551616n"],
      ["negative u64", { d: -1n }, "s.d:"],
      ["u64 as number", { d: 1 }, "s.d:"],
      ["uppercase GUID", { g: "57164F39-9115-4E78-AB55-382F3BD5422D" }, "s.g: expected a lowercase GUID"],
      ["bytes length", { raw: hex("00") }, "s.raw: expected a Uint8Array of 2 bytes, got Uint8Array(1)"]
    ]

    for (const [name, patch, expected] of cases) {
      it(`${name} names the field`, () => {
        const value = { ...ok, ...patch } as typeof ok
        assertInclude(leftMessage(BinarySchema.encodeEither(S)(value)), expected)
        const viaSchema = Schema.encodeEither(S)(value)
        assertTrue(Either.isLeft(viaSchema))
        assertInclude(viaSchema.left.message, `["${/^s\.(\w+)/.exec(expected)![1]}"]`)
      })
    }

    it("nested and array paths", () => {
      assertInclude(
        leftMessage(BinarySchema.encodeEither(Nested)({
          first: { kind: 0, points: [], tail: 0 },
          second: { kind: 0, points: [{ x: 0, y: 0 }, { x: 0, y: 70000 }], tail: 0 }
        })),
        "nested.second.points[1].y: expected an integer in [0, 65535] (u16), got 70000"
      )
      assertInclude(
        leftMessage(BinarySchema.encodeEither(Polygon)({
          kind: 0,
          points: Array.from({ length: 51 }, () => ({ x: 0, y: 0 })),
          tail: 0
        })),
        "polygon.points: array of 51 elements exceeds the maximum of 50"
      )
    })

    it("encodeSync throws the ParseError", () => {
      throws(() => BinarySchema.encodeSync(Point)({ x: -1, y: 0 }), (e) => {
        assertTrue(ParseResult.isParseError(e))
        return undefined
      })
    })
  })

  describe("encodeInto", () => {
    it("writes at an offset and leaves the rest alone", () => {
      const target = hex("ee ee ee ee ee ee")
      strictEqual(right(BinarySchema.encodeInto(Point)({ x: 1, y: 2 }, target, 1)), 4)
      deepStrictEqual(target, hex("ee 01 00 02 00 ee"))
    })

    it("fails without writing when the value is invalid or does not fit", () => {
      const target = hex("ee ee ee ee")
      assertInclude(leftMessage(BinarySchema.encodeInto(Point)({ x: 1, y: 2 }, target, 1)), "do not fit at offset 1")
      assertInclude(leftMessage(BinarySchema.encodeInto(Point)({ x: 1, y: -2 }, target)), "point.y:")
      deepStrictEqual(target, hex("ee ee ee ee"))
    })
  })

  describe("definitions", () => {
    it("rejects bad definitions when the struct is defined", () => {
      throws(() => BinarySchema.struct({ points: BinarySchema.array("count", Point), count: u8 }))
      throws(() => BinarySchema.struct({ count: BinarySchema.guid, points: BinarySchema.array("count", Point) }))
      throws(() =>
        BinarySchema.struct({ n: u8, a: BinarySchema.array("n", Point), b: BinarySchema.array("n", Point) })
      )
      throws(() => BinarySchema.utf16(7))
      throws(() => BinarySchema.struct({ 0: u8 }))
    })

    it("isStruct", () => {
      assertTrue(BinarySchema.isStruct(Point))
      assertTrue(!BinarySchema.isStruct(u8))
      assertTrue(!BinarySchema.isStruct(Schema.String))
    })
  })
})

/**
 * Little-endian binary structs as Schemas. A struct built with {@link struct} is a
 * `Schema<Type, Uint8Array>`: its decoded side is a plain readonly object (a proper Schema, so
 * `Arbitrary.make` works), its encoded side is the exact wire bytes. Fields are laid out in
 * declaration order with no implicit alignment (like a C `__packed` struct).
 *
 * - `u8`, `u16`, `u32` decode to `number`; `u64` to `bigint`; all unsigned, little-endian.
 * - `guid` is 16 bytes in the Windows mixed-endian layout (first three groups little-endian) and
 *   decodes to the canonical lowercase `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` string.
 * - `bytes(n)` is a fixed `Uint8Array` (decoding copies), `utf16(n)` a fixed UTF-16LE string field.
 * - `reserved(n)` / `padding(n)` are written as zeros, skipped on decode, absent from the type.
 * - `array(countField, element)` takes its length from an earlier unsigned field; that count field
 *   is absent from the type and is written from the array's length.
 * - Another struct can be used as a field (nested struct).
 *
 * Failures are `ParseError`s whose message starts with the field path, e.g.
 * `icmsg_hdr.icverframe.minor: truncated: needs 2 bytes at offset 2, 1 available`.
 *
 * The Schema is convenient; the synchronous helpers ({@link decodeEither}, {@link decodePrefix},
 * {@link encodeEither}, {@link encodeInto}, {@link decodeSync}, {@link encodeSync}) skip the Schema
 * machinery and are meant for hot paths. Invalid struct definitions (a count field that does not
 * precede its array, an odd `utf16` size, …) throw when the struct is defined: they are programming
 * errors, not runtime failures.
 *
 * @since 0.1.0
 */
import type * as Either from "effect/Either"
import type * as ParseResult from "effect/ParseResult"
import * as internal from "./internal/binarySchema.js"

/**
 * Brands field descriptions (`u8`, `guid`, `bytes(n)`, …).
 *
 * @since 0.1.0
 * @category symbols
 */
export const FieldTypeId: typeof internal.FieldTypeId = internal.FieldTypeId

/**
 * @since 0.1.0
 * @category symbols
 */
export type FieldTypeId = typeof FieldTypeId

/**
 * Brands struct schemas made by `struct` (see `isStruct`).
 *
 * @since 0.1.0
 * @category symbols
 */
export const StructTypeId: typeof internal.StructTypeId = internal.StructTypeId

/**
 * @since 0.1.0
 * @category symbols
 */
export type StructTypeId = typeof StructTypeId

/**
 * A field kind whose decoded value is `A`. `size` is its encoded size in bytes (`undefined` for
 * arrays, whose size depends on the value).
 *
 * @since 0.1.0
 * @category models
 */
export interface Field<out A> extends internal.Field<A> {}

/**
 * An unsigned little-endian integer field of 1, 2 or 4 bytes (`u8`, `u16`, `u32`), decoded to a `number`.
 *
 * @since 0.1.0
 * @category models
 */
export interface UInt extends internal.UInt {}

/**
 * An unsigned little-endian 64-bit field (`u64`), decoded to a `bigint`.
 *
 * @since 0.1.0
 * @category models
 */
export interface U64 extends internal.U64 {}

/**
 * A 16-byte GUID field in the Windows mixed-endian layout (`guid`), decoded to a lowercase string.
 *
 * @since 0.1.0
 * @category models
 */
export interface Guid extends internal.Guid {}

/**
 * A fixed-size byte field (`bytes(n)`), decoded to a `Uint8Array`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Bytes extends internal.Bytes {}

/**
 * A fixed-size UTF-16LE string field (`utf16(n)`), NUL-padded.
 *
 * @since 0.1.0
 * @category models
 */
export interface Utf16 extends internal.Utf16 {}

/**
 * Reserved or padding bytes (`reserved(n)`, `padding(n)`): written as zeros, absent from the decoded value.
 *
 * @since 0.1.0
 * @category models
 */
export interface Reserved extends internal.Reserved {}

/**
 * A variable-length array of structs whose element count is another field of the same struct
 * (`array(countField, struct)`).
 *
 * @since 0.1.0
 * @category models
 */
export interface ArrayField<C extends string, S extends Struct<any>> extends internal.ArrayField<C, S> {}

/**
 * The fields of a struct, in wire order.
 *
 * @since 0.1.0
 * @category models
 */
export type Fields = internal.Fields

/**
 * The decoded value of a struct: every field except `reserved`/`padding` fields and array count
 * fields.
 *
 * @since 0.1.0
 * @category models
 */
export type StructType<F extends Fields> = internal.StructType<F>

/**
 * Options of `struct`: a name for error messages, and whether trailing bytes are refused (the default) or
 * ignored.
 *
 * @since 0.1.0
 * @category models
 */
export interface StructOptions extends internal.StructOptions {}

/**
 * A binary struct: a `Schema<StructType<F>, Uint8Array>` plus its layout.
 *
 * - `typeSchema`: the Schema of the decoded side (for `Arbitrary.make`, validation, …);
 * - `fixedSize`: the encoded size when it does not depend on the value, otherwise `undefined`;
 * - `offsets`: the byte offset of every field (and nested field, as `"outer.inner"`) whose offset
 *   does not depend on the value.
 *
 * @since 0.1.0
 * @category models
 */
export interface Struct<F extends Fields> extends internal.Struct<F> {}

/**
 * Unsigned 8-bit integer (`number`).
 *
 * @since 0.1.0
 * @category fields
 */
export const u8: UInt = internal.u8

/**
 * Unsigned 16-bit little-endian integer (`number`).
 *
 * @since 0.1.0
 * @category fields
 */
export const u16: UInt = internal.u16

/**
 * Unsigned 32-bit little-endian integer (`number`, `0 ..= 0xffffffff`).
 *
 * @since 0.1.0
 * @category fields
 */
export const u32: UInt = internal.u32

/**
 * Unsigned 64-bit little-endian integer (`bigint`).
 *
 * @since 0.1.0
 * @category fields
 */
export const u64: U64 = internal.u64

/**
 * A 16-byte GUID in the Windows layout: `Data1` (u32), `Data2` (u16) and `Data3` (u16)
 * little-endian, then `Data4` as 8 bytes in order. Decodes to the canonical lowercase string;
 * encoding accepts only that form.
 *
 * @since 0.1.0
 * @category fields
 */
export const guid: Guid = internal.guid

/**
 * A fixed-size byte array (`Uint8Array` of exactly `size` bytes). Decoding copies the bytes.
 *
 * @since 0.1.0
 * @category fields
 */
export const bytes: (size: number) => Bytes = internal.bytes

/**
 * A fixed-size UTF-16LE string field of `size` bytes (even). Decoding stops at the first NUL code
 * unit (or the end of the field). Encoding writes the code units, then zeros to the end of the field.
 *
 * By default the field is NUL-terminated: a string must leave room for the terminator, so at most
 * `size / 2 - 1` code units are accepted. With `{ nulTerminated: false }` a string may fill the field
 * completely (`size / 2` code units). Strings containing U+0000 are always rejected, since they
 * could not round-trip. Lengths are counted in UTF-16 code units (`string.length`).
 *
 * @since 0.1.0
 * @category fields
 */
export const utf16: (size: number, options?: { readonly nulTerminated?: boolean }) => Utf16 = internal.utf16

/**
 * `size` reserved bytes: written as zeros, ignored on decode, not part of the decoded value.
 *
 * @since 0.1.0
 * @category fields
 */
export const reserved: (size: number) => Reserved = internal.reserved

/**
 * Alias of {@link reserved}, for alignment padding.
 *
 * @since 0.1.0
 * @category fields
 */
export const padding: (size: number) => Reserved = internal.reserved

/**
 * An array of `element` structs whose length is the value of the earlier unsigned field
 * `countField`. The count field is omitted from the decoded value and written from the array's
 * length. `maxLength` caps the count (decode and encode) below the count field's own maximum.
 *
 * @since 0.1.0
 * @category fields
 */
export const array: <const C extends string, S extends Struct<any>>(
  countField: C,
  element: S,
  options?: { readonly maxLength?: number }
) => ArrayField<C, S> = internal.array

/**
 * Defines a struct from its fields in wire order.
 *
 * Options: `identifier` names the struct in error messages (default `"struct"`); `trailingBytes`
 * decides what the Schema and {@link decodeEither} do with bytes left after the last field:
 * `"reject"` (default) fails, `"ignore"` accepts them. Use {@link decodePrefix} to decode a header
 * from the start of a larger buffer and learn how many bytes it used.
 *
 * @example
 * ```ts
 * import * as BinarySchema from "effect-vmbus/BinarySchema"
 *
 * const Version = BinarySchema.struct({ major: BinarySchema.u16, minor: BinarySchema.u16 }, { identifier: "version" })
 * const bytes = BinarySchema.encodeSync(Version)({ major: 3, minor: 0 }) // 03 00 00 00
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const struct: <const F extends Fields>(fields: F, options?: StructOptions) => Struct<F> = internal.struct

/**
 * Tells whether a value is a struct schema made by `struct`.
 *
 * @since 0.1.0
 * @category refinements
 */
export const isStruct: (u: unknown) => u is Struct<Fields> = internal.isStruct

/**
 * Decodes exactly one struct from `input` (trailing bytes per the struct's `trailingBytes` option).
 *
 * @since 0.1.0
 * @category decoding
 */
export const decodeEither: <F extends Fields>(
  self: Struct<F>
) => (input: Uint8Array) => Either.Either<StructType<F>, ParseResult.ParseError> = internal.decodeEither

/**
 * Decodes a struct starting at `offset` (default 0) of a larger buffer; bytes after it are left
 * alone. Returns the value and the number of bytes it occupied.
 *
 * @since 0.1.0
 * @category decoding
 */
export const decodePrefix: <F extends Fields>(
  self: Struct<F>
) => (
  input: Uint8Array,
  offset?: number
) => Either.Either<{ readonly value: StructType<F>; readonly bytesRead: number }, ParseResult.ParseError> =
  internal.decodePrefix

/**
 * Like {@link decodeEither}, but throws the `ParseError` (as `Schema.decodeSync` does).
 *
 * @since 0.1.0
 * @category decoding
 */
export const decodeSync: <F extends Fields>(self: Struct<F>) => (input: Uint8Array) => StructType<F> =
  internal.decodeSync

/**
 * Encodes a value into a new `Uint8Array`, validating every field (range, length, GUID form, …).
 *
 * @since 0.1.0
 * @category encoding
 */
export const encodeEither: <F extends Fields>(
  self: Struct<F>
) => (value: StructType<F>) => Either.Either<Uint8Array, ParseResult.ParseError> = internal.encodeEither

/**
 * Encodes a value into `target` at `offset` (default 0) and returns the number of bytes written.
 * Bytes of `target` outside that range are left untouched (useful to answer a request in place).
 * Nothing is written when validation fails.
 *
 * @since 0.1.0
 * @category encoding
 */
export const encodeInto: <F extends Fields>(
  self: Struct<F>
) => (value: StructType<F>, target: Uint8Array, offset?: number) => Either.Either<number, ParseResult.ParseError> =
  internal.encodeInto

/**
 * Like {@link encodeEither}, but throws the `ParseError`.
 *
 * @since 0.1.0
 * @category encoding
 */
export const encodeSync: <F extends Fields>(self: Struct<F>) => (value: StructType<F>) => Uint8Array =
  internal.encodeSync

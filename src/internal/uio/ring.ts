// Mappings that are the same on a real device and an emulated one: a sub-channel's `ring` file, and the
// read/write view of a pre-made receive or send buffer.
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import { fstatSync } from "node:fs"
import type * as Transport from "../../Transport.js"
import { ChannelClosed, DeviceMapInvalid, GpadlUnavailable, InvalidMemoryRange, TransportError } from "../../VmbusError.js"
import { mapFd } from "./backend.js"
import { mapError, openError } from "./errors.js"
import type { MappedRegion } from "./mapping.js"
import type { Native } from "./native.js"
import { O_CLOEXEC, O_RDWR } from "./native.js"

/** A `ring` file: open, fstat (the size is real since 6.15), map whole at 0, close (§1.9). */
export const mapRingFile = (native: Native, path: string): Effect.Effect<MappedRegion, TransportError | ChannelClosed> =>
  Effect.suspend(() => {
    const fd = native.open(path, O_RDWR | O_CLOEXEC)
    if (fd < 0) {
      const error = openError(path, -fd)
      return Effect.fail(error._tag === "TransportError" ? error : new ChannelClosed({ reason: "Rescinded" }))
    }
    try {
      const size = fstatSync(fd).size
      const half = size / 2
      if (!Number.isInteger(half) || half % native.pageSize !== 0 || half <= native.pageSize) {
        const invalid = new DeviceMapInvalid({ map: path, reason: "a ring file holds two rings of whole pages", size })
        return Effect.fail(new TransportError({ reason: "InvalidData", detail: invalid.message }))
      }
      const region = mapFd(native, path, fd, size, 0)
      return typeof region === "number" ? Effect.fail(mapError(path, -region)) : Effect.succeed(region)
    } finally {
      native.close(fd)
    }
  })

/** A buffer's view: every access checks the mapping is still there (`GpadlUnavailable` once revoked). */
export const bufferView = (region: MappedRegion, handle: number, byteLength: number): Transport.GpadlView => {
  const gone = () => Either.left(new GpadlUnavailable({ handle, reason: "TearingDown" }))
  const outside = (offset: number, length: number) =>
    !Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 ||
    offset + length > byteLength
  return {
    handle,
    byteLength,
    writable: true,
    read: (offset, length) => {
      if (!region.valid()) return gone()
      if (outside(offset, length)) return Either.left(new InvalidMemoryRange({ reason: "outside the buffer", offset, length }))
      return Either.right(region.bytes.slice(offset, offset + length))
    },
    write: (offset, data) => {
      if (!region.valid()) return gone()
      if (outside(offset, data.length)) {
        return Either.left(new InvalidMemoryRange({ reason: "outside the buffer", offset, length: data.length }))
      }
      region.bytes.set(data, offset)
      return Either.right(undefined)
    }
  }
}

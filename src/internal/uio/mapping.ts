// A mapping of device memory (a uio map or a channel's ring file) with one owner. Views over it cannot be
// detached and touching unmapped memory kills the process, so `revoke` never unmaps: it overlays the
// range in place with private anonymous zero pages (native-transport.md §3.4). The device pages are
// dropped at once — the kernel may free or reuse them — while stale views read zeros and their writes
// stay private. The overlay itself is unmapped only when its ArrayBuffer is garbage: no view can reach
// it any more.
import type { Native } from "./native.js"

export interface MappedRegion {
  readonly name: string
  readonly bytes: Uint8Array
  readonly address: bigint
  /** False once revoked: every access the transport makes itself checks it first. */
  readonly valid: () => boolean
  /** Idempotent; never throws. Returns false when the overlay failed (the range was then unmapped). */
  readonly revoke: () => boolean
}

interface Held {
  readonly native: Native
  readonly address: bigint
  readonly length: number
}

const finalizer = new FinalizationRegistry<Held>((held) => {
  held.native.munmap(held.address, held.length)
})

/** Counts mappings not yet revoked, for leak checks in tests. */
let live = 0
export const liveMappings = (): number => live

export const fromAddress = (native: Native, name: string, address: bigint, length: number): MappedRegion => {
  const buffer = native.view(address, length)
  const bytes = new Uint8Array(buffer)
  let valid = true
  live++
  finalizer.register(buffer, { native, address, length }, buffer)
  return {
    name,
    bytes,
    address,
    valid: () => valid,
    revoke: () => {
      if (!valid) return true
      valid = false
      live--
      if (native.overlay(address, length) === 0) return true
      // Without an overlay the pages must still be dropped; a later access through a stale view would
      // fault, which the transport prevents by checking `valid` and the channel by its closed state.
      native.munmap(address, length)
      finalizer.unregister(buffer)
      return false
    }
  }
}

// The only seam between a real /dev/uioN and the emulated device of the tests (native-transport.md
// §5.2): opening the device, mapping one of its maps, and taking the exclusive lock. Everything else —
// sysfs reads, ring files, polling, 4-byte reads and writes, the ring code — is the same code for both.
import * as Effect from "effect/Effect"
import type { MappedRegion } from "./mapping.js"
import { fromAddress } from "./mapping.js"
import type { Native } from "./native.js"
import { Errno, LOCK_EX_NB, O_CLOEXEC, O_RDWR } from "./native.js"

export interface Backend {
  /** For diagnostics: "uio" or "uio-emulated". */
  readonly name: string
  /** The koffi bindings (page size, syscalls) the rest of the transport uses as they are. */
  readonly native: Native
  /**
   * Opens the device node: the kernel opens the primary channel (the host's answer to OPENCHANNEL
   * included) before it returns. Succeeds with the fd or -errno; interruption closes a late fd.
   */
  readonly openDevice: (path: string) => Effect.Effect<number>
  /** Maps map `index` of the device, `length` bytes: the region, or -errno. */
  readonly mapResource: (fd: number, path: string, index: number, length: number) => MappedRegion | number
  /** Takes the advisory exclusive lock: its release, or -errno (EAGAIN: held by someone else). */
  readonly lock: (fd: number, path: string) => (() => void) | number
}

/** Runs a promise-returning open; an fd that arrives after interruption is closed, never leaked. */
export const openInterruptibly = (native: Native, start: () => Promise<number>): Effect.Effect<number> =>
  Effect.async<number>((resume) => {
    let cancelled = false
    start().then((fd) => {
      if (!cancelled) resume(Effect.succeed(fd))
      else if (fd >= 0) native.close(fd)
    }, () => {
      if (!cancelled) resume(Effect.succeed(-Errno.EIO))
    })
    return Effect.sync(() => {
      cancelled = true
    })
  })

/** Maps `length` bytes of `fd` at `offset`; region or -errno. */
export const mapFd = (native: Native, name: string, fd: number, length: number, offset: number): MappedRegion | number => {
  const address = native.mmap(fd, length, offset)
  return typeof address === "number" ? address : fromAddress(native, name, address, length)
}

/** The real device: `open(O_RDWR|O_CLOEXEC)` on the pool, map K at `K × page`, `flock` on the fd. */
export const device = (native: Native): Backend => ({
  name: "uio",
  native,
  openDevice: (path) => openInterruptibly(native, () => native.openAsync(path, O_RDWR | O_CLOEXEC)),
  mapResource: (fd, _path, index, length) => mapFd(native, `map${index}`, fd, length, index * native.pageSize),
  lock: (fd) => {
    const result = native.flock(fd, LOCK_EX_NB)
    // Released by the fd's close.
    return result < 0 ? result : () => {}
  }
})

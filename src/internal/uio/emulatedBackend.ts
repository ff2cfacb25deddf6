// The emulated device's backend (native-transport.md §5.2): `/dev/uioN` is an AF_UNIX SOCK_SEQPACKET
// socket served by a host emulator, map K is the file `{device}-maps/mapK`, and the lock is taken on the
// map-0 file (each socket connection is its own inode, so a lock on the fd would exclude nobody). A real
// open returns only once the channel is open: the emulator answers each connection with one 4-byte
// message when it has opened the channel (or closes it to refuse), consumed here.
import * as Effect from "effect/Effect"
import { fstatSync } from "node:fs"
import type { Backend } from "./backend.js"
import { mapFd } from "./backend.js"
import type { Native } from "./native.js"
import { Errno, LOCK_EX_NB, O_CLOEXEC, O_RDWR } from "./native.js"

/** The emulator's answer to a connection: 4 bytes = opened; end of file = the host refused. */
const awaitOpened = (native: Native, fd: number): Effect.Effect<number> =>
  Effect.async<number>((resume) => {
    const word = new Int32Array(1)
    let done = false
    const finish = (result: number) => {
      if (done) return
      done = true
      handle.stop()
      if (result < 0) native.close(fd)
      resume(Effect.succeed(result))
    }
    const handle = native.poll(fd, (status) => {
      if (status < 0) return finish(-Errno.EIO)
      const n = native.read4(fd, word)
      if (n === -Errno.EAGAIN || n === -Errno.EINTR) return
      finish(n === 4 ? fd : n === 0 ? -Errno.EAGAIN : n < 0 ? n : -Errno.EIO)
    })
    return Effect.sync(() => finish(-Errno.EINTR))
  })

export const emulated = (native: Native): Backend => ({
  name: "uio-emulated",
  native,
  openDevice: (path) =>
    Effect.suspend(() => {
      const fd = native.socketSeqpacket()
      if (fd < 0) return Effect.succeed(fd)
      const connected = native.connect(fd, path)
      if (connected < 0) {
        native.close(fd)
        // No listener: the device node is gone, as a rescinded device's would be.
        return Effect.succeed(connected === -Errno.ECONNREFUSED ? -Errno.ENODEV : connected)
      }
      return awaitOpened(native, fd)
    }),
  mapResource: (_fd, path, index, length) => {
    const file = native.open(`${path}-maps/map${index}`, O_RDWR | O_CLOEXEC)
    if (file < 0) return file
    try {
      // A shorter file would fault (SIGBUS) past its end; the real device refuses such a length (EINVAL).
      if (fstatSync(file).size < length) return -Errno.EINVAL
      return mapFd(native, `map${index}`, file, length, 0)
    } finally {
      native.close(file)
    }
  },
  lock: (_fd, path) => {
    const file = native.open(`${path}-maps/map0`, O_RDWR | O_CLOEXEC)
    if (file < 0) return file
    const result = native.flock(file, LOCK_EX_NB)
    if (result < 0) {
      native.close(file)
      return result
    }
    return () => {
      native.close(file)
    }
  }
})

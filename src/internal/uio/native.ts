// The few libc calls the uio transport needs, through koffi (prebuilt FFI, no compiler). koffi is an
// optional peer dependency loaded with a dynamic import on first use, so users of the other transports never
// load a native module. Every call is synchronous and cheap except `openAsync` (the kernel's open of
// /dev/uioN waits for the host's answer to OPENCHANNEL, so it runs on the libuv pool).
import * as Effect from "effect/Effect"
import { Unsupported } from "../../VmbusError.js"

// Linux x86-64 / arm64 values (native-transport.md §3.1).
export const O_RDWR = 2
export const O_CLOEXEC = 0o2000000
export const PROT_RW = 3
export const MAP_SHARED = 1
const MAP_PRIVATE = 2
const MAP_FIXED = 0x10
const MAP_ANONYMOUS = 0x20
export const LOCK_EX_NB = 2 | 4
const SC_PAGESIZE = 30
const AF_UNIX = 1
const SOCK_SEQPACKET = 5
const SOCK_CLOEXEC = 0o2000000
const MAP_FAILED = 0xffffffffffffffffn

export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  EINTR: 4,
  EIO: 5,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EBUSY: 16,
  ENODEV: 19,
  EINVAL: 22,
  ECONNREFUSED: 111,
  EDQUOT: 122
} as const

/** What `koffi.node.poll` reports; `status < 0` is libuv's error (POLLERR → UV_EBADF). */
export interface PollEvents {
  readonly readable: boolean
  readonly disconnect: boolean
}

export interface PollHandle {
  readonly stop: () => void
}

/** The calls, each returning the result or `-errno`. Addresses are BigInt. */
export interface Native {
  readonly pageSize: number
  readonly open: (path: string, flags: number) => number
  readonly openAsync: (path: string, flags: number) => Promise<number>
  readonly close: (fd: number) => number
  /** One 4-byte read into `out[0]`: bytes read (0 = end of file) or -errno. */
  readonly read4: (fd: number, out: Int32Array) => number
  /** One 4-byte write of `value`: 4 or -errno. */
  readonly write4: (fd: number, value: number) => number
  /** `read(fd, buffer, length)`: bytes read or -errno. */
  readonly readInto: (fd: number, buffer: Uint8Array) => number
  /** `write(fd, buffer, length)`: bytes written or -errno. */
  readonly writeFrom: (fd: number, buffer: Uint8Array) => number
  readonly mmap: (fd: number, length: number, offset: number) => bigint | number
  /** Replaces a mapping in place by private anonymous zero pages (the device pages are dropped at once). */
  readonly overlay: (address: bigint, length: number) => number
  readonly munmap: (address: bigint, length: number) => number
  readonly view: (address: bigint, length: number) => ArrayBuffer
  readonly flock: (fd: number, operation: number) => number
  readonly poll: (fd: number, callback: (status: number, events: PollEvents) => void) => PollHandle
  readonly socketSeqpacket: () => number
  readonly connect: (fd: number, path: string) => number
  readonly bind: (fd: number, path: string) => number
  readonly listen: (fd: number, backlog: number) => number
  readonly accept: (fd: number) => number
}

interface Koffi {
  readonly load: (path: string) => { func: (signature: string) => KoffiFunction }
  readonly errno: () => number
  readonly view: (ref: unknown, length: number) => ArrayBuffer
  readonly node: {
    readonly poll: (
      fd: number,
      options: { readonly readable: boolean; readonly disconnect: boolean },
      callback: (...args: ReadonlyArray<unknown>) => void
    ) => { stop(): void; close?(): void }
  }
}

interface KoffiFunction {
  (...args: ReadonlyArray<unknown>): any
  readonly async: (...args: ReadonlyArray<unknown>) => void
}

const sockaddr = (path: string): Buffer | undefined => {
  const bytes = Buffer.from(path)
  if (bytes.length > 107) return undefined
  const address = Buffer.alloc(110)
  address.writeUInt16LE(AF_UNIX, 0)
  bytes.copy(address, 2)
  return address
}

const bind = (koffi: Koffi): Native => {
  const libc = koffi.load("libc.so.6")
  const fn = (signature: string) => libc.func(signature)
  const open = fn("int open(const char *, int, uint32_t)")
  const close = fn("int close(int)")
  const read = fn("intptr_t read(int, _Out_ int32_t *, size_t)")
  const write = fn("intptr_t write(int, const int32_t *, size_t)")
  const readBytes = fn("intptr_t read(int, _Out_ uint8_t *, size_t)")
  const writeBytes = fn("intptr_t write(int, const uint8_t *, size_t)")
  const mmap = fn("uintptr_t mmap(uintptr_t, size_t, int, int, int, int64_t)")
  const munmap = fn("int munmap(uintptr_t, size_t)")
  const flock = fn("int flock(int, int)")
  const sysconf = fn("long sysconf(int)")
  const socket = fn("int socket(int, int, int)")
  const connect = fn("int connect(int, const void *, uint32_t)")
  const bindSocket = fn("int bind(int, const void *, uint32_t)")
  const listen = fn("int listen(int, int)")
  const accept4 = fn("int accept4(int, void *, void *, int)")
  const result = (value: number): number => (value < 0 ? -koffi.errno() : value)
  const one = new Int32Array(1)
  return {
    pageSize: Number(sysconf(SC_PAGESIZE)),
    open: (path, flags) => result(open(path, flags, 0)),
    openAsync: (path, flags) =>
      new Promise((resolve) => {
        // koffi carries the worker thread's errno back to the callback (checked: ENOENT, EISDIR).
        open.async(path, flags, 0, (error: unknown, fd: number) =>
          resolve(error ? -Errno.EIO : fd < 0 ? -koffi.errno() : fd))
      }),
    close: (fd) => result(close(fd)),
    read4: (fd, out) => result(Number(read(fd, out, 4))),
    write4: (fd, value) => {
      one[0] = value
      return result(Number(write(fd, one, 4)))
    },
    readInto: (fd, buffer) => result(Number(readBytes(fd, buffer, buffer.length))),
    writeFrom: (fd, buffer) => result(Number(writeBytes(fd, buffer, buffer.length))),
    mmap: (fd, length, offset) => {
      const address = BigInt(mmap(0, length, PROT_RW, MAP_SHARED, fd, offset))
      return address === MAP_FAILED ? -koffi.errno() : address
    },
    overlay: (address, length) => {
      const at = BigInt(mmap(address, length, PROT_RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0))
      return at === address ? 0 : -koffi.errno()
    },
    munmap: (address, length) => result(munmap(address, length)),
    view: (address, length) => koffi.view(address, length),
    flock: (fd, operation) => result(flock(fd, operation)),
    poll: (fd, callback) => {
      const handle = koffi.node.poll(fd, { readable: true, disconnect: true }, (...args) => {
        // koffi passes (status, events); its .d.ts documents only the events.
        const status = typeof args[0] === "number" ? args[0] : 0
        const events = (typeof args[0] === "number" ? args[1] : args[0]) as PollEvents | undefined
        callback(status, events ?? { readable: false, disconnect: false })
      })
      let stopped = false
      return {
        stop: () => {
          if (stopped) return
          stopped = true
          handle.stop()
          handle.close?.()
        }
      }
    },
    socketSeqpacket: () => result(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0)),
    connect: (fd, path) => {
      const address = sockaddr(path)
      return address === undefined ? -Errno.EINVAL : result(connect(fd, address, address.length))
    },
    bind: (fd, path) => {
      const address = sockaddr(path)
      return address === undefined ? -Errno.EINVAL : result(bindSocket(fd, address, address.length))
    },
    listen: (fd, backlog) => result(listen(fd, backlog)),
    accept: (fd) => result(accept4(fd, null, null, SOCK_CLOEXEC))
  }
}

let loaded: Promise<Native | Unsupported> | undefined

/** Loads koffi and binds libc once per process; `Unsupported{ capability: "native" }` when it cannot. */
export const load: Effect.Effect<Native, Unsupported> = Effect.flatMap(
  Effect.promise(() => {
    if (loaded === undefined) {
      loaded = (async () => {
        if (process.platform !== "linux") {
          return new Unsupported({ capability: "native", reason: `uio_hv_generic is Linux-only (platform ${process.platform})` })
        }
        try {
          const module = (await import("koffi")) as unknown as { readonly default?: Koffi } & Koffi
          return bind(module.default ?? module)
        } catch (error) {
          return new Unsupported({
            capability: "native",
            reason: `the optional peer dependency koffi could not be loaded (${String(error)}); install it with \`npm install koffi\``
          })
        }
      })()
    }
    return loaded
  }),
  (native) => (native instanceof Unsupported ? Effect.fail(native) : Effect.succeed(native))
)

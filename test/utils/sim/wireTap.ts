// A tap on what writers publish: every packet a channel commits to a watched ring is decoded (from a
// copy) and handed to a listener, before the reader can see it. Test instrumentation only: it wraps
// `OutgoingRing.prototype.commit` once per process and reads the writer's private cursor.
import * as Packet from "../../../src/Packet.js"
import * as Ring from "../../../src/Ring.js"
import { RingCorrupt } from "../../../src/VmbusError.js"

type Listener = (packet: Packet.Packet | undefined) => void

interface WriterInternals {
  readonly committed: number
  readonly cursor: number
  readonly data: Uint8Array
  readonly dataSize: number
}

const listeners = new WeakMap<ArrayBufferLike, Map<number, Listener>>()
let installed = false

const install = (): void => {
  if (installed) return
  installed = true
  const proto = Ring.OutgoingRing.prototype as unknown as { commit: () => boolean }
  const original = proto.commit
  proto.commit = function(this: WriterInternals) {
    const listener = listeners.get(this.data.buffer)?.get(this.data.byteOffset)
    if (listener !== undefined) {
      let at = this.committed
      const size = this.dataSize
      let guard = 0
      while (at !== this.cursor && guard++ < 100_000) {
        const length = ((this.data[(at + 4) % size]! | (this.data[(at + 5) % size]! << 8)) * 8)
        const bytes = new Uint8Array(length)
        for (let i = 0; i < length; i++) bytes[i] = this.data[(at + i) % size]!
        const decoded = Packet.decode(bytes)
        listener(decoded instanceof RingCorrupt ? undefined : decoded)
        at = (at + length + 8) % size
      }
    }
    return original.call(this)
  }
}

/** Calls `listener` with every packet committed to `ring` (control page included) until the returned stop. */
export const watch = (ring: Uint8Array, listener: Listener): () => void => {
  install()
  let byBuffer = listeners.get(ring.buffer)
  if (byBuffer === undefined) {
    byBuffer = new Map()
    listeners.set(ring.buffer, byBuffer)
  }
  const key = ring.byteOffset + Ring.CONTROL_PAGE_SIZE
  byBuffer.set(key, listener)
  return () => {
    if (byBuffer.get(key) === listener) byBuffer.delete(key)
  }
}

// The VMBus ring (wire-format.md §1, §3): one 4 KiB control page then a data area. Synchronous code over
// Uint8Array/DataView, with every control word accessed through Atomics so the other endpoint may be
// another thread or process. Peer data is validated; problems are returned as typed errors.
import { BufferTooSmall, InvalidParameter, PacketTooLarge, RingCorrupt, RingFull } from "../VmbusError.js"
import * as L from "./layout.js"
import * as P from "./packet.js"

export interface RingRegion {
  readonly control: Uint32Array
  readonly data: Uint8Array
  readonly dataSize: number
  readonly bytes: Uint8Array
}

export type RegionInput = ArrayBuffer | SharedArrayBuffer | Uint8Array

const toBytes = (input: RegionInput): Uint8Array => (input instanceof Uint8Array ? input : new Uint8Array(input))

/** Validates the geometry of a region and returns its views (does not touch the content). */
export const region = (input: RegionInput): RingRegion | InvalidParameter => {
  const bytes = toBytes(input)
  if (bytes.byteLength < L.CONTROL_PAGE_SIZE + L.PAGE_SIZE || bytes.byteLength % L.PAGE_SIZE !== 0) {
    return new InvalidParameter({
      field: "ringSize",
      reason: "a ring is a multiple of 4096 bytes with at least one data page",
      value: bytes.byteLength
    })
  }
  if (bytes.byteOffset % 8 !== 0) {
    return new InvalidParameter({ field: "byteOffset", reason: "the ring must start 8-byte aligned", value: bytes.byteOffset })
  }
  return {
    bytes,
    control: new Uint32Array(bytes.buffer, bytes.byteOffset, 32),
    data: bytes.subarray(L.CONTROL_PAGE_SIZE),
    dataSize: bytes.byteLength - L.CONTROL_PAGE_SIZE
  }
}

/** effect-vmbus initialisation: zero the control page, feature bit 0 set, both indices 0. */
export const initialize = (r: RingRegion): void => {
  r.bytes.fill(0, 0, L.CONTROL_PAGE_SIZE)
  Atomics.store(r.control, L.FEATURE_BITS_WORD, L.FEATURE_PENDING_SEND_SIZE)
  Atomics.store(r.control, L.WRITE_INDEX_WORD, 0)
  Atomics.store(r.control, L.READ_INDEX_WORD, 0)
}

const rawFree = (w: number, r: number, size: number): number => (w >= r ? size - (w - r) : r - w)
const readable = (w: number, r: number, size: number): number => (w >= r ? w - r : size - r + w)

const badIndex = (index: number, size: number): boolean => index >= size || (index & 7) !== 0

/** Loads an index once (Atomics) and validates it: `< dataSize` and a multiple of 8 (hardening §1.1). */
const loadPeerIndex = (
  control: Uint32Array,
  word: number,
  dataSize: number,
  field: "read_index" | "write_index"
): number | RingCorrupt => {
  const index = Atomics.load(control, word)
  if (badIndex(index, dataSize)) return new RingCorrupt({ reason: "index out of range or misaligned", field, value: index })
  return index
}

const copyIn = (data: Uint8Array, size: number, at: number, src: Uint8Array): number => {
  const n = src.length
  const first = size - at
  if (n <= first) {
    data.set(src, at)
    const next = at + n
    return next === size ? 0 : next
  }
  data.set(src.subarray(0, first), at)
  data.set(src.subarray(first), 0)
  return n - first
}

const zeroFill = (data: Uint8Array, size: number, at: number, n: number): number => {
  const first = size - at
  if (n <= first) {
    data.fill(0, at, at + n)
    const next = at + n
    return next === size ? 0 : next
  }
  data.fill(0, at, size)
  data.fill(0, 0, n - first)
  return n - first
}

const copyOut = (data: Uint8Array, size: number, at: number, dst: Uint8Array, dstOffset: number, n: number): void => {
  const first = size - at
  if (n <= first) {
    dst.set(data.subarray(at, at + n), dstOffset)
  } else {
    dst.set(data.subarray(at, size), dstOffset)
    dst.set(data.subarray(0, n - first), dstOffset + first)
  }
}

/** `OutgoingRing.writeStatus` results: written, no room now (nothing written), never fits this ring. */
export const WRITTEN = 0
export const FULL = 1
export const TOO_LARGE = 2
export type WriteStatus = typeof WRITTEN | typeof FULL | typeof TOO_LARGE

export interface RingOptions {
  /** OpenVMM's extra limit: reject a single packet whose ring size is `>= D − 8`. */
  readonly strict?: boolean | undefined
}

/** The writer's side of a ring: batch writes, one publish, one signal decision. */
export class OutgoingRing {
  /** Bytes of the data area (the ring size minus the control page). */
  readonly dataSize: number
  /** Whether OpenVMM's extra size limit applies (see `RingOptions.strict`). */
  readonly strict: boolean
  private readonly control: Uint32Array
  private readonly data: Uint8Array
  private committed: number
  private cursor: number
  private readonly scratch = new Uint8Array(L.DESCRIPTOR_SIZE + L.EXTENDED_HEADER_SIZE + 8 * 1024)
  private readonly scratchView = new DataView(this.scratch.buffer)
  private readonly trailer = new Uint8Array(8)
  private readonly trailerView = new DataView(this.trailer.buffer)
  private readonly dataView: DataView

  private constructor(r: RingRegion, own: number, options?: RingOptions) {
    this.control = r.control
    this.data = r.data
    this.dataSize = r.dataSize
    this.committed = own
    this.cursor = own
    this.strict = options?.strict === true
    this.dataView = new DataView(r.data.buffer, r.data.byteOffset, r.data.byteLength)
  }

  /** Attaches to a ring whose control page is already initialised; our own index is read once. */
  static attach(input: RegionInput, options?: RingOptions): OutgoingRing | InvalidParameter | RingCorrupt {
    const r = region(input)
    if (r instanceof InvalidParameter) return r
    const own = loadPeerIndex(r.control, L.WRITE_INDEX_WORD, r.dataSize, "write_index")
    if (typeof own !== "number") return own
    return new OutgoingRing(r, own, options)
  }

  /** The largest ring size (packet + trailer) a single packet may have in this ring. */
  get maxRingPacketSize(): number {
    return this.strict ? this.dataSize - 16 : this.dataSize - 8
  }

  private loadReadIndex(): number | RingCorrupt {
    return loadPeerIndex(this.control, L.READ_INDEX_WORD, this.dataSize, "read_index")
  }

  /** Raw free bytes as seen from the uncommitted cursor (a packet needs strictly more). */
  freeBytes(): number | RingCorrupt {
    const r = this.loadReadIndex()
    if (typeof r !== "number") return r
    return rawFree(this.cursor, r, this.dataSize)
  }

  /** Bytes written in this batch but not yet committed. */
  get pendingBytes(): number {
    return readable(this.cursor, this.committed, this.dataSize)
  }

  /**
   * Writes one packet at the batch cursor. Nothing is visible to the reader until `commit`.
   * Returns undefined on success; `RingFull` (nothing written) when it does not fit now.
   */
  write(packet: P.Packet): undefined | RingFull | RingCorrupt | PacketTooLarge | InvalidParameter {
    const problem = P.validateOutgoing(packet)
    if (problem !== undefined) return problem
    return this.writeValidated(packet)
  }

  /** `write` for packets already known to be valid (the channel validates once per send). */
  writeValidated(packet: P.Packet): undefined | RingFull | RingCorrupt | PacketTooLarge {
    const status = this.writeStatus(packet)
    if (status === WRITTEN) return undefined
    if (typeof status !== "number") return status
    return status === FULL ? this.ringFull(packet) : this.tooLarge(packet)
  }

  /** The `RingFull` for the last `writeStatus` of `packet` that returned `FULL` (built only when needed). */
  ringFull(packet: P.Packet): RingFull {
    return new RingFull({ required: P.ringSize(packet), available: this.lastFree })
  }

  /** The `PacketTooLarge` for a packet `writeStatus` refused with `TOO_LARGE` (built only when needed). */
  tooLarge(packet: P.Packet): PacketTooLarge {
    return new PacketTooLarge({ size: P.ringSize(packet), max: this.maxRingPacketSize })
  }

  /** Free bytes seen by the last write that did not fit (what its `RingFull` reports). */
  private lastFree = 0

  /**
   * `writeValidated` for hot paths: "full" and "too large" are sentinels (`FULL`, `TOO_LARGE`), not error
   * objects, so a writer that finds the ring full pays almost nothing; `problemOf` builds the typed
   * error if it must reach a user. Free space is checked before a byte is encoded.
   */
  writeStatus(packet: P.Packet): WriteStatus | RingCorrupt {
    const header = P.headerSize(packet)
    const length = L.align8Safe(header + packet.payload.length)
    const total = length + L.TRAILER_SIZE
    if (total > this.maxRingPacketSize) return TOO_LARGE
    const r = this.loadReadIndex()
    if (typeof r !== "number") return r
    const free = rawFree(this.cursor, r, this.dataSize)
    if (free <= total) {
      this.lastFree = free
      return FULL
    }
    const start = this.cursor
    const size = this.dataSize
    if (start + total <= size && (packet._tag === "InBand" || packet._tag === "Completion")) {
      // Fast path: no wrap, no sub-header — fields straight into the ring.
      const data = this.data
      const view = this.dataView
      view.setUint16(start, packet._tag === "InBand" ? L.PACKET_TYPE_IN_BAND : L.PACKET_TYPE_COMPLETION, true)
      view.setUint16(start + 2, 2, true)
      view.setUint16(start + 4, length >>> 3, true)
      view.setUint16(start + 6, P.wireFlags(packet), true)
      view.setBigUint64(start + 8, packet.transactionId, true)
      const payloadLength = packet.payload.length
      data.set(packet.payload, start + 16)
      const end = start + length
      for (let i = start + 16 + payloadLength; i < end; i++) data[i] = 0
      view.setUint32(end, 0, true)
      view.setUint32(end + 4, start, true)
      const next = end + 8
      this.cursor = next === size ? 0 : next
      return WRITTEN
    }
    let scratch = this.scratch
    let scratchView = this.scratchView
    if (header > scratch.length) {
      scratch = new Uint8Array(header)
      scratchView = new DataView(scratch.buffer)
    }
    P.encodeHeaderInto(packet, scratch, scratchView)
    let at = copyIn(this.data, size, start, scratch.subarray(0, header))
    at = copyIn(this.data, size, at, packet.payload)
    const padding = length - header - packet.payload.length
    if (padding > 0) at = zeroFill(this.data, size, at, padding)
    this.trailerView.setUint32(0, 0, true)
    this.trailerView.setUint32(4, start, true)
    this.cursor = copyIn(this.data, size, at, this.trailer)
    return WRITTEN
  }

  /**
   * Publishes everything written since the last commit. Returns true when the reader must be
   * signalled: its mask is clear and the ring was empty at the start of the batch.
   */
  commit(): boolean {
    if (this.cursor === this.committed) return false
    const old = this.committed
    // Atomics.store is sequentially consistent: the packet bytes are visible before the index.
    Atomics.store(this.control, L.WRITE_INDEX_WORD, this.cursor)
    this.committed = this.cursor
    if (Atomics.load(this.control, L.INTERRUPT_MASK_WORD) !== 0) return false
    return Atomics.load(this.control, L.READ_INDEX_WORD) === old
  }

  /** Drops the packets written since the last commit. */
  revert(): void {
    this.cursor = this.committed
  }

  /**
   * Asks the reader to signal once enough space frees for a packet of `ringSize` bytes (OpenVMM's
   * choice: at least a quarter of the ring, multiple of 8, at most D − 8), then re-checks. Returns
   * true when the packet fits already (the request is then withdrawn) and false when the writer
   * should wait for a signal.
   */
  requestSpace(ringSize: number): boolean | RingCorrupt {
    const max = this.dataSize - 8
    const quarter = Math.floor(max / 4)
    const wanted = Math.min(max, L.align8Safe(Math.max(ringSize, quarter)))
    Atomics.store(this.control, L.PENDING_SEND_SIZE_WORD, wanted)
    const free = this.freeBytes()
    if (typeof free !== "number") return free
    if (free > ringSize) {
      Atomics.store(this.control, L.PENDING_SEND_SIZE_WORD, 0)
      return true
    }
    return false
  }

  /** Withdraws a space request (call before a write that succeeds, to avoid spurious signals). */
  clearSpaceRequest(): void {
    if (Atomics.load(this.control, L.PENDING_SEND_SIZE_WORD) !== 0) {
      Atomics.store(this.control, L.PENDING_SEND_SIZE_WORD, 0)
    }
  }

  /** The write index as last published by `commit`. */
  get writeIndex(): number {
    return this.committed
  }
}

export type ReadResult = P.Packet | undefined | RingCorrupt | BufferTooSmall

/** Most bytes copied out per refill; a packet's payload is a view into one such private copy. */
const SNAPSHOT_BYTES = 32 * 1024

/**
 * Size of the slabs snapshots are carved from. A payload still held keeps its slab alive: at most
 * 32 KiB, as much as one capped snapshot kept alive when every refill had an allocation of its own.
 * Smaller slabs save little: with 8 KiB, batches of 32 small packets cost as many instructions as
 * one allocation per refill (callgrind), since a slab then holds only two such batches.
 */
const SLAB_BYTES = SNAPSHOT_BYTES

const EMPTY_SLAB = new Uint8Array(0)

export interface IncomingOptions {
  /** The largest packet (descriptor and header included, trailer excluded) the reader accepts. */
  readonly maxPacketLength?: number | undefined
}

/** The reader's side of a ring: a private cursor, batch reads, one commit with its signal decision. */
export class IncomingRing {
  /** Bytes of the data area (the ring size minus the control page). */
  readonly dataSize: number
  /** The largest packet accepted (descriptor and header included, trailer excluded). */
  readonly maxPacketLength: number
  private readonly control: Uint32Array
  private readonly data: Uint8Array
  private committed: number
  private cursor: number
  private constructor(r: RingRegion, own: number, options?: IncomingOptions) {
    this.control = r.control
    this.data = r.data
    this.dataSize = r.dataSize
    this.committed = own
    this.cursor = own
    this.maxPacketLength = Math.min(options?.maxPacketLength ?? L.MAX_PACKET_LENGTH, L.MAX_PACKET_LENGTH)
  }

  static attach(input: RegionInput, options?: IncomingOptions): IncomingRing | InvalidParameter | RingCorrupt {
    const r = region(input)
    if (r instanceof InvalidParameter) return r
    const own = loadPeerIndex(r.control, L.READ_INDEX_WORD, r.dataSize, "read_index")
    if (typeof own !== "number") return own
    return new IncomingRing(r, own, options)
  }

  private loadWriteIndex(): number | RingCorrupt {
    return loadPeerIndex(this.control, L.WRITE_INDEX_WORD, this.dataSize, "write_index")
  }

  /** Bytes readable from the private cursor. */
  bytesAvailable(): number | RingCorrupt {
    const w = this.loadWriteIndex()
    if (typeof w !== "number") return w
    return readable(w, this.cursor, this.dataSize)
  }

  /** Reads the next packet and advances the private cursor; undefined when the ring is empty. */
  read(): ReadResult {
    return this.next(true)
  }

  /** Reads the next packet without advancing the cursor. */
  peek(): ReadResult {
    return this.next(false)
  }

  /**
   * The private copy of the readable bytes taken at the last refill (at most SNAPSHOT_BYTES): packets
   * are parsed from it, so every byte of a batch is copied out of shared memory once, before parsing,
   * and the peer's write index is loaded once per batch (hardening §1.1–1.2). It is a stretch
   * `[snapshotPos, snapshotEnd)` of the current slab, undefined when there is no valid copy.
   */
  private snapshot: Uint8Array | undefined = undefined
  /** Index in `snapshot` of the cursor. */
  private snapshotPos = 0
  /** Index in `snapshot` one past the last copied byte. */
  private snapshotEnd = 0
  /** Index in `snapshot` where the readable bytes would end (beyond `snapshotEnd` when capped). */
  private snapshotAvailEnd = 0

  /**
   * Snapshots are carved one after the other out of a slab instead of one allocation per refill. The reuse rule that keeps every payload view valid (C7: valid for as long as its
   * holder keeps it): bytes below `slabExposed` were covered by a packet this reader returned and are
   * never written again; only bytes at or above it — copied but never handed out, such as the unread
   * rest of a dropped copy — are written by the next refill. A full slab is left to the garbage
   * collector, which frees it when no view of it remains.
   */
  private slab: Uint8Array = EMPTY_SLAB
  /** First byte of `slab` that no returned packet ever covered: where the next refill may write. */
  private slabExposed = 0

  /**
   * Drops the private copy: the next read copies the ring again. A reader about to sleep calls it, so
   * no stale copy outlives the batch it was taken for.
   */
  discardCopy(): void {
    this.snapshot = undefined
  }

  private refill(): "empty" | RingCorrupt | undefined {
    this.snapshot = undefined
    const w = this.loadWriteIndex()
    if (typeof w !== "number") return w
    const avail = readable(w, this.cursor, this.dataSize)
    if (avail === 0) return "empty"
    const n = Math.min(avail, SNAPSHOT_BYTES)
    let start = this.slabExposed
    if (start + n > this.slab.length) {
      this.slab = new Uint8Array(SLAB_BYTES)
      start = 0
      this.slabExposed = 0
    }
    copyOut(this.data, this.dataSize, this.cursor, this.slab, start, n)
    this.snapshot = this.slab
    this.snapshotPos = start
    this.snapshotEnd = start + n
    this.snapshotAvailEnd = start + avail
    return undefined
  }

  private next(advance: boolean): ReadResult {
    const result = this.parseNext(advance)
    // After an error nothing is consumed and the next call copies the ring again.
    if (result !== undefined && (result._tag === "RingCorrupt" || result._tag === "BufferTooSmall")) this.snapshot = undefined
    return result
  }

  private parseNext(advance: boolean): ReadResult {
    const at = this.cursor
    let snapshot = this.snapshot
    let remaining = snapshot === undefined ? 0 : this.snapshotEnd - this.snapshotPos
    if (remaining < L.DESCRIPTOR_SIZE + L.TRAILER_SIZE) {
      if (remaining > 0 && this.snapshotAvailEnd === this.snapshotEnd) {
        return new RingCorrupt({ reason: "fewer bytes than a packet while not empty", field: "write_index", offset: at, value: remaining })
      }
      const problem = this.refill()
      if (problem === "empty") return undefined
      if (problem !== undefined) return problem
      snapshot = this.snapshot!
      remaining = this.snapshotEnd - this.snapshotPos
      if (remaining < L.DESCRIPTOR_SIZE + L.TRAILER_SIZE) {
        return new RingCorrupt({ reason: "fewer bytes than a packet while not empty", field: "write_index", offset: at, value: remaining })
      }
    }
    const pos = this.snapshotPos
    const avail = this.snapshotAvailEnd - pos
    const offset = (snapshot![pos + 2]! | (snapshot![pos + 3]! << 8)) * 8
    const length = (snapshot![pos + 4]! | (snapshot![pos + 5]! << 8)) * 8
    if (length < L.DESCRIPTOR_SIZE || length + L.TRAILER_SIZE > avail) {
      return new RingCorrupt({ reason: "packet length outside the available bytes", field: "len8", offset: at, value: length / 8 })
    }
    if (offset < L.DESCRIPTOR_SIZE || offset > length) {
      return new RingCorrupt({ reason: "payload offset outside the packet", field: "offset8", offset: at, value: offset / 8 })
    }
    if (length > this.maxPacketLength) {
      return new BufferTooSmall({ required: length, available: this.maxPacketLength })
    }
    let bytes: Uint8Array
    let start: number
    const inSnapshot = length + L.TRAILER_SIZE <= remaining
    if (inSnapshot) {
      bytes = snapshot!
      start = pos
    } else {
      // Larger than the rest of a capped snapshot: a copy of its own.
      bytes = new Uint8Array(length)
      start = 0
      copyOut(this.data, this.dataSize, at, bytes, 0, length)
    }
    // Pin the validated lengths into the private copy (double-fetch defence).
    bytes[start + 2] = offset >>> 3
    bytes[start + 3] = offset >>> 11
    bytes[start + 4] = length >>> 3
    bytes[start + 5] = length >>> 11
    const packet = P.decodeAt(bytes, start, length, at)
    if (packet instanceof RingCorrupt) return packet
    // Handed out (read or peeked): these bytes of the slab are never written again.
    const exposedEnd = pos + length + L.TRAILER_SIZE
    if (inSnapshot && exposedEnd > this.slabExposed) this.slabExposed = exposedEnd
    if (advance) {
      const next = at + length + L.TRAILER_SIZE
      this.cursor = next >= this.dataSize ? next - this.dataSize : next
      if (inSnapshot) this.snapshotPos = exposedEnd
      else this.snapshot = undefined
    }
    return packet
  }

  /**
   * Moves past the next packet without decoding it: only its framing (`len8`, `offset8` against the
   * readable bytes) is checked, since that is all it takes to find the packet after it. For a packet
   * the reader will not take (larger than `maxPacketLength`, a type it does not handle). Returns false
   * when the ring is empty; a framing error is `RingCorrupt` (nothing is consumed: there is no next).
   */
  skip(): boolean | RingCorrupt {
    this.snapshot = undefined
    const w = this.loadWriteIndex()
    if (typeof w !== "number") return w
    const at = this.cursor
    const avail = readable(w, at, this.dataSize)
    if (avail === 0) return false
    if (avail < L.DESCRIPTOR_SIZE + L.TRAILER_SIZE) {
      return new RingCorrupt({ reason: "fewer bytes than a packet while not empty", field: "write_index", offset: at, value: avail })
    }
    const descriptor = new Uint8Array(8)
    copyOut(this.data, this.dataSize, at, descriptor, 0, 8)
    const offset = (descriptor[2]! | (descriptor[3]! << 8)) * 8
    const length = (descriptor[4]! | (descriptor[5]! << 8)) * 8
    if (length < L.DESCRIPTOR_SIZE || length + L.TRAILER_SIZE > avail) {
      return new RingCorrupt({ reason: "packet length outside the available bytes", field: "len8", offset: at, value: length / 8 })
    }
    if (offset < L.DESCRIPTOR_SIZE || offset > length) {
      return new RingCorrupt({ reason: "payload offset outside the packet", field: "offset8", offset: at, value: offset / 8 })
    }
    const next = at + length + L.TRAILER_SIZE
    this.cursor = next >= this.dataSize ? next - this.dataSize : next
    return true
  }

  /** Bytes consumed since the last commit. */
  get pendingBytes(): number {
    return readable(this.cursor, this.committed, this.dataSize)
  }

  /**
   * Gives the consumed space back to the writer. Returns true when the writer must be signalled: it
   * asked for `P` bytes (feature bit set on this ring) and the free space crossed from `<= P` to `> P`.
   */
  commit(): boolean {
    if (this.cursor === this.committed) return false
    const start = this.committed
    const next = this.cursor
    Atomics.store(this.control, L.READ_INDEX_WORD, next)
    this.committed = next
    if ((Atomics.load(this.control, L.FEATURE_BITS_WORD) & L.FEATURE_PENDING_SEND_SIZE) === 0) return false
    const pending = (Atomics.load(this.control, L.PENDING_SEND_SIZE_WORD) & ~7) >>> 0 // unsigned: P >= 2^31 is "no request"
    if (pending === 0 || pending > this.dataSize - 8) return false
    const w = Atomics.load(this.control, L.WRITE_INDEX_WORD)
    // A bad write index gives no signal here; the next read reports the corruption.
    if (badIndex(w, this.dataSize)) return false
    const current = rawFree(w, next, this.dataSize)
    const freed = readable(next, start, this.dataSize)
    if (current - freed > pending) return false
    if (current <= pending) return false
    return true
  }

  /** Moves the cursor back to the last commit (packets read since then will be read again). */
  revert(): void {
    this.cursor = this.committed
    this.snapshot = undefined
  }

  /** Tells the writer not to signal (the reader is draining or polling). */
  mask(): void {
    Atomics.store(this.control, L.INTERRUPT_MASK_WORD, 1)
  }

  /**
   * Asks for a signal on the next empty→non-empty transition, then re-checks the ring. Returns true
   * when data is already there (keep reading instead of sleeping).
   */
  unmask(): boolean | RingCorrupt {
    Atomics.store(this.control, L.INTERRUPT_MASK_WORD, 0)
    const avail = this.bytesAvailable()
    if (typeof avail !== "number") return avail
    return avail > 0
  }

  /** The read index as last published by `commit`. */
  get readIndex(): number {
    return this.committed
  }
}

export interface ControlSnapshot {
  /** Bytes of the data area. */
  readonly dataSize: number
  /** The write index (offset into the data area), as stored. */
  readonly writeIndex: number
  /** The read index, as stored. */
  readonly readIndex: number
  /** Non-zero when the reader asked not to be signalled. */
  readonly interruptMask: number
  /** Free bytes the writer waits for (`pending_send_sz`); 0 when it does not wait. */
  readonly pendingSendSize: number
  /** Feature bits; bit 0 says the reader honours `pending_send_sz`. */
  readonly featureBits: number
  /** Bytes written and not yet read; undefined when an index is invalid. */
  readonly bytesToRead: number | undefined
  /** Bytes the writer may still use; undefined when an index is invalid. */
  readonly bytesFree: number | undefined
}

/** A diagnostic dump of a ring's control page (DPDK `rte_vmbus_chan_dump`). Never throws. */
export const inspect = (input: RegionInput): ControlSnapshot | InvalidParameter => {
  const r = region(input)
  if (r instanceof InvalidParameter) return r
  const w = Atomics.load(r.control, L.WRITE_INDEX_WORD)
  const rd = Atomics.load(r.control, L.READ_INDEX_WORD)
  const valid = !badIndex(w, r.dataSize) && !badIndex(rd, r.dataSize)
  return {
    dataSize: r.dataSize,
    writeIndex: w,
    readIndex: rd,
    interruptMask: Atomics.load(r.control, L.INTERRUPT_MASK_WORD),
    pendingSendSize: Atomics.load(r.control, L.PENDING_SEND_SIZE_WORD),
    featureBits: Atomics.load(r.control, L.FEATURE_BITS_WORD),
    bytesToRead: valid ? readable(w, rd, r.dataSize) : undefined,
    bytesFree: valid ? rawFree(w, rd, r.dataSize) : undefined
  }
}

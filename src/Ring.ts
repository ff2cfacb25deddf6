/**
 * The VMBus ring buffer, byte for byte as Linux, DPDK and OpenVMM lay it out: a 4096-byte control page
 * (write index, read index, interrupt mask, pending send size, feature bits) followed by a data area
 * whose size is a multiple of 4096. `OutgoingRing` writes batches of packets and decides whether the
 * reader must be signalled; `IncomingRing` reads, validates and copies packets out, and decides
 * whether the writer must be signalled. No Effect inside: a ring dump can be inspected with this module
 * alone. Control words go through `Atomics`, so the other endpoint may be another thread.
 *
 * @since 0.1.0
 */
import * as internal from "./internal/ring.js"
import * as L from "./internal/layout.js"
import { InvalidParameter } from "./VmbusError.js"

/**
 * Bytes of the control page at the start of every ring (4096).
 *
 * @since 0.1.0
 * @category constants
 */
export const CONTROL_PAGE_SIZE: number = L.CONTROL_PAGE_SIZE

/**
 * Bytes of a page (4096): ring sizes are multiples of it.
 *
 * @since 0.1.0
 * @category constants
 */
export const PAGE_SIZE: number = L.PAGE_SIZE

/**
 * Byte offsets of the control words in the control page.
 *
 * @since 0.1.0
 * @category constants
 */
export const ControlOffset = {
  writeIndex: L.WRITE_INDEX_OFFSET,
  readIndex: L.READ_INDEX_OFFSET,
  interruptMask: L.INTERRUPT_MASK_OFFSET,
  pendingSendSize: L.PENDING_SEND_SIZE_OFFSET,
  featureBits: L.FEATURE_BITS_OFFSET
} as const

/**
 * A byte region holding one ring: control page then data area.
 *
 * @since 0.1.0
 * @category models
 */
export type RegionInput = internal.RegionInput

/**
 * Options of `OutgoingRing.attach`.
 *
 * @since 0.1.0
 * @category models
 */
export type RingOptions = internal.RingOptions

/**
 * Options of `IncomingRing.attach`.
 *
 * @since 0.1.0
 * @category models
 */
export type IncomingOptions = internal.IncomingOptions

/**
 * The writer's side of a ring. `write` packets (into the batch), then `commit` once: the result says
 * whether to signal the reader. `requestSpace` / `clearSpaceRequest` drive `pending_send_sz`.
 * `writeStatus` is the form for hot paths: a full ring or a packet too large for it is a `WriteStatus`
 * number, not an error object (`ringFull(packet)` / `tooLarge(packet)` build the typed error when one
 * must reach a user); free space is checked before a byte is written.
 *
 * @since 0.1.0
 * @category models
 */
export const OutgoingRing = internal.OutgoingRing

/**
 * @since 0.1.0
 * @category models
 */
export type OutgoingRing = internal.OutgoingRing

/**
 * The reader's side of a ring. `read` / `peek` packets with a private cursor, then `commit`: the
 * result says whether to signal the writer. `mask` / `unmask` drive `interrupt_mask`. A packet's
 * payload is a view into a private copy that is never written again once a packet covering it was
 * returned, so it stays valid for as long as it is held (copies are carved out of shared 32 KiB slabs:
 * a held payload keeps its slab alive; `slice()` what you keep long).
 *
 * @since 0.1.0
 * @category models
 */
export const IncomingRing = internal.IncomingRing

/**
 * @since 0.1.0
 * @category models
 */
export type IncomingRing = internal.IncomingRing

/**
 * Results of `OutgoingRing.writeStatus`: written (in the batch, visible at `commit`), no room now
 * (nothing written; wait for space), or larger than this ring can ever hold.
 *
 * @since 0.1.0
 * @category constants
 */
export const WriteStatus = { written: internal.WRITTEN, full: internal.FULL, tooLarge: internal.TOO_LARGE } as const

/**
 * @since 0.1.0
 * @category models
 */
export type WriteStatus = internal.WriteStatus

/**
 * The result of one read: a packet, `undefined` when empty, or a typed error.
 *
 * @since 0.1.0
 * @category models
 */
export type ReadResult = internal.ReadResult

/**
 * The control page of a ring as `inspect` reads it, with the bytes to read and free derived from the indices
 * (undefined when an index is invalid).
 *
 * @since 0.1.0
 * @category models
 */
export type ControlSnapshot = internal.ControlSnapshot

/**
 * Initialises a ring in place: control page zeroed, feature bit 0 (pending send size) set, both
 * indices 0. Fails only on a region of the wrong geometry.
 *
 * @since 0.1.0
 * @category constructors
 */
export const initialize = (input: RegionInput): InvalidParameter | undefined => {
  const r = internal.region(input)
  if ("_tag" in r) return r
  internal.initialize(r)
  return undefined
}

/**
 * Allocates and initialises a ring of `ringSize` bytes (control page included; a multiple of 4096, at
 * least 8192). `shared: true` (the default) uses a `SharedArrayBuffer` so worker threads can use it.
 *
 * @since 0.1.0
 * @category constructors
 */
export const allocate = (
  ringSize: number,
  options?: { readonly shared?: boolean | undefined }
): Uint8Array | InvalidParameter => {
  if (!Number.isSafeInteger(ringSize) || ringSize < 2 * L.PAGE_SIZE || ringSize % L.PAGE_SIZE !== 0) {
    return new InvalidParameter({
      field: "ringSize",
      reason: "a ring is a multiple of 4096 bytes with at least one data page",
      value: ringSize
    })
  }
  const bytes = new Uint8Array(options?.shared === false ? new ArrayBuffer(ringSize) : new SharedArrayBuffer(ringSize))
  const problem = initialize(bytes)
  return problem ?? bytes
}

/**
 * A diagnostic dump of the control page; indices are reported even when invalid.
 *
 * @since 0.1.0
 * @category getters
 */
export const inspect: (input: RegionInput) => ControlSnapshot | InvalidParameter = internal.inspect

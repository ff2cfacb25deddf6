// Byte-level constants of the VMBus wire format (wire-format.md §0–§2). Plain values, no Effect.

/** A Hyper-V page is always 4 KiB, whatever the guest's page size. */
export const PAGE_SIZE = 4096
export const CONTROL_PAGE_SIZE = 4096

// Control page word offsets (bytes) and their u32 word indices.
export const WRITE_INDEX_OFFSET = 0x000
export const READ_INDEX_OFFSET = 0x004
export const INTERRUPT_MASK_OFFSET = 0x008
export const PENDING_SEND_SIZE_OFFSET = 0x00c
export const FEATURE_BITS_OFFSET = 0x040

export const WRITE_INDEX_WORD = WRITE_INDEX_OFFSET / 4
export const READ_INDEX_WORD = READ_INDEX_OFFSET / 4
export const INTERRUPT_MASK_WORD = INTERRUPT_MASK_OFFSET / 4
export const PENDING_SEND_SIZE_WORD = PENDING_SEND_SIZE_OFFSET / 4
export const FEATURE_BITS_WORD = FEATURE_BITS_OFFSET / 4

export const FEATURE_PENDING_SEND_SIZE = 1

export const TRAILER_SIZE = 8
export const DESCRIPTOR_SIZE = 16
/** `len8` is a u16, so the largest packet (trailer excluded) is 65535 × 8 bytes. */
export const MAX_PACKET_LENGTH = 0xffff * 8

export const FLAG_COMPLETION_REQUESTED = 0x1

export const PACKET_TYPE_IN_BAND = 0x6
export const PACKET_TYPE_TRANSFER_PAGES = 0x7
export const PACKET_TYPE_GPA_DIRECT = 0x9
export const PACKET_TYPE_COMPLETION = 0xb

/** Size of the transfer-page and GPA-direct sub-headers that follow the descriptor. */
export const EXTENDED_HEADER_SIZE = 8
export const TRANSFER_PAGE_RANGE_SIZE = 8
export const GPA_RANGE_HEADER_SIZE = 8
export const PFN_SIZE = 8

/** Largest byte offset a GPA range may start at inside its first page. */
export const MAX_GPA_BYTE_OFFSET = 0xfff

/** Rounds up to a multiple of 8; exact up to 2^53 (a bitmask form would overflow at 2^31). */
export const align8Safe = (n: number): number => Math.ceil(n / 8) * 8

export const pageCount = (byteOffset: number, byteCount: number): number =>
  Math.ceil((byteOffset + byteCount) / PAGE_SIZE)

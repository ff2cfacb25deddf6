/**
 * An incoming packet: the receive-side handle KMCL passes to `EvtVmbChannelProcessPacket`. It ends with
 * exactly one terminal action — `complete` or `fail` — and if its owner lets go without one it is
 * completed automatically with the channel's failure payload, so the sender is never left hanging:
 * `take` hands it out as a scoped resource, `serve` owns it for the handler's run, and the `packets`
 * stream owns it until the consumer pulls the next packet.
 *
 * @since 0.1.0
 */
import type * as Effect from "effect/Effect"
import type * as Either from "effect/Either"
import type * as Option from "effect/Option"
import * as Predicate from "effect/Predicate"
import type * as Packet from "./Packet.js"
import type {
  ChannelClosed,
  ExternalDataUnavailable,
  GpadlUnavailable,
  GpadlWriteMapOfReadOnly,
  InvalidMemoryRange,
  PacketAlreadyCompleted,
  PacketTooLarge
} from "./VmbusError.js"

/**
 * Brands `IncomingPacket` values (see `isIncomingPacket`).
 *
 * @since 0.1.0
 * @category symbols
 */
export const TypeId: unique symbol = Symbol.for("effect-vmbus/IncomingPacket")

/**
 * @since 0.1.0
 * @category symbols
 */
export type TypeId = typeof TypeId

/**
 * `pending` until a terminal action: `completed` by the receiver, `autoCompleted` with the failure
 * payload (handler failed, died, was interrupted, or the scope closed first; or forced at close),
 * `failed` by `fail` (KMCL `VmbChannelPacketFail`: no completion; the queue stops).
 *
 * @since 0.1.0
 * @category models
 */
export type Disposition = "pending" | "completed" | "autoCompleted" | "failed"

/**
 * A packet received on a channel, owned by its consumer until it is completed: exactly one of `complete` or
 * `fail` ends it, and if neither happens before its scope closes it is completed with the channel's failure
 * payload.
 *
 * @since 0.1.0
 * @category models
 */
export interface IncomingPacket {
  readonly [TypeId]: TypeId
  /**
   * The decoded packet (a private copy, taken out of the ring before parsing). `Unknown` packets (and
   * packets with unknown flag bits, see `flags`) reach consumers only on a channel opened with
   * `unknownPackets: "deliver"`.
   */
  readonly packet: Packet.InBandPacket | Packet.TransferPagesPacket | Packet.GpaDirectPacket | Packet.UnknownPacket
  /** The packet kind: in-band payload, transfer-page ranges, GPA-direct ranges, or a type not interpreted. */
  readonly kind: "InBand" | "TransferPages" | "GpaDirect" | "Unknown"
  /** The payload, zero padding included (the wire has no exact length; protocols carry their own). */
  readonly payload: Uint8Array
  /** `Some(id)` only when the sender asked for a completion. */
  readonly transactionId: Option.Option<bigint>
  /** Whether the sender asked for a completion (a request): then `complete` sends one. */
  readonly completionRequested: boolean
  /**
   * Ends processing. A completion packet carrying `payload` is sent only if the sender asked for one
   * (exactly what `VmbChannelPacketComplete` does). A second terminal action is `PacketAlreadyCompleted`.
   */
  readonly complete: (
    payload?: Uint8Array
  ) => Effect.Effect<void, PacketAlreadyCompleted | ChannelClosed | PacketTooLarge>
  /**
   * Fails the packet as unrecoverable (`VmbChannelPacketFail`): no completion is sent, the packet
   * stops counting against the quota, and the channel's incoming queue ends with `MalformedPacket`.
   */
  readonly fail: (reason: string) => Effect.Effect<void, PacketAlreadyCompleted>
  /** The current disposition. */
  readonly disposition: Effect.Effect<Disposition>
  /**
   * The external data of a GPA-direct or transfer-page packet, one buffer per range. The views read
   * and write the sender's memory and work only while the packet is pending, the channel's open period
   * lasts and (transfer pages) the set stays registered: afterwards they fail with
   * `ExternalDataUnavailable` (KMCL: the MDL becomes invalid at `VmbChannelPacketComplete`; the peer
   * may reuse its pages once it closed).
   */
  readonly externalData: Effect.Effect<ReadonlyArray<ExternalBuffer>, ExternalDataUnavailable>
}

/**
 * One range of external data.
 *
 * @since 0.1.0
 * @category models
 */
export interface ExternalBuffer {
  /** The length of the range in bytes. */
  readonly byteLength: number
  /** Copies `length` bytes from `offset` (defaults: the whole range). */
  readonly read: (
    offset?: number,
    length?: number
  ) => Either.Either<Uint8Array, ExternalDataUnavailable | InvalidMemoryRange | GpadlUnavailable>
  /** Writes `data` at `offset` into the range (the sender's memory), when the range is writable. */
  readonly write: (
    offset: number,
    data: Uint8Array
  ) => Either.Either<void, ExternalDataUnavailable | InvalidMemoryRange | GpadlUnavailable | GpadlWriteMapOfReadOnly>
}

/**
 * Tells whether a value is an `IncomingPacket`.
 *
 * @since 0.1.0
 * @category refinements
 */
export const isIncomingPacket = (u: unknown): u is IncomingPacket => Predicate.hasProperty(u, TypeId)

// External data of a channel: the views of incoming packets' GPA ranges and transfer pages, transfer page
// sets, and GPADLs (created by a client, mapped by a server).
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import type * as Scope from "effect/Scope"
import type { GuestBuffer } from "../GuestMemory.js"
import type * as IncomingPacketNs from "../IncomingPacket.js"
import type * as PacketNs from "../Packet.js"
import type * as Transport from "../Transport.js"
import {
  ChannelClosed,
  ExternalDataUnavailable,
  type GpadlUnavailable,
  type GpadlWriteMapOfReadOnly,
  InvalidMemoryRange,
  InvalidParameter,
  MalformedPacket,
  Unsupported
} from "../VmbusError.js"
import type { ChannelConfig, ExternalRange, ExternalSource, OpenedChannel } from "./channelConfig.js"
import type { ChannelCore } from "./channelCore.js"
import type { PacketHandle } from "./incoming.js"
import * as P from "./packet.js"
import type { View } from "./views.js"

/** A guest buffer, as opposed to a GPA range or a GPADL view. */
export const isGuestBuffer = (u: GuestBuffer | ExternalRange | ExternalSource): u is GuestBuffer =>
  "firstPfn" in u && "bytes" in u

/** A released guest buffer named by the caller: its pages may already be someone else's. */
export const released = (field: string, buffer: GuestBuffer): InvalidParameter =>
  new InvalidParameter({ field, reason: "the guest buffer was released (its scope closed)", value: buffer.firstPfn })

/** External data, GPADLs and transfer page sets of one channel. */
export class ExternalData {
  private readonly config: ChannelConfig
  private readonly endpoint: Transport.Endpoint

  constructor(private readonly core: ChannelCore) {
    this.config = core.config
    this.endpoint = core.endpoint
  }

  /** Registered sets; `view` dies at unregistration (or with the open period), ending every packet view of it. */
  private readonly transferPageSets = new Map<number, { readonly source: ExternalSource; readonly view: View }>()

  readonly registerTransferPageSet = (id: number, buffer: ExternalSource): Effect.Effect<void, InvalidParameter, Scope.Scope> =>
    Effect.acquireRelease(
      Effect.suspend(() => {
        if (!Number.isInteger(id) || id < 0 || id > 0xffff) {
          return Effect.fail(new InvalidParameter({ field: "transferPageSetId", reason: "must be a u16", value: id }))
        }
        if (this.transferPageSets.has(id)) {
          return Effect.fail(new InvalidParameter({ field: "transferPageSetId", reason: "already registered", value: id }))
        }
        // A guest buffer backing the set stays allocated while registered.
        const memory = this.endpoint.memory
        if (isGuestBuffer(buffer) && memory !== undefined && !memory.isLive(buffer)) {
          return Effect.fail(released("buffer", buffer))
        }
        const registration = { source: buffer, view: this.core.views.make() }
        this.transferPageSets.set(id, registration)
        return Effect.succeed({ registration, unpin: isGuestBuffer(buffer) && memory !== undefined ? memory.pin(buffer) : undefined })
      }),
      ({ registration, unpin }) =>
        Effect.sync(() => {
          if (this.transferPageSets.get(id) === registration) this.transferPageSets.delete(id)
          // Views first: no packet reads the buffer once its pin may be gone.
          this.core.views.revoke(registration.view)
          unpin?.()
        })
    ).pipe(Effect.asVoid)

  readonly createGpadl: OpenedChannel["createGpadl"] = (range, options) =>
    Effect.suspend((): ReturnType<OpenedChannel["createGpadl"]> => {
      const create = this.endpoint.createGpadl
      if (create === undefined) {
        return Effect.fail(new Unsupported({ capability: "createGpadl", reason: `not available on a ${this.core.role} endpoint of this transport` }))
      }
      return create(range, options)
    })

  readonly mapGpadl: OpenedChannel["mapGpadl"] = (handle, options) =>
    Effect.suspend((): ReturnType<OpenedChannel["mapGpadl"]> => {
      const map = this.endpoint.mapGpadl
      if (map === undefined) {
        return Effect.fail(new Unsupported({ capability: "mapGpadl", reason: `not available on a ${this.core.role} endpoint of this transport` }))
      }
      // A mapping belongs to this open period: after it, the relid may already name the next one's GPADLs.
      if (this.core.closeReason !== undefined) return Effect.fail(new ChannelClosed({ reason: this.core.closeReason }))
      return map(handle, options)
    })

  /** Why the external data of a just-read packet is unacceptable, or undefined. */
  checkExternal(packet: PacketNs.Packet): MalformedPacket | undefined {
    if (packet._tag === "GpaDirect") {
      const problem = P.validateGpaRanges(packet.ranges)
      if (problem !== undefined) return problem
      if (packet.ranges.length > this.config.maxExternalPages) {
        return new MalformedPacket({ reason: "too many GPA ranges", field: "range_cnt", value: packet.ranges.length })
      }
      let pages = 0
      const memory = this.endpoint.memory
      for (let i = 0; i < packet.ranges.length; i++) {
        const range = packet.ranges[i]!
        pages += range.pfns.length
        if (memory === undefined) continue
        for (const pfn of range.pfns) {
          if (!memory.isAllocated(pfn)) {
            return new MalformedPacket({ reason: "GPA range names a page outside guest memory", field: `gpa_range[${i}]`, value: pfn })
          }
        }
      }
      if (pages > this.config.maxExternalPages) {
        return new MalformedPacket({ reason: "external data larger than maxExternalPages", field: "pfn_array", value: pages })
      }
      return undefined
    }
    if (packet._tag === "TransferPages") {
      const set = this.transferPageSets.get(packet.transferPageSetId)
      if (set === undefined) {
        return new MalformedPacket({ reason: "unknown transfer page set", field: "xfer_pageset_id", value: packet.transferPageSetId })
      }
      const size = set.source.byteLength
      for (let i = 0; i < packet.ranges.length; i++) {
        const range = packet.ranges[i]!
        if (range.byteOffset + range.byteCount > size) {
          return new MalformedPacket({ reason: "transfer range outside the transfer page set", field: `ranges[${i}]`, value: range.byteOffset })
        }
      }
    }
    return undefined
  }

  /** Views of a packet's external data, usable only while the packet is pending. */
  externalData(handle: PacketHandle): Effect.Effect<ReadonlyArray<IncomingPacketNs.ExternalBuffer>, ExternalDataUnavailable> {
    return Effect.suspend(() => {
      if (handle.state !== "pending") {
        return Effect.fail(new ExternalDataUnavailable({ reason: "the packet is completed" }))
      }
      if (this.core.closeReason !== undefined) {
        return Effect.fail(new ExternalDataUnavailable({ reason: "the channel's open period ended" }))
      }
      const packet = handle.packet
      if (packet._tag !== "GpaDirect" && packet._tag !== "TransferPages") {
        return Effect.fail(new ExternalDataUnavailable({ reason: "the packet carries no external data" }))
      }
      // One view per packet, owned by the channel: checked at every access, revoked at release or when
      // the open period ends (the peer may free the pages then).
      const view = handle.views ??= this.core.views.make()
      const gone = () =>
        Either.left(
          new ExternalDataUnavailable({
            reason: handle.state !== "pending" ? "the packet is completed" : "the channel's open period ended"
          })
        )
      const outside = (offset: number, length: number, size: number) =>
        !Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > size
      if (packet._tag === "GpaDirect") {
        const memory = this.endpoint.memory
        if (memory === undefined) return Effect.fail(new ExternalDataUnavailable({ reason: "the transport gives no access to guest memory" }))
        return Effect.succeed(packet.ranges.map((range): IncomingPacketNs.ExternalBuffer => ({
          byteLength: range.byteCount,
          read: (offset = 0, length = range.byteCount - offset) => {
            if (handle.state !== "pending" || !view.live) return gone()
            if (outside(offset, length, range.byteCount)) return Either.left(new InvalidMemoryRange({ reason: "outside the range", offset, length }))
            return memory.readSync(range.pfns, range.byteOffset + offset, length)
          },
          write: (offset, data) => {
            if (handle.state !== "pending" || !view.live) return gone()
            if (outside(offset, data.length, range.byteCount)) {
              return Either.left(new InvalidMemoryRange({ reason: "outside the range", offset, length: data.length }))
            }
            return memory.writeSync(range.pfns, range.byteOffset + offset, data)
          }
        })))
      }
      {
        const registration = this.transferPageSets.get(packet.transferPageSetId)
        if (registration === undefined || !registration.view.live) {
          return Effect.fail(new ExternalDataUnavailable({ reason: "transfer page set no longer registered" }))
        }
        const set = registration.source
        const unregistered = () => Either.left(new ExternalDataUnavailable({ reason: "transfer page set no longer registered" }))
        const readSet = (offset: number, length: number): Either.Either<Uint8Array, InvalidMemoryRange | GpadlUnavailable> =>
          isGuestBuffer(set) ? Either.right(set.bytes.slice(offset, offset + length)) : set.read(offset, length)
        const writeSet = (
          offset: number,
          data: Uint8Array
        ): Either.Either<void, InvalidMemoryRange | GpadlUnavailable | GpadlWriteMapOfReadOnly> => {
          if (isGuestBuffer(set)) {
            set.bytes.set(data, offset)
            return Either.right(undefined)
          }
          return set.write(offset, data)
        }
        return Effect.succeed(packet.ranges.map((range): IncomingPacketNs.ExternalBuffer => ({
          byteLength: range.byteCount,
          read: (offset = 0, length = range.byteCount - offset) => {
            if (handle.state !== "pending" || !view.live) return gone()
            if (!registration.view.live) return unregistered()
            if (outside(offset, length, range.byteCount)) return Either.left(new InvalidMemoryRange({ reason: "outside the range", offset, length }))
            return readSet(range.byteOffset + offset, length)
          },
          write: (offset, data) => {
            if (handle.state !== "pending" || !view.live) return gone()
            if (!registration.view.live) return unregistered()
            if (outside(offset, data.length, range.byteCount)) {
              return Either.left(new InvalidMemoryRange({ reason: "outside the range", offset, length: data.length }))
            }
            return writeSet(range.byteOffset + offset, data)
          }
        })))
      }
    })
  }
}

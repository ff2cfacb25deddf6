// The ring's hot-path details (issue 9, item 5): the reader carves its private snapshots out of slabs
// instead of allocating one per refill, and no byte a returned packet covers is ever written again
// (kmcl-model C7: a payload is valid for as long as its holder keeps it); the writer reports "full"
// and "too large" as sentinels, the typed errors being built only for the public `write` API.
import { describe, expect, it } from "@effect/vitest"
import * as Packet from "../src/Packet.js"
import * as Ring from "../src/Ring.js"
import { PacketTooLarge, RingCorrupt, RingFull } from "../src/VmbusError.js"

const PAGE = 4096
const { full: FULL, tooLarge: TOO_LARGE, written: WRITTEN } = Ring.WriteStatus

const setup = (dataPages: number) => {
  const region = Ring.allocate(PAGE * (dataPages + 1))
  if (!(region instanceof Uint8Array)) throw new Error(region.message)
  const writer = Ring.OutgoingRing.attach(region)
  const reader = Ring.IncomingRing.attach(region, { maxPacketLength: 16 * 1024 })
  if (!(writer instanceof Ring.OutgoingRing) || !(reader instanceof Ring.IncomingRing)) throw new Error("attach failed")
  return { region, writer, reader }
}

/** The payload of packet number `k`: its bytes are a function of `k`, so a later rewrite shows. */
const payloadOf = (k: number, length: number): Uint8Array => {
  const bytes = new Uint8Array(length)
  for (let i = 0; i < length; i++) bytes[i] = (k * 131 + i * 7 + 1) & 0xff
  return bytes
}

const packetOf = (k: number, length: number, kind: number): Packet.Packet => {
  const payload = payloadOf(k, length)
  const transactionId = BigInt(k)
  switch (kind) {
    case 0:
      return { _tag: "Unknown", type: 0x20, transactionId, completionRequested: false, header: payloadOf(k + 1, 8), payload }
    case 1:
      return {
        _tag: "TransferPages",
        transactionId,
        completionRequested: true,
        transferPageSetId: 3,
        senderOwnsSet: false,
        ranges: [{ byteCount: k, byteOffset: 8 }],
        payload
      }
    default:
      return { _tag: "InBand", transactionId, completionRequested: false, payload }
  }
}

interface Held {
  readonly k: number
  readonly length: number
  readonly packet: Packet.Packet
}

/** The payload (zero padding after the sent bytes) and the unknown packet's header are those sent. */
const intact = (held: Held): boolean => {
  const { k, length, packet } = held
  if (packet.transactionId !== BigInt(k)) return false
  const expected = payloadOf(k, length)
  const payload = packet.payload
  if (payload.length < length || payload.length > length + 7) return false
  for (let i = 0; i < payload.length; i++) if (payload[i] !== (i < length ? expected[i] : 0)) return false
  if (packet._tag === "Unknown") {
    const header = payloadOf(k + 1, 8)
    for (let i = 0; i < 8; i++) if (packet.header[i] !== header[i]) return false
  }
  return true
}

/** xorshift32: a small deterministic generator, so every failure replays. */
const generator = (seed: number) => {
  let state = seed >>> 0 || 1
  return (n: number): number => {
    state ^= state << 13
    state ^= state >>> 17
    state ^= state << 5
    return (state >>> 0) % n
  }
}

describe("reader snapshots carved from slabs", () => {
  it("payloads held across thousands of refills keep their bytes; refills share slabs", () => {
    const { reader, writer } = setup(1)
    const held: Array<Held> = []
    for (let k = 1; k <= 2000; k++) {
      expect(writer.write(packetOf(k, 64, 2))).toBeUndefined()
      writer.commit()
      const packet = reader.read()
      if (packet === undefined || !("payload" in packet)) throw new Error(`read ${k}: ${String(packet)}`)
      held.push({ k, length: 64, packet })
      reader.commit()
      reader.discardCopy() // the next read refills
    }
    expect(held.filter((h) => !intact(h)).map((h) => h.k)).toEqual([])
    // One allocation per refill would give 2000 buffers; 2000 × 88 bytes fit in a couple of dozen 8 KiB slabs.
    const buffers = new Set(held.map((h) => h.packet.payload.buffer))
    expect(buffers.size).toBeLessThan(2000 / 50)
  })

  it("a peeked packet is never overwritten: the next refill writes past it", () => {
    const { reader, writer } = setup(16)
    expect(writer.write(packetOf(1, 100, 2))).toBeUndefined()
    expect(writer.write(packetOf(2, 100, 2))).toBeUndefined()
    writer.commit()
    const peeked = reader.peek()
    if (peeked === undefined || !("payload" in peeked)) throw new Error("peek")
    // The copy is dropped before the packet is consumed: the next refill copies it again, elsewhere.
    reader.discardCopy()
    const held: Array<Held> = [{ k: 1, length: 100, packet: peeked }]
    const lengthOf = (k: number): number => (k < 3 ? 100 : 40 + (k % 50))
    let k = 1
    for (let round = 0; round < 100; round++) {
      const last = (round + 1) * 40
      for (let w = Math.max(3, last - 39); w <= last; w++) {
        expect(writer.write(packetOf(w, lengthOf(w), 2))).toBeUndefined()
      }
      writer.commit()
      for (; k <= last; k++) {
        const packet = reader.read()
        if (packet === undefined || !("payload" in packet)) throw new Error(`read ${k}`)
        held.push({ k, length: lengthOf(k), packet })
        if (k % 7 === 0) {
          reader.commit()
          reader.discardCopy()
        }
      }
      reader.commit()
      if (round === 0) {
        // Packet 1 read again: same slab, after the peeked copy.
        expect(held[1]!.packet.payload.buffer).toBe(peeked.payload.buffer)
        expect(held[1]!.packet.payload.byteOffset).toBeGreaterThan(peeked.payload.byteOffset)
      }
    }
    expect(reader.read()).toBeUndefined()
    expect(held.length).toBe(4001)
    expect(held.filter((h) => !intact(h)).map((h) => h.k)).toEqual([])
  })

  it("property: reads, peeks, dropped copies, reverts and partial batches never change a held packet", () => {
    // Ring sizes: smaller and larger than a slab, and larger than one snapshot (capped copies, packets of their own).
    for (const [seed, dataPages] of [[1, 2], [2, 5], [3, 12], [4, 20], [5, 20], [6, 3]] as const) {
      const random = generator(seed * 7919)
      const { reader, writer } = setup(dataPages)
      const held: Array<Held> = []
      const lengths = new Map<number, number>()
      let written = 1 // next k to write
      let next = 1 // k at the reader's cursor
      let committed = 1 // k at the reader's last commit
      for (let step = 0; step < 3000; step++) {
        const op = random(10)
        if (op < 3) {
          const count = 1 + random(12)
          for (let i = 0; i < count; i++) {
            const length = random(8) === 0 ? 1000 + random(6000) : random(300)
            const status = writer.writeStatus(packetOf(written, length, random(8)))
            if (typeof status !== "number") throw new Error(status.message)
            if (status === FULL) break
            expect(status).toBe(WRITTEN)
            lengths.set(written, length)
            written++
          }
          writer.commit()
        } else if (op < 7) {
          const packet = op === 6 ? reader.peek() : reader.read()
          if (packet === undefined) {
            expect(next).toBe(written)
            continue
          }
          if ("reason" in packet || "required" in packet) throw new Error(packet.message)
          held.push({ k: next, length: lengths.get(next)!, packet })
          if (op !== 6) next++
        } else if (op === 7) {
          reader.commit()
          committed = next
        } else if (op === 8) {
          reader.discardCopy()
        } else {
          reader.revert()
          next = committed
        }
      }
      const broken = held.filter((h) => !intact(h)).map((h) => h.k)
      expect({ seed, broken }).toEqual({ seed, broken: [] })
      expect(held.length).toBeGreaterThan(500)
    }
  })
})

describe("writer sentinels", () => {
  it("a full ring is FULL with nothing written; ringFull() is what writeValidated reports", () => {
    const { region, writer } = setup(1)
    const big = packetOf(1, 3000, 2)
    expect(writer.writeStatus(big)).toBe(WRITTEN)
    const pending = writer.pendingBytes
    const second = packetOf(2, 2000, 2)
    expect(writer.writeStatus(second)).toBe(FULL)
    expect(writer.pendingBytes).toBe(pending)
    const error = writer.ringFull(second)
    expect(error).toBeInstanceOf(RingFull)
    expect(error.required).toBe(Packet.ringSize(second))
    expect(error.available).toBe(4096 - pending)
    expect(writer.writeValidated(second)).toEqual(error)
    expect(writer.commit()).toBe(true)
    expect(Ring.inspect(region)).toMatchObject({ writeIndex: pending })
  })

  it("a packet that can never fit is TOO_LARGE; tooLarge() is what writeValidated reports", () => {
    const { writer } = setup(1)
    const huge = packetOf(1, 4096, 2)
    expect(writer.writeStatus(huge)).toBe(TOO_LARGE)
    expect(writer.pendingBytes).toBe(0)
    const error = writer.tooLarge(huge)
    expect(error).toBeInstanceOf(PacketTooLarge)
    expect(error).toMatchObject({ size: Packet.ringSize(huge), max: 4096 - 8 })
    expect(writer.writeValidated(huge)).toEqual(error)
  })

  it("a corrupt read index is still a typed RingCorrupt", () => {
    const { region, writer } = setup(1)
    new DataView(region.buffer, region.byteOffset, PAGE).setUint32(4, 13, true)
    const status = writer.writeStatus(packetOf(1, 8, 2))
    expect(status).toBeInstanceOf(RingCorrupt)
    expect(status).toMatchObject({ field: "read_index", value: 13 })
  })
})

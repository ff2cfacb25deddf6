/**
 * The ring layer alone — no Effect, no channel, no transport: write packets into a ring, take a
 * copy of its bytes (as you would read a dump from a file or a crashed guest's memory), and decode
 * the dump: the control page, then every unread packet. Each operation returns a typed error as a
 * value instead of throwing, so results are narrowed before use.
 */
import { Packet, Ring, VmbusError } from "effect-vmbus"

// A ring of 3 pages: the control page and 8 KiB of data. `shared: false` uses a plain ArrayBuffer.
const ring = Ring.allocate(3 * Ring.PAGE_SIZE, { shared: false })
if (VmbusError.isVmbusError(ring)) throw ring

const writer = Ring.OutgoingRing.attach(ring)
if (!(writer instanceof Ring.OutgoingRing)) throw writer // InvalidParameter | RingCorrupt
for (const [i, text] of ["first", "second", "third"].entries()) {
  const problem = writer.write(
    Packet.inBand(new TextEncoder().encode(text), { transactionId: BigInt(i + 1), completionRequested: true })
  )
  if (problem !== undefined) throw problem // RingFull | RingCorrupt | PacketTooLarge | InvalidParameter
}
writer.write(Packet.completion(7n, Uint8Array.of(0, 0, 0, 0)))
const signalReader = writer.commit() // one publish for the batch: does the reader need a signal?
console.log(`published 4 packets; signal the reader: ${signalReader}`)

// The dump: a private copy of the ring's bytes.
const dump = ring.slice()

const control = Ring.inspect(dump)
if (VmbusError.isVmbusError(control)) throw control
console.log(
  `control page: write index ${control.writeIndex}, read index ${control.readIndex}, ` +
    `${control.bytesToRead} bytes to read, ${control.bytesFree} free, data area ${control.dataSize} bytes`
)

const reader = Ring.IncomingRing.attach(dump)
if (!(reader instanceof Ring.IncomingRing)) throw reader
for (;;) {
  const packet = reader.read()
  if (packet === undefined) break // no more packets
  if (VmbusError.isVmbusError(packet)) throw packet // RingCorrupt | BufferTooSmall: the dump is damaged
  const text = packet._tag === "InBand" ? ` "${new TextDecoder().decode(packet.payload).replace(/\0+$/, "")}"` : ""
  console.log(`${packet._tag} transaction ${packet.transactionId}, ${packet.payload.length} payload bytes${text}`)
}

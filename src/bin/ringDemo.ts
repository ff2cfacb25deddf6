/**
 * The `ring` command: one ring written and read in this process, showing the bytes, the indices and
 * the signal decisions (wire-format.md §3).
 */
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Packet from "../Packet.js"
import * as Ring from "../Ring.js"

const hex = (bytes: Uint8Array): string =>
  Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(" ").replace(/(.{23}) /g, "$1  ")

export const run = Effect.gen(function*() {
  const region = Ring.allocate(8192, { shared: true })
  if (!(region instanceof Uint8Array)) return yield* Effect.fail(region)
  const writer = Ring.OutgoingRing.attach(region)
  const reader = Ring.IncomingRing.attach(region)
  if (!(writer instanceof Ring.OutgoingRing) || !(reader instanceof Ring.IncomingRing)) return
  const show = (label: string) => {
    const c = Ring.inspect(region)
    return Console.log(
      `${label.padEnd(44)} write_index 0x${"writeIndex" in c ? c.writeIndex.toString(16) : "?"}  read_index 0x${
        "readIndex" in c ? c.readIndex.toString(16) : "?"
      }  mask ${"interruptMask" in c ? c.interruptMask : "?"}  pending_send_sz ${"pendingSendSize" in c ? c.pendingSendSize : "?"}`
    )
  }
  yield* Console.log("A 4 KiB-data ring (8 KiB with its control page), written and read in this process.\n")
  yield* show("initialised")
  writer.write(Packet.inBand(new Uint8Array([1, 2, 3, 4, 5]), { transactionId: 0x1122334455667788n, completionRequested: true }))
  const signal1 = writer.commit()
  yield* show("wrote TV1 (in-band, 5 bytes, completion requested)")
  yield* Console.log(`  bytes at data+0x00: ${hex(region.subarray(4096, 4096 + 32))}`)
  yield* Console.log(`  signal the reader? ${signal1} (ring went empty → non-empty with the mask clear)`)
  writer.write(Packet.inBand(new Uint8Array(100)))
  yield* Console.log(`  a second commit while unread data is pending: signal? ${writer.commit()}`)
  reader.mask()
  const first = reader.read()
  const second = reader.read()
  yield* Console.log(
    `  reader got ${[first, second].map((p) => (p && "_tag" in p ? `${p._tag}(${"payload" in p ? p.payload.length : 0} bytes)` : String(p))).join(", ")}`
  )
  yield* Console.log(`  reader commit: signal the writer? ${reader.commit()} (no pending_send_sz request)`)
  yield* show("after reading both")
  yield* Console.log(`  unmask and re-check: data waiting? ${reader.unmask()}`)
  // Fill the ring to show the never-full rule and the pending-send-size protocol.
  let written = 0
  for (;;) {
    const result = writer.write(Packet.inBand(new Uint8Array(1000)))
    if (result !== undefined) {
      yield* Console.log(`  wrote ${written} × 1000-byte packets, then: ${result.message}`)
      break
    }
    written++
  }
  writer.commit()
  const fits = writer.requestSpace(Packet.inBandRingSize(1000))
  yield* show(`writer asks for space (fits now: ${fits})`)
  reader.read()
  yield* Console.log(`  reader frees one packet: signal the writer? ${reader.commit()}`)
  reader.read()
  yield* Console.log(`  reader frees another: signal the writer? ${reader.commit()} (threshold crossed once)`)
  writer.clearSpaceRequest()
  yield* show("writer withdraws its request")
})

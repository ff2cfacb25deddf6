/**
 * A GPADL: the guest shares a buffer of its own pages with the host, names it by a handle in a
 * message of its protocol, and the host maps it and reads (or writes) the pages directly — no copy
 * through the ring. Both the GPADL and the mapping are scoped: closing a scope tears them down, and
 * the teardown waits until the host no longer has the pages mapped.
 */
import { Effect } from "effect"
import { Channel, Gpadl, GuestMemory, InMemoryTransport } from "effect-vmbus"

const TYPE = "0e0b6031-5213-4934-818b-38d90ced39db"
const INSTANCE = "2a1f8c3e-5b7d-4e9a-8c6f-1d3b5a7c9e0f"

// The host reads a buffer the guest describes in a request: `u32 handle, u32 length`.
const describe = (handle: number, length: number) => {
  const bytes = new Uint8Array(8)
  const view = new DataView(bytes.buffer)
  view.setUint32(0, handle, true)
  view.setUint32(4, length, true)
  return bytes
}

const program = Effect.gen(function*() {
  yield* Effect.forkScoped(
    Effect.gen(function*() {
      const server = yield* Channel.open({ role: "server", interfaceType: TYPE, interfaceInstance: INSTANCE })
      yield* server.serveScoped((packet) =>
        Effect.gen(function*() {
          const view = new DataView(packet.payload.buffer, packet.payload.byteOffset, packet.payload.byteLength)
          const handle = view.getUint32(0, true)
          const length = view.getUint32(4, true)
          // Scoped to this packet: the mapping is revoked when the handler returns.
          const mapping = yield* Gpadl.map(server, handle)
          const bytes = yield* mapping.read(0, length)
          // Answer with a checksum of what the host saw, and write a reply into the guest's pages.
          const sum = bytes.reduce((acc, byte) => (acc + byte) & 0xffff, 0)
          yield* mapping.write(length, new TextEncoder().encode("seen by the host"))
          return Uint8Array.of(sum & 0xff, sum >> 8)
        })
      )
    }).pipe(Effect.scoped)
  )

  const client = yield* Channel.open({ role: "client", interfaceType: TYPE })
  // Guest pages come from GuestMemory (provided by the transport's layer); 4 pages = 16 KiB.
  const buffer = yield* GuestMemory.allocate(4)
  for (let i = 0; i < 10_000; i++) buffer.bytes[i] = i % 251
  const gpadl = yield* Gpadl.create(client, buffer)
  const reply = yield* client.request(describe(gpadl.handle, 10_000), { timeout: "5 seconds" })
  const note = new TextDecoder().decode(buffer.bytes.subarray(10_000, 10_016))
  return { handle: gpadl.handle, pages: buffer.pages, checksum: reply[0]! | (reply[1]! << 8), note }
}).pipe(Effect.scoped, Effect.provide(InMemoryTransport.layer))

const result = await Effect.runPromise(program)
let expected = 0
for (let i = 0; i < 10_000; i++) expected = (expected + (i % 251)) & 0xffff
if (result.checksum !== expected) throw new Error(`checksum ${result.checksum}, expected ${expected}`)
console.log(`GPADL 0x${result.handle.toString(16)} over ${result.pages} pages`)
console.log(`host checksum: ${result.checksum} (matches)`)
console.log(`guest reads: ${result.note}`)

/**
 * A typed device protocol: message layouts as `BinarySchema` structs (each is an Effect
 * `Schema<Type, Uint8Array>`), grouped by `Protocol.make`; the client sends typed requests with
 * `Protocol.request`, the server answers with typed handlers through `Protocol.serve`.
 */
import { Effect } from "effect"
import { BinarySchema, Channel, InMemoryTransport, Protocol } from "effect-vmbus"

const TYPE = "3375baf4-9e15-4b30-b765-67acb10d607b"
const INSTANCE = "c7fb7bca-e1c6-4f3c-9a3c-6f1f0e7a5b21"

// Little-endian layouts, as a C header would declare them.
const AddRequest = BinarySchema.struct({
  a: BinarySchema.u32,
  b: BinarySchema.u32
})
const AddResponse = BinarySchema.struct({ sum: BinarySchema.u64 })
const Describe = BinarySchema.struct({
  id: BinarySchema.guid,
  name: BinarySchema.utf16(32) // 32 bytes, UTF-16LE, NUL-padded
})

const Calculator = Protocol.make("Calculator", {
  add: { id: 1, request: AddRequest, response: AddResponse },
  describe: { id: 2, request: Describe } // one-way: no response schema
})

const program = Effect.gen(function*() {
  const described: Array<string> = []
  yield* Effect.forkScoped(
    Effect.gen(function*() {
      const server = yield* Channel.open({ role: "server", interfaceType: TYPE, interfaceInstance: INSTANCE })
      yield* Protocol.serve(server, Calculator, {
        add: ({ a, b }) => Effect.succeed({ sum: BigInt(a) + BigInt(b) }),
        describe: ({ id, name }) => Effect.sync(() => void described.push(`${name} (${id})`))
      })
    }).pipe(Effect.scoped)
  )

  const client = yield* Channel.open({ role: "client", interfaceType: TYPE })
  const { sum } = yield* Protocol.request(client, Calculator, "add", { a: 0xffff_ffff, b: 1 })
  // `request` also works for one-way messages: it waits for the (empty) completion.
  yield* Protocol.request(client, Calculator, "describe", { id: INSTANCE, name: "calculator" })

  // A value that does not fit its field is a typed error naming the field, before anything is sent.
  const refused = yield* Protocol.request(client, Calculator, "add", { a: -1, b: 0 }).pipe(Effect.flip)
  return { sum, described, refused: refused._tag }
}).pipe(Effect.scoped, Effect.provide(InMemoryTransport.layer))

const result = await Effect.runPromise(program)
console.log(`sum: ${result.sum}`)
console.log(`described: ${result.described.join(", ")}`)
console.log(`refused: ${result.refused}`)

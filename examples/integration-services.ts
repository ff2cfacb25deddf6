/**
 * Hyper-V integration services on both sides: `IntegrationServices.guest` answers heartbeat,
 * shutdown, time sync and KVP the way a Linux guest does; `IntegrationServices.host` plays Hyper-V
 * (offers the four channels, negotiates versions, sends requests and records the answers).
 */
import { Effect, Option } from "effect"
import { IcMessages, InMemoryTransport, IntegrationServices } from "effect-vmbus"

const program = Effect.gen(function*() {
  let shutdownKind = "none"
  // The host offers and the guest opens: start both together.
  const [host, guest] = yield* Effect.all([
    IntegrationServices.host(),
    IntegrationServices.guest({
      // Runs after the guest acknowledged the host's shutdown request.
      onShutdown: (request) => Effect.sync(() => void (shutdownKind = request.kind))
    })
  ], { concurrency: 2 })

  const heartbeat = yield* host.heartbeat // the guest answers with the sequence number plus one
  yield* host.kvpSet(IcMessages.KVP_POOL_EXTERNAL, "VirtualMachineName", "example-vm")
  const name = yield* host.kvpGet(IcMessages.KVP_POOL_EXTERNAL, "VirtualMachineName")
  const fromGuestStore = yield* guest.kvp.get(IcMessages.KVP_POOL_EXTERNAL, "VirtualMachineName")
  const status = yield* host.shutdown({ reasonCode: 0x8000_0000 })
  yield* guest.shutdownRequested

  return {
    services: [...host.negotiated.keys()],
    heartbeat,
    name: Option.getOrElse(name, () => "(missing)"),
    fromGuestStore: Option.getOrElse(fromGuestStore, () => "(missing)"),
    shutdownStatus: status,
    shutdownKind
  }
}).pipe(Effect.scoped, Effect.provide(InMemoryTransport.layer))

const result = await Effect.runPromise(program)
console.log(`negotiated: ${result.services.join(", ")}`)
console.log(`heartbeat answer: ${result.heartbeat}`)
console.log(`KVP VirtualMachineName: ${result.name} (guest store: ${result.fromGuestStore})`)
console.log(`shutdown status: 0x${result.shutdownStatus.toString(16)} (${result.shutdownKind})`)

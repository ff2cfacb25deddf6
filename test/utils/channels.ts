import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"
import * as Channel from "../../src/Channel.js"
import * as InMemoryTransport from "../../src/InMemoryTransport.js"

export const TYPE = "f8615163-df3e-46c5-913f-f2d2f965ed0e"
export const INSTANCE = "9e5e1a6f-2c34-4b8e-9d2a-0b1c2d3e4f50"

/** Opens a server and a client channel on the same in-memory transport (both in the current scope). */
export const openPair = (
  options: {
    readonly server?: Partial<Channel.ChannelConfigInput>
    readonly client?: Partial<Channel.ChannelConfigInput>
    readonly instance?: string
  } = {}
) =>
  Effect.gen(function*() {
    const instance = options.instance ?? INSTANCE
    const [server, client] = yield* Effect.all([
      Channel.open({ role: "server", interfaceType: TYPE, interfaceInstance: instance, ...options.server } as Channel.ChannelConfigInput),
      Channel.open({ role: "client", interfaceType: TYPE, interfaceInstance: instance, ...options.client } as Channel.ChannelConfigInput)
    ], { concurrency: 2 })
    return { server, client }
  })

/** A fresh in-memory bus (Transport + Control) for one test. */
export const withBus = <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.provide(self, InMemoryTransport.layer)

/** `n` bytes filled with `value` (8-byte multiples survive the wire's padding unchanged). */
export const filled = (value: number, n = 8): Uint8Array => new Uint8Array(n).fill(value & 0xff)

/**
 * Lets every ready fiber run (the receive loops, handler fibers) without touching the clock. The
 * in-memory transport and the channel are purely event driven, so a bounded number of yields reaches
 * quiescence; the count is generous.
 */
export const settle = (rounds = 64): Effect.Effect<void> =>
  Effect.forEach(Array.from({ length: rounds }), () => Effect.yieldNow(), { discard: true })

/**
 * Yields until `check` holds, failing the test (with `label`) if it never does. Never sleeps, so it is
 * safe under TestClock.
 */
export const eventually = <E, R>(
  check: Effect.Effect<boolean, E, R>,
  label: string,
  maxRounds = 2000
): Effect.Effect<void, E, R> => {
  const loop = (round: number): Effect.Effect<void, E, R> =>
    Effect.flatMap(check, (ok) => {
      if (ok) return Effect.void
      if (round >= maxRounds) return Effect.dieMessage(`condition never held: ${label}`)
      return Effect.zipRight(Effect.yieldNow(), loop(round + 1))
    })
  return loop(0)
}

/** Opens a pair in a child scope the test closes itself (to observe the state after the close). */
export const openPairInScope = (options: Parameters<typeof openPair>[0] = {}) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const pair = yield* openPair(options).pipe(Scope.extend(scope))
    return { ...pair, scope, close: Scope.close(scope, Exit.void) }
  })

/** The raw rings of the only open channel of the bus. */
export const onlyChannel = Effect.gen(function*() {
  const control = yield* InMemoryTransport.Control
  const channels = yield* control.openChannels
  if (channels.length !== 1) return yield* Effect.dieMessage(`expected one open channel, found ${channels.length}`)
  return channels[0]!
})

/** Asserts the bus holds no channel and no outstanding work (the leak check after a scope closed). */
export const busStats = Effect.flatMap(InMemoryTransport.Control, (control) => control.stats)

import * as Effect from "effect/Effect"
import * as Channel from "../../src/Channel.js"

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

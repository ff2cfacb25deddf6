// Helpers for integration-services tests: a hand-driven host (raw server channels) facing the real
// guest, so tests can send hand-built or broken IC packets and read the guest's raw answers.
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as BinarySchema from "../../src/BinarySchema.js"
import * as Channel from "../../src/Channel.js"
import * as Ic from "../../src/IcMessages.js"
import * as IS from "../../src/IntegrationServices.js"

/** Instance GUIDs for raw host channels (any instance works for the guest). */
export const RAW_INSTANCES: Readonly<Record<IS.ServiceName, string>> = {
  heartbeat: "0b9e3c4a-1111-4a7d-9fa6-2a4166cbd7c0",
  shutdown: "0b9e3c4a-2222-4840-8048-e0676786f393",
  timesync: "0b9e3c4a-3333-403c-b352-a1921ee207ee",
  kvp: "0b9e3c4a-4444-4180-9c2e-b86cb68c8c55"
}

export const V3: Ic.IcVersion = { major: 3, minor: 0 }

/**
 * Opens raw server channels for `services` and runs the guest for the same services against them
 * (all in the current scope).
 */
export const rawSession = (services: ReadonlyArray<IS.ServiceName>, guestOptions: IS.GuestOptions = {}) =>
  Effect.gen(function*() {
    const [opened, guest] = yield* Effect.all([
      Effect.forEach(services, (service) =>
        Effect.map(
          Channel.open({
            role: "server",
            interfaceType: IS.ServiceGuids[service],
            interfaceInstance: RAW_INSTANCES[service],
            maxPacketSize: IS.IC_MAX_PACKET_SIZE,
            name: `raw-host-${service}`
          }),
          (channel) => [service, channel] as const
        ), { concurrency: "unbounded" }),
      IS.guest({ ...guestOptions, services })
    ], { concurrency: 2 })
    const channels = new Map(opened)
    const channel = (service: IS.ServiceName): Channel.OpenedChannel => {
      const found = channels.get(service)
      if (found === undefined) throw new Error(`${service} not opened`)
      return found
    }
    return { guest, channel }
  })

/**
 * Runs `self`, dying (instead of hanging) if it has not finished after `rounds` scheduler yields.
 * Never touches the clock, so it is safe under TestClock.
 */
export const within = <A, E, R>(self: Effect.Effect<A, E, R>, label: string, rounds = 5000) =>
  Effect.raceFirst(
    self,
    Effect.zipRight(
      Effect.forEach(Array.from({ length: rounds }), () => Effect.yieldNow(), { discard: true }),
      Effect.dieMessage(`timed out: ${label}`)
    )
  )

export interface RawReply {
  readonly transactionId: bigint
  readonly bytes: Uint8Array
  readonly header: Ic.IcPacketHeader
  readonly body: Uint8Array
}

/** Takes the next in-band packet from the guest and decodes its IC header. */
export const nextReply = (channel: Channel.OpenedChannel) =>
  within(
    Effect.scoped(Effect.map(channel.take, (packet) => ({
      transactionId: packet.packet.transactionId,
      bytes: packet.payload.slice()
    }))),
    "guest reply"
  ).pipe(
    Effect.flatMap(({ bytes, transactionId }) => {
      const header = Ic.decodeIcHeader(bytes)
      return Either.isLeft(header)
        ? Effect.dieMessage(`reply without a readable header: ${header.left.message}`)
        : Effect.succeed<RawReply>({ transactionId, bytes, header: header.right, body: bytes.subarray(Ic.ICMSG_HDR) })
    })
  )

/** Sends raw bytes as an in-band packet (no completion requested), as the host does. */
export const sendRaw = (channel: Channel.OpenedChannel, transactionId: bigint, payload: Uint8Array) =>
  channel.sendPacket({ _tag: "InBand", transactionId, completionRequested: false, payload })

/** Sends raw bytes and returns the guest's answer, checking it carries the same transaction id. */
export const exchangeRaw = (channel: Channel.OpenedChannel, transactionId: bigint, payload: Uint8Array) =>
  Effect.gen(function*() {
    yield* sendRaw(channel, transactionId, payload)
    const reply = yield* nextReply(channel)
    if (reply.transactionId !== transactionId) {
      return yield* Effect.dieMessage(`answer for transaction ${reply.transactionId}, expected ${transactionId}`)
    }
    return reply
  })

/** A host IC request of `type` at versions 3.0/3.0. */
export const request = (type: number, body: Uint8Array, transactionId = 1) =>
  IS.buildRequest({ type, framework: V3, message: V3, transactionId, body })

export const heartbeatRequest = (seq: bigint, transactionId = 1) =>
  request(Ic.ICMSGTYPE_HEARTBEAT, BinarySchema.encodeSync(Ic.HeartbeatMsgData)({ seq_num: seq }), transactionId)

export const negotiateRequest = (
  framework: ReadonlyArray<Ic.IcVersion>,
  message: ReadonlyArray<Ic.IcVersion>,
  transactionId = 1
) =>
  IS.buildRequest({
    type: Ic.ICMSGTYPE_NEGOTIATE,
    framework: { major: 0, minor: 0 },
    message: { major: 0, minor: 0 },
    transactionId,
    body: BinarySchema.encodeSync(Ic.IcMsgNegotiate)({ framework_versions: framework, message_versions: message })
  })

export const shutdownRequest = (flags: number, transactionId = 1) =>
  request(
    Ic.ICMSGTYPE_SHUTDOWN,
    BinarySchema.encodeSync(Ic.ShutdownMsgData)({
      reason_code: 0,
      timeout_seconds: 0,
      flags,
      display_message: new Uint8Array(2048)
    }),
    transactionId
  )

/** The heartbeat sequence number in a guest answer. */
export const heartbeatAnswer = (reply: RawReply): bigint => {
  const decoded = BinarySchema.decodePrefix(Ic.HeartbeatMsgData)(reply.body)
  if (Either.isLeft(decoded)) throw new Error(`malformed heartbeat answer: ${decoded.left.message}`)
  return decoded.right.value.seq_num
}

/** The response flags every guest answer must carry. */
export const RESPONSE_FLAGS = Ic.ICMSGHDRFLAG_TRANSACTION | Ic.ICMSGHDRFLAG_RESPONSE

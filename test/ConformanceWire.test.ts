// Conformance review of the integration-services guest against Linux (drivers/hv/hv_util.c,
// drivers/hv/hv_kvp.c, tools/hv/hv_kvp_daemon.c). Each test asserts what Linux puts on the wire where
// an earlier effect-vmbus answered differently. The comment above
// each test names the discrepancy and the Linux source it comes from.
import { describe, it } from "@effect/vitest"
import { strictEqual } from "@effect/vitest/utils"
import { Effect, Either } from "effect"
import * as Ic from "../src/IcMessages.js"
import * as InMemoryTransport from "../src/InMemoryTransport.js"
import { exchangeRaw, rawSession, request } from "./utils/ic.js"

const withBus = <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.provide(self, InMemoryTransport.layer)

const statusOf = (reply: { readonly header: Ic.IcPacketHeader }) => reply.header.icmsg_hdr.status >>> 0

const kvpRequest = (message: Ic.KvpMessage, tid: number) => {
  const body = Ic.encodeKvpMessage(message)
  if (Either.isLeft(body)) throw new Error(body.left.message)
  return request(Ic.ICMSGTYPE_KVPEXCHANGE, body.right, tid)
}

const kvpData = (key: string) => {
  const encoded = Ic.kvpStringValue(key, "")
  if (Either.isLeft(encoded)) throw new Error(encoded.left.message)
  return encoded.right
}

describe("Conformance: IC guest vs Linux hv_util.c / hv_kvp.c", () => {
  // Linux behaviour (heartbeat short body): hv_util.c heartbeat_onchannelcallback only requires
  // `recvlen >= ICMSG_HDR + sizeof(u64)` ("Reserved area is not included in the check as the host
  // may not fill it up entirely") and answers seq_num + 1 in place. effect-vmbus decodes the full
  // 40-byte heartbeat_msg_data and answers HV_E_FAIL for any shorter body.
  it.scoped("heartbeat carrying only seq_num (8-byte body) is answered with seq_num + 1", () =>
    Effect.gen(function*() {
      const { channel } = yield* rawSession(["heartbeat"])
      const body = new Uint8Array(8)
      new DataView(body.buffer).setBigUint64(0, 41n, true)
      const reply = yield* exchangeRaw(channel("heartbeat"), 7n, request(Ic.ICMSGTYPE_HEARTBEAT, body, 7))
      strictEqual(statusOf(reply), Ic.HV_S_OK)
      strictEqual(new DataView(reply.body.buffer, reply.body.byteOffset).getBigUint64(0, true), 42n)
    }).pipe(withBus))

  // Linux behaviour (status for an unknown icmsgtype): hv_util.c (heartbeat, shutdown, timesync
  // callbacks) sets `icmsghdrp->status = HV_E_FAIL` for an invalid msg type; effect-vmbus answers
  // HV_ERROR_NOT_SUPPORTED.
  it.scoped("an unknown icmsgtype on the heartbeat channel is answered HV_E_FAIL", () =>
    Effect.gen(function*() {
      const { channel } = yield* rawSession(["heartbeat"])
      const reply = yield* exchangeRaw(channel("heartbeat"), 9n, request(0x99, new Uint8Array(40), 9))
      strictEqual(statusOf(reply), Ic.HV_E_FAIL)
    }).pipe(withBus))

  // Linux behaviour (KVP GET of a missing key): tools/hv/hv_kvp_daemon.c sets
  // `hv_msg->error = HV_S_CONT` when kvp_get_value fails, and hv_kvp.c kvp_on_msg /
  // kvp_respond_to_host put that value in icmsg_hdr.status. effect-vmbus answers HV_E_FAIL.
  it.scoped("KVP GET of a missing key is answered HV_S_CONT", () =>
    Effect.gen(function*() {
      const { channel } = yield* rawSession(["kvp"])
      const reply = yield* exchangeRaw(
        channel("kvp"),
        3n,
        kvpRequest({ _tag: "Get", kvp_hdr: { operation: Ic.KVP_OP_GET, pool: 0 }, kvp_get: { data: kvpData("absent") } }, 3)
      )
      strictEqual(statusOf(reply), Ic.HV_S_CONT)
    }).pipe(withBus))

  // Linux behaviour (KVP DELETE of a missing key): hv_kvp_daemon.c kvp_key_delete returns 1 when no
  // record matches and the daemon sets `hv_msg->error = HV_S_CONT`. effect-vmbus answers HV_E_FAIL.
  it.scoped("KVP DELETE of a missing key is answered HV_S_CONT", () =>
    Effect.gen(function*() {
      const { channel } = yield* rawSession(["kvp"])
      const key = "absent"
      const reply = yield* exchangeRaw(
        channel("kvp"),
        4n,
        kvpRequest({
          _tag: "Delete",
          kvp_hdr: { operation: Ic.KVP_OP_DELETE, pool: 0 },
          kvp_delete: { key_size: 2 * (key.length + 1), key }
        }, 4)
      )
      strictEqual(statusOf(reply), Ic.HV_S_CONT)
    }).pipe(withBus))
})

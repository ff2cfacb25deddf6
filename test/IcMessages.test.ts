// IcMessages: struct sizes and field offsets against the Linux headers, round trips of arbitrary
// messages, whole IC packets (vmbuspipe_hdr + icmsg_hdr + body), version negotiation checked byte
// for byte against vmbus_prep_negotiate_resp, and KVP messages with UTF-16 keys/values at their
// maximum sizes.
//
// Sizes and offsets below are computed by hand from the __packed declarations in torvalds/linux
// include/linux/hyperv.h (vmbuspipe_hdr, ic_version, icmsg_hdr, icmsg_negotiate, heartbeat_msg_data,
// shutdown_msg_data, ictimesync_data, ictimesync_ref_data; ICMSG_HDR) and
// include/uapi/linux/hyperv.h (hv_kvp_hdr, hv_kvp_exchg_msg_value, hv_kvp_msg_*, hv_kvp_msg).
import { describe, it } from "@effect/vitest"
import { assertInclude, assertTrue, deepStrictEqual, strictEqual } from "@effect/vitest/utils"
import { Either, ParseResult } from "effect"
import * as BinarySchema from "../src/BinarySchema.js"
import * as Ic from "../src/IcMessages.js"

const hex = (text: string): Uint8Array => Uint8Array.from(text.trim().split(/\s+/).map((b) => parseInt(b, 16)))

const right = <A>(either: Either.Either<A, ParseResult.ParseError>): A => {
  if (Either.isLeft(either)) throw new Error(`unexpected failure: ${either.left.message}`)
  return either.right
}

const leftMessage = <A>(either: Either.Either<A, ParseResult.ParseError>): string => {
  assertTrue(Either.isLeft(either), "expected a failure")
  assertTrue(ParseResult.isParseError(either.left))
  return either.left.message
}

describe("IcMessages", () => {
  describe("layouts match the headers", () => {
    it("sizes", () => {
      // include/linux/hyperv.h
      strictEqual(Ic.VmbusPipeHdr.fixedSize, Ic.VMBUSPIPE_HDR_SIZE)
      strictEqual(Ic.VMBUSPIPE_HDR_SIZE, 4 + 4)
      strictEqual(Ic.IcVersion.fixedSize, Ic.IC_VERSION_SIZE)
      strictEqual(Ic.IC_VERSION_SIZE, 2 + 2)
      strictEqual(Ic.IcMsgHdr.fixedSize, Ic.ICMSG_HDR_SIZE)
      strictEqual(Ic.ICMSG_HDR_SIZE, 4 + 2 + 4 + 2 + 4 + 1 + 1 + 2)
      strictEqual(Ic.IcPacketHeader.fixedSize, Ic.ICMSG_HDR)
      strictEqual(Ic.ICMSG_HDR, 8 + 20)
      strictEqual(Ic.IcMsgNegotiate.fixedSize, undefined) // flexible icversion_data[]
      strictEqual(Ic.ICMSG_NEGOTIATE_SIZE, 2 + 2 + 4)
      strictEqual(Ic.icmsgNegotiatePktSize(2, 3), 28 + 8 + 5 * 4)
      strictEqual(Ic.HeartbeatMsgData.fixedSize, Ic.HEARTBEAT_MSG_DATA_SIZE)
      strictEqual(Ic.HEARTBEAT_MSG_DATA_SIZE, 8 + 4 * 8)
      strictEqual(Ic.ShutdownMsgData.fixedSize, Ic.SHUTDOWN_MSG_DATA_SIZE)
      strictEqual(Ic.SHUTDOWN_MSG_DATA_SIZE, 4 + 4 + 4 + 2048)
      strictEqual(Ic.IcTimesyncData.fixedSize, Ic.ICTIMESYNC_DATA_SIZE)
      strictEqual(Ic.ICTIMESYNC_DATA_SIZE, 8 + 8 + 8 + 1)
      strictEqual(Ic.IcTimesyncRefData.fixedSize, Ic.ICTIMESYNC_REF_DATA_SIZE)
      strictEqual(Ic.ICTIMESYNC_REF_DATA_SIZE, 8 + 8 + 1 + 1 + 1 + 3)
      // include/uapi/linux/hyperv.h
      strictEqual(Ic.KvpHdr.fixedSize, Ic.KVP_HDR_SIZE)
      strictEqual(Ic.KVP_HDR_SIZE, 1 + 1 + 2)
      strictEqual(Ic.KvpExchgMsgValue.fixedSize, Ic.KVP_EXCHG_MSG_VALUE_SIZE)
      strictEqual(Ic.KVP_EXCHG_MSG_VALUE_SIZE, 4 + 4 + 4 + 512 + 2048)
      strictEqual(Ic.KvpMsgGet.fixedSize, Ic.KVP_EXCHG_MSG_VALUE_SIZE)
      strictEqual(Ic.KvpMsgSet.fixedSize, Ic.KVP_EXCHG_MSG_VALUE_SIZE)
      strictEqual(Ic.KvpMsgDelete.fixedSize, Ic.KVP_MSG_DELETE_SIZE)
      strictEqual(Ic.KVP_MSG_DELETE_SIZE, 4 + 512)
      strictEqual(Ic.KvpMsgEnumerate.fixedSize, Ic.KVP_MSG_ENUMERATE_SIZE)
      strictEqual(Ic.KVP_MSG_ENUMERATE_SIZE, 4 + 2572)
      strictEqual(Ic.HV_KVP_MSG_SIZE, 4 + (2 * 128 + 1 + 1 + 2 * 1024 + 2 * 1024 + 2 * 512 + 2 * 1024))
      strictEqual(Ic.KvpEnumerateMsg.fixedSize, 4 + 2576)
    })

    it("offsets", () => {
      deepStrictEqual(Ic.VmbusPipeHdr.offsets, { flags: 0, msgsize: 4 })
      deepStrictEqual(Ic.IcMsgHdr.offsets, {
        icverframe: 0,
        "icverframe.major": 0,
        "icverframe.minor": 2,
        icmsgtype: 4,
        icvermsg: 6,
        "icvermsg.major": 6,
        "icvermsg.minor": 8,
        icmsgsize: 10,
        status: 12,
        ictransaction_id: 16,
        icflags: 17,
        reserved: 18
      })
      deepStrictEqual(Ic.IcMsgNegotiate.offsets, {
        icframe_vercnt: 0,
        icmsg_vercnt: 2,
        reserved: 4,
        framework_versions: 8
      })
      deepStrictEqual(Ic.HeartbeatMsgData.offsets, { seq_num: 0, reserved: 8 })
      deepStrictEqual(Ic.ShutdownMsgData.offsets, { reason_code: 0, timeout_seconds: 4, flags: 8, display_message: 12 })
      deepStrictEqual(Ic.IcTimesyncData.offsets, { parenttime: 0, childtime: 8, roundtriptime: 16, flags: 24 })
      deepStrictEqual(Ic.IcTimesyncRefData.offsets, {
        parenttime: 0,
        vmreferencetime: 8,
        flags: 16,
        leapflags: 17,
        stratum: 18,
        reserved: 19
      })
      deepStrictEqual(Ic.KvpHdr.offsets, { operation: 0, pool: 1, pad: 2 })
      deepStrictEqual(Ic.KvpExchgMsgValue.offsets, { value_type: 0, key_size: 4, value_size: 8, key: 12, value: 524 })
      deepStrictEqual(Ic.KvpMsgDelete.offsets, { key_size: 0, key: 4 })
      strictEqual(Ic.KvpMsgEnumerate.offsets["data.value"], 528)
      strictEqual(Ic.IcPacketHeader.offsets["icmsg_hdr"], 8) // icmsghdrp = &buf[sizeof(struct vmbuspipe_hdr)]
      strictEqual(Ic.IcPacketHeader.offsets["icmsg_hdr.icmsgsize"], 18)
      strictEqual(Ic.IcPacketHeader.offsets["icmsg_hdr.icflags"], 25)
      strictEqual(Ic.icPacket(Ic.HeartbeatMsgData).offsets["body.seq_num"], Ic.ICMSG_HDR)
    })

    it("constants", () => {
      deepStrictEqual(
        [Ic.ICMSGTYPE_NEGOTIATE, Ic.ICMSGTYPE_HEARTBEAT, Ic.ICMSGTYPE_KVPEXCHANGE, Ic.ICMSGTYPE_SHUTDOWN],
        [0, 1, 2, 3]
      )
      deepStrictEqual([Ic.ICMSGTYPE_TIMESYNC, Ic.ICMSGTYPE_VSS, Ic.ICMSGTYPE_FCOPY], [4, 5, 7])
      deepStrictEqual([Ic.ICMSGHDRFLAG_TRANSACTION, Ic.ICMSGHDRFLAG_REQUEST, Ic.ICMSGHDRFLAG_RESPONSE], [1, 2, 4])
      deepStrictEqual([Ic.ICTIMESYNCFLAG_PROBE, Ic.ICTIMESYNCFLAG_SYNC, Ic.ICTIMESYNCFLAG_SAMPLE], [0, 1, 2])
      deepStrictEqual([Ic.HV_S_OK, Ic.HV_E_FAIL, Ic.HV_S_CONT], [0, 0x80004005, 0x80070103])
      deepStrictEqual([Ic.REG_SZ, Ic.REG_U32, Ic.REG_U64], [1, 4, 8])
    })
  })

  describe("round trips", () => {
    const structs = [
      Ic.IcMsgHdr,
      Ic.IcMsgNegotiate,
      Ic.HeartbeatMsgData,
      Ic.ShutdownMsgData,
      Ic.IcTimesyncData,
      Ic.IcTimesyncRefData,
      Ic.KvpEnumerateMsg,
      Ic.KvpDeleteMsg
    ] as const
    for (const S of structs) {
      it.prop(`${S.identifier} ${Object.keys(S.fields).join(",")}`, [S.typeSchema], ([value]) => {
        const bytes = BinarySchema.encodeSync(S as BinarySchema.Struct<any>)(value)
        deepStrictEqual(BinarySchema.decodeSync(S as BinarySchema.Struct<any>)(bytes), value)
      }, { fastCheck: { numRuns: 50 } })
    }

    const HeartbeatPacket = Ic.icPacket(Ic.HeartbeatMsgData)
    it.prop("a heartbeat IC packet", [HeartbeatPacket.typeSchema], ([packet]) => {
      const bytes = BinarySchema.encodeSync(HeartbeatPacket)(packet)
      strictEqual(bytes.length, Ic.ICMSG_HDR + Ic.HEARTBEAT_MSG_DATA_SIZE)
      deepStrictEqual(right(Ic.decodeIcHeader(bytes)), { pipe_hdr: packet.pipe_hdr, icmsg_hdr: packet.icmsg_hdr })
      deepStrictEqual(BinarySchema.decodeSync(HeartbeatPacket)(bytes), packet)
    })

    it("answering a heartbeat in place, as hv_util.c does", () => {
      const HeartbeatPacket = Ic.icPacket(Ic.HeartbeatMsgData)
      const request = BinarySchema.encodeSync(HeartbeatPacket)({
        pipe_hdr: { flags: 1, msgsize: 60 },
        icmsg_hdr: {
          icverframe: { major: 3, minor: 0 },
          icmsgtype: Ic.ICMSGTYPE_HEARTBEAT,
          icvermsg: { major: 3, minor: 0 },
          icmsgsize: Ic.HEARTBEAT_MSG_DATA_SIZE,
          status: Ic.HV_S_OK,
          ictransaction_id: 9,
          icflags: Ic.ICMSGHDRFLAG_TRANSACTION | Ic.ICMSGHDRFLAG_REQUEST
        },
        body: { seq_num: 41n }
      })
      const { body, icmsg_hdr, pipe_hdr } = BinarySchema.decodeSync(HeartbeatPacket)(request)
      const response = request.slice()
      right(BinarySchema.encodeInto(HeartbeatPacket)({
        pipe_hdr,
        icmsg_hdr: { ...icmsg_hdr, icflags: Ic.ICMSGHDRFLAG_TRANSACTION | Ic.ICMSGHDRFLAG_RESPONSE },
        body: { seq_num: body.seq_num + 1n }
      }, response))
      const expected = request.slice()
      expected[25] = 0x05
      expected[28] = 42
      deepStrictEqual(response, expected)
    })

    it("truncated and oversized packets name the field", () => {
      const HeartbeatPacket = Ic.icPacket(Ic.HeartbeatMsgData)
      assertInclude(
        leftMessage(BinarySchema.decodeEither(HeartbeatPacket)(new Uint8Array(20))),
        "ic_packet<heartbeat_msg_data>.icmsg_hdr.status: truncated"
      )
      assertInclude(
        leftMessage(BinarySchema.decodeEither(HeartbeatPacket)(new Uint8Array(69))),
        "ic_packet<heartbeat_msg_data>: 1 unexpected trailing byte"
      )
      assertInclude(leftMessage(Ic.decodeIcHeader(new Uint8Array(27))), "ic_packet.icmsg_hdr.reserved: truncated")
    })
  })

  describe("negotiate", () => {
    // A host negotiate as it arrives in the ring payload: vmbuspipe_hdr, icmsg_hdr (ICMSGTYPE_NEGOTIATE,
    // TRANSACTION|REQUEST, icmsgsize = 8 + 5 * 4), icmsg_negotiate with framework versions 1.0, 3.0 and
    // message versions 1.0, 3.0, 4.0.
    const request = hex(`
      01 00 00 00  38 00 00 00
      01 00 00 00  00 00  01 00 00 00  1c 00  00 00 00 00  2a  03  00 00
      02 00  03 00  00 00 00 00
      01 00 00 00  03 00 00 00
      01 00 00 00  03 00 00 00  04 00 00 00
    `)

    it("the request is what icPacket(IcMsgNegotiate) encodes", () => {
      deepStrictEqual(
        BinarySchema.encodeSync(Ic.icPacket(Ic.IcMsgNegotiate))({
          pipe_hdr: { flags: 1, msgsize: 0x38 },
          icmsg_hdr: {
            icverframe: { major: 1, minor: 0 },
            icmsgtype: Ic.ICMSGTYPE_NEGOTIATE,
            icvermsg: { major: 1, minor: 0 },
            icmsgsize: 0x1c,
            status: 0,
            ictransaction_id: 0x2a,
            icflags: Ic.ICMSGHDRFLAG_TRANSACTION | Ic.ICMSGHDRFLAG_REQUEST
          },
          body: {
            framework_versions: [{ major: 1, minor: 0 }, { major: 3, minor: 0 }],
            message_versions: [{ major: 1, minor: 0 }, { major: 3, minor: 0 }, { major: 4, minor: 0 }]
          }
        }),
        request
      )
    })

    it("heartbeat: picks framework 3.0 and message 3.0; response byte for byte", () => {
      const result = right(Ic.negotiate(request, { framework: Ic.UTIL_FW_VERSIONS, message: Ic.HB_VERSIONS }))
      assertTrue(result._tag === "Negotiated")
      deepStrictEqual(result.framework, { major: 3, minor: 0 })
      deepStrictEqual(result.message, { major: 3, minor: 0 })
      deepStrictEqual(
        result.response,
        hex(`
          01 00 00 00  38 00 00 00
          01 00 00 00  00 00  01 00 00 00  10 00  00 00 00 00  2a  05  00 00
          01 00  01 00  00 00 00 00
          03 00 00 00  03 00 00 00
          01 00 00 00  03 00 00 00  04 00 00 00
        `)
      )
      const decoded = BinarySchema.decodeSync(Ic.icPacket(Ic.IcMsgNegotiate, { trailingBytes: "ignore" }))(
        result.response
      )
      deepStrictEqual(decoded.body, {
        framework_versions: [{ major: 3, minor: 0 }],
        message_versions: [{ major: 3, minor: 0 }]
      })
    })

    it("timesync picks 4.0 (the first of ts_versions the host offers)", () => {
      const result = right(Ic.negotiate(request, { framework: Ic.UTIL_FW_VERSIONS, message: Ic.TS_VERSIONS }))
      assertTrue(result._tag === "Negotiated")
      deepStrictEqual(result.message, { major: 4, minor: 0 })
      deepStrictEqual(result.response.subarray(36, 44), hex("03 00 00 00 04 00 00 00"))
    })

    it("no common framework version: counts 0/0, slots hold what Linux leaves", () => {
      const result = right(Ic.negotiate(request, { framework: [{ major: 2, minor: 0 }], message: Ic.HB_VERSIONS }))
      assertTrue(result._tag === "NoCommonVersion")
      strictEqual(result.reason, "Framework")
      deepStrictEqual(result.offeredFramework, [{ major: 1, minor: 0 }, { major: 3, minor: 0 }])
      deepStrictEqual(result.offeredMessage, [{ major: 1, minor: 0 }, { major: 3, minor: 0 }, { major: 4, minor: 0 }])
      // icframe_vercnt = icmsg_vercnt = 0; icversion_data[0] = {icframe_vercnt, 0}, [1] = {icmsg_vercnt, 0}
      deepStrictEqual(result.response.subarray(18, 20), hex("10 00"))
      strictEqual(result.response[25], 0x05)
      deepStrictEqual(result.response.subarray(28, 44), hex("00 00 00 00 00 00 00 00 02 00 00 00 03 00 00 00"))
    })

    it("no common message version", () => {
      const result = right(Ic.negotiate(request, { framework: Ic.UTIL_FW_VERSIONS, message: [{ major: 9, minor: 9 }] }))
      assertTrue(result._tag === "NoCommonVersion")
      strictEqual(result.reason, "Message")
      deepStrictEqual(result.response.subarray(28, 44), hex("00 00 00 00 00 00 00 00 03 00 00 00 03 00 00 00"))
    })

    it("counts Linux refuses (> 100, or more than the packet holds) answer 0/0", () => {
      const tooMany = request.slice()
      tooMany[28] = 101
      const result = right(Ic.negotiate(tooMany, { framework: Ic.UTIL_FW_VERSIONS, message: Ic.HB_VERSIONS }))
      assertTrue(result._tag === "NoCommonVersion")
      strictEqual(result.reason, "InvalidRequest")
      deepStrictEqual(result.response.subarray(28, 44), hex("00 00 00 00 00 00 00 00 65 00 00 00 03 00 00 00"))
      const short = right(
        Ic.negotiate(request.subarray(0, 52), { framework: Ic.UTIL_FW_VERSIONS, message: Ic.HB_VERSIONS })
      )
      assertTrue(short._tag === "NoCommonVersion" && short.reason === "InvalidRequest")
    })

    it("malformed requests are ParseErrors", () => {
      assertInclude(
        leftMessage(Ic.negotiate(request.subarray(0, 31), { framework: Ic.UTIL_FW_VERSIONS, message: Ic.HB_VERSIONS })),
        "icmsg_negotiate: truncated"
      )
      const heartbeat = request.slice()
      heartbeat[12] = Ic.ICMSGTYPE_HEARTBEAT
      assertInclude(
        leftMessage(Ic.negotiate(heartbeat, { framework: Ic.UTIL_FW_VERSIONS, message: Ic.HB_VERSIONS })),
        "icmsgtype: expected ICMSGTYPE_NEGOTIATE (0), got 1"
      )
    })

    it("the response always carries both version slots", () => {
      const minimal = BinarySchema.encodeSync(Ic.icPacket(Ic.IcMsgNegotiate))({
        pipe_hdr: { flags: 0, msgsize: 0 },
        icmsg_hdr: {
          icverframe: { major: 1, minor: 0 },
          icmsgtype: 0,
          icvermsg: { major: 1, minor: 0 },
          icmsgsize: 12,
          status: 0,
          ictransaction_id: 0,
          icflags: 3
        },
        body: { framework_versions: [{ major: 3, minor: 0 }], message_versions: [] }
      })
      strictEqual(minimal.length, 40)
      const result = right(Ic.negotiate(minimal, { framework: Ic.UTIL_FW_VERSIONS, message: Ic.HB_VERSIONS }))
      assertTrue(result._tag === "NoCommonVersion" && result.reason === "Message")
      strictEqual(result.response.length, Ic.icmsgNegotiatePktSize(1, 1))
    })
  })

  describe("KVP", () => {
    const maxKey = "K".repeat(200) + "é".repeat(53) + "😀" // 255 UTF-16 code units
    const maxValue = "V".repeat(1000) + "日本語".repeat(7) + "😀" // 1023 UTF-16 code units

    it("UTF-16 key and value at their maximum sizes", () => {
      strictEqual(maxKey.length, 255)
      strictEqual(maxValue.length, 1023)
      const data = right(Ic.kvpStringValue(maxKey, maxValue))
      strictEqual(data.value_type, Ic.REG_SZ)
      strictEqual(data.key_size, Ic.HV_KVP_EXCHANGE_MAX_KEY_SIZE)
      strictEqual(data.value_size, Ic.HV_KVP_EXCHANGE_MAX_VALUE_SIZE)

      const message: Ic.KvpMessage = {
        _tag: "Get",
        kvp_hdr: { operation: Ic.KVP_OP_GET, pool: Ic.KVP_POOL_AUTO },
        kvp_get: { data }
      }
      const bytes = right(Ic.encodeKvpMessage(message))
      strictEqual(bytes.length, Ic.KVP_HDR_SIZE + Ic.KVP_EXCHG_MSG_VALUE_SIZE)
      deepStrictEqual(bytes.subarray(0, 16), hex("00 02 00 00  01 00 00 00  00 02 00 00  00 08 00 00"))
      deepStrictEqual(bytes.subarray(16, 18), hex("4b 00")) // "K"
      deepStrictEqual(bytes.subarray(16 + 508, 16 + 512), hex("00 de 00 00")) // low surrogate, then NUL
      deepStrictEqual(bytes.subarray(528, 530), hex("56 00")) // "V"
      deepStrictEqual(bytes.subarray(528 + 2044, 528 + 2048), hex("00 de 00 00"))

      const decoded = right(Ic.decodeKvpMessage(bytes))
      deepStrictEqual(decoded, message)
      assertTrue(decoded._tag === "Get")
      strictEqual(decoded.kvp_get.data.key, maxKey)
      strictEqual(Ic.kvpValueOf(decoded.kvp_get.data), maxValue)
    })

    it("one code unit more does not fit", () => {
      assertInclude(leftMessage(Ic.kvpStringValue(maxKey + "x", "")), "hv_kvp_exchg_msg_value.key: string of 256")
      assertInclude(leftMessage(Ic.kvpStringValue("", maxValue + "x")), "hv_kvp_exchg_msg_value.value: string of 1024")
    })

    it("decodes a host enumerate inside a full-size hv_kvp_msg", () => {
      const body = new Uint8Array(Ic.HV_KVP_MSG_SIZE)
      body.set(hex("03 03 00 00  07 00 00 00"))
      const packet = new Uint8Array(Ic.ICMSG_HDR + Ic.HV_KVP_MSG_SIZE)
      packet.set(body, Ic.ICMSG_HDR)
      const header = right(Ic.decodeIcHeader(packet))
      strictEqual(header.icmsg_hdr.icmsgtype, 0)
      const decoded = right(Ic.decodeKvpMessage(packet.subarray(Ic.ICMSG_HDR)))
      assertTrue(decoded._tag === "Enumerate")
      strictEqual(decoded.kvp_hdr.pool, Ic.KVP_POOL_AUTO_EXTERNAL)
      strictEqual(decoded.kvp_enum_data.index, 7)
      strictEqual(decoded.kvp_enum_data.data.key, "")
      const whole = BinarySchema.decodeSync(Ic.icPacket(Ic.KvpEnumerateMsg, { trailingBytes: "ignore" }))(packet)
      strictEqual(whole.body.kvp_enum_data.index, 7)
    })

    it("delete, integer values and other operations", () => {
      const del = new Uint8Array(Ic.KVP_HDR_SIZE + Ic.KVP_MSG_DELETE_SIZE)
      del.set(hex("02 01 00 00  04 00 00 00  41 00 00 00"))
      deepStrictEqual(right(Ic.decodeKvpMessage(del)), {
        _tag: "Delete",
        kvp_hdr: { operation: Ic.KVP_OP_DELETE, pool: Ic.KVP_POOL_GUEST },
        kvp_delete: { key_size: 4, key: "A" }
      })
      const value = new Uint8Array(2048)
      value.set(hex("08 07 06 05 04 03 02 01"))
      const base = { key_size: 2, key: "", value }
      strictEqual(Ic.kvpValueOf({ ...base, value_type: Ic.REG_U32, value_size: 4 }), 0x05060708)
      strictEqual(Ic.kvpValueOf({ ...base, value_type: Ic.REG_U64, value_size: 8 }), 0x0102030405060708n)
      deepStrictEqual(Ic.kvpValueOf({ ...base, value_type: 99, value_size: 3 }), hex("08 07 06"))
      const other = right(Ic.decodeKvpMessage(hex("04 00 00 00 aa bb")))
      deepStrictEqual(other, {
        _tag: "Other",
        kvp_hdr: { operation: Ic.KVP_OP_GET_IP_INFO, pool: 0 },
        body: hex("aa bb")
      })
      deepStrictEqual(right(Ic.encodeKvpMessage(other)), hex("04 00 00 00 aa bb"))
      assertInclude(
        leftMessage(Ic.decodeKvpMessage(hex("00 00 00 00 01"))),
        "hv_kvp_msg.kvp_get.data.value_type: truncated"
      )
    })
  })
})

/**
 * Hyper-V integration-services (IC) message layouts, as Linux defines them, built with
 * {@link BinarySchema}. Sources (torvalds/linux):
 *
 * - `include/linux/hyperv.h` — `vmbuspipe_hdr`, `ic_version`, `icmsg_hdr`, `icmsg_negotiate`,
 *   `shutdown_msg_data`, `heartbeat_msg_data`, `ictimesync_data`, `ictimesync_ref_data`,
 *   `ICMSGTYPE_*`, `ICMSGHDRFLAG_*`, `ICTIMESYNCFLAG_*`, the service GUIDs;
 * - `include/uapi/linux/hyperv.h` — `hv_kvp_*`, `HV_KVP_EXCHANGE_MAX_*`, `REG_*`, `HV_S_*`/`HV_E_*`
 *   status codes, `UTIL_FW_VERSION`;
 * - `drivers/hv/hv_util.c` / `drivers/hv/hv_kvp.c` — the versions Linux offers per service;
 * - `drivers/hv/channel_mgmt.c` — `vmbus_prep_negotiate_resp`, mirrored by {@link negotiate}.
 *
 * Every IC packet is `vmbuspipe_hdr` (8 bytes) + `icmsg_hdr` (20 bytes) + a body (Linux reads
 * `icmsg_hdr` at `buf[sizeof(struct vmbuspipe_hdr)]` and the body at `buf[ICMSG_HDR]`). Field names
 * are the C names. All structs are `__packed` in the headers, so offsets have no padding.
 *
 * @since 0.1.0
 */
import * as Either from "effect/Either"
import * as ParseResult from "effect/ParseResult"
import * as BinarySchema from "./BinarySchema.js"

// ---------------------------------------------------------------------------------------------
// Constants (include/linux/hyperv.h)
// ---------------------------------------------------------------------------------------------

/**
 * IC message type: version negotiation.
 *
 * @since 0.1.0
 * @category constants
 */
export const ICMSGTYPE_NEGOTIATE = 0
/**
 * IC message type: heartbeat.
 *
 * @since 0.1.0
 * @category constants
 */
export const ICMSGTYPE_HEARTBEAT = 1
/**
 * IC message type: key-value pair exchange.
 *
 * @since 0.1.0
 * @category constants
 */
export const ICMSGTYPE_KVPEXCHANGE = 2
/**
 * IC message type: shutdown request.
 *
 * @since 0.1.0
 * @category constants
 */
export const ICMSGTYPE_SHUTDOWN = 3
/**
 * IC message type: time synchronization.
 *
 * @since 0.1.0
 * @category constants
 */
export const ICMSGTYPE_TIMESYNC = 4
/**
 * IC message type: volume shadow copy (not implemented by this library).
 *
 * @since 0.1.0
 * @category constants
 */
export const ICMSGTYPE_VSS = 5
/**
 * IC message type: file copy (not implemented by this library).
 *
 * @since 0.1.0
 * @category constants
 */
export const ICMSGTYPE_FCOPY = 7

/**
 * IC header flag: the message is part of a transaction.
 *
 * @since 0.1.0
 * @category constants
 */
export const ICMSGHDRFLAG_TRANSACTION = 1
/**
 * IC header flag: the message is a request.
 *
 * @since 0.1.0
 * @category constants
 */
export const ICMSGHDRFLAG_REQUEST = 2
/**
 * IC header flag: the message is a response.
 *
 * @since 0.1.0
 * @category constants
 */
export const ICMSGHDRFLAG_RESPONSE = 4

/**
 * `ICTIMESYNCFLAG_PROBE`: a probe message.
 *
 * @since 0.1.0
 * @category constants
 */
export const ICTIMESYNCFLAG_PROBE = 0
/**
 * `ICTIMESYNCFLAG_SYNC`: a hard request to set the clock (after boot, restore, …).
 *
 * @since 0.1.0
 * @category constants
 */
export const ICTIMESYNCFLAG_SYNC = 1
/**
 * `ICTIMESYNCFLAG_SAMPLE`: a time sample, a hint.
 *
 * @since 0.1.0
 * @category constants
 */
export const ICTIMESYNCFLAG_SAMPLE = 2

/**
 * `WLTIMEDELTA`: 100 ns intervals between 1601-01-01 (Windows epoch, used by `parenttime`) and
 * 1970-01-01.
 *
 * @since 0.1.0
 * @category constants
 */
export const WLTIMEDELTA = 116444736000000000n

/**
 * `IC_VERSION_NEGOTIATION_MAX_VER_COUNT`: Linux rejects a negotiate offering more versions of
 * either kind.
 *
 * @since 0.1.0
 * @category constants
 */
export const IC_VERSION_NEGOTIATION_MAX_VER_COUNT = 100

// Status codes (include/uapi/linux/hyperv.h), as unsigned 32-bit values of icmsg_hdr.status.

/**
 * Status: success.
 *
 * @since 0.1.0
 * @category constants
 */
export const HV_S_OK = 0x00000000
/**
 * Status: unspecified failure.
 *
 * @since 0.1.0
 * @category constants
 */
export const HV_E_FAIL = 0x80004005
/**
 * Status: no more data (a KVP key or index that is not there).
 *
 * @since 0.1.0
 * @category constants
 */
export const HV_S_CONT = 0x80070103
/**
 * Status: the operation is not supported.
 *
 * @since 0.1.0
 * @category constants
 */
export const HV_ERROR_NOT_SUPPORTED = 0x80070032
/**
 * Status: the machine is locked.
 *
 * @since 0.1.0
 * @category constants
 */
export const HV_ERROR_MACHINE_LOCKED = 0x800704f7
/**
 * Status: the device is not connected.
 *
 * @since 0.1.0
 * @category constants
 */
export const HV_ERROR_DEVICE_NOT_CONNECTED = 0x8007048f
/**
 * Status: an argument is invalid.
 *
 * @since 0.1.0
 * @category constants
 */
export const HV_INVALIDARG = 0x80070057
/**
 * Status: the GUID was not found.
 *
 * @since 0.1.0
 * @category constants
 */
export const HV_GUID_NOTFOUND = 0x80041002
/**
 * Status: the object already exists.
 *
 * @since 0.1.0
 * @category constants
 */
export const HV_ERROR_ALREADY_EXISTS = 0x80070050
/**
 * Status: the disk is full.
 *
 * @since 0.1.0
 * @category constants
 */
export const HV_ERROR_DISK_FULL = 0x80070070

// KVP (include/uapi/linux/hyperv.h: enum hv_kvp_exchg_op, enum hv_kvp_exchg_pool, REG_*).

/**
 * KVP operation: get a key.
 *
 * @since 0.1.0
 * @category constants
 */
export const KVP_OP_GET = 0
/**
 * KVP operation: set a key.
 *
 * @since 0.1.0
 * @category constants
 */
export const KVP_OP_SET = 1
/**
 * KVP operation: delete a key.
 *
 * @since 0.1.0
 * @category constants
 */
export const KVP_OP_DELETE = 2
/**
 * KVP operation: enumerate a pool by index.
 *
 * @since 0.1.0
 * @category constants
 */
export const KVP_OP_ENUMERATE = 3
/**
 * KVP operation: get IP configuration (not implemented by this library).
 *
 * @since 0.1.0
 * @category constants
 */
export const KVP_OP_GET_IP_INFO = 4
/**
 * KVP operation: set IP configuration (not implemented by this library).
 *
 * @since 0.1.0
 * @category constants
 */
export const KVP_OP_SET_IP_INFO = 5

/**
 * KVP pool 0 (Linux `KVP_POOL_EXTERNAL`): pairs the host writes for the guest.
 *
 * @since 0.1.0
 * @category constants
 */
export const KVP_POOL_EXTERNAL = 0
/**
 * KVP pool 1 (Linux `KVP_POOL_GUEST`): pairs the guest writes for the host.
 *
 * @since 0.1.0
 * @category constants
 */
export const KVP_POOL_GUEST = 1
/**
 * KVP pool 2 (Linux `KVP_POOL_AUTO`).
 *
 * @since 0.1.0
 * @category constants
 */
export const KVP_POOL_AUTO = 2
/**
 * KVP pool 3 (Linux `KVP_POOL_AUTO_EXTERNAL`).
 *
 * @since 0.1.0
 * @category constants
 */
export const KVP_POOL_AUTO_EXTERNAL = 3
/**
 * KVP pool 4 (Linux `KVP_POOL_AUTO_INTERNAL`).
 *
 * @since 0.1.0
 * @category constants
 */
export const KVP_POOL_AUTO_INTERNAL = 4

/**
 * KVP value type: a UTF-16 string.
 *
 * @since 0.1.0
 * @category constants
 */
export const REG_SZ = 1
/**
 * KVP value type: a 32-bit integer.
 *
 * @since 0.1.0
 * @category constants
 */
export const REG_U32 = 4
/**
 * KVP value type: a 64-bit integer.
 *
 * @since 0.1.0
 * @category constants
 */
export const REG_U64 = 8

/**
 * Size of the `key` field in bytes, including the UTF-16 NUL terminator.
 *
 * @since 0.1.0
 * @category constants
 */
export const HV_KVP_EXCHANGE_MAX_KEY_SIZE = 512
/**
 * Size of the `value` field in bytes, including the UTF-16 NUL terminator for `REG_SZ`.
 *
 * @since 0.1.0
 * @category constants
 */
export const HV_KVP_EXCHANGE_MAX_VALUE_SIZE = 2048

// Service GUIDs (include/linux/hyperv.h, HV_*_GUID).

/**
 * Interface type GUID of the shutdown service.
 *
 * @since 0.1.0
 * @category constants
 */
export const HV_SHUTDOWN_GUID = "0e0b6031-5213-4934-818b-38d90ced39db"
/**
 * Interface type GUID of the time-sync service.
 *
 * @since 0.1.0
 * @category constants
 */
export const HV_TS_GUID = "9527e630-d0ae-497b-adce-e80ab0175caf"
/**
 * Interface type GUID of the heartbeat service.
 *
 * @since 0.1.0
 * @category constants
 */
export const HV_HEART_BEAT_GUID = "57164f39-9115-4e78-ab55-382f3bd5422d"
/**
 * Interface type GUID of the KVP service.
 *
 * @since 0.1.0
 * @category constants
 */
export const HV_KVP_GUID = "a9a0f4e7-5a45-4d96-b827-8a841e8c03e6"
/**
 * Interface type GUID of the VSS service.
 *
 * @since 0.1.0
 * @category constants
 */
export const HV_VSS_GUID = "35fa2e29-ea23-4236-96ae-3a6ebacba440"
/**
 * Interface type GUID of the file-copy service.
 *
 * @since 0.1.0
 * @category constants
 */
export const HV_FCOPY_GUID = "34d14be3-dee4-41c8-9ae7-6b174977c192"

// ---------------------------------------------------------------------------------------------
// Common header structs (include/linux/hyperv.h)
// ---------------------------------------------------------------------------------------------

const { u16, u32, u64, u8 } = BinarySchema

/**
 * `struct vmbuspipe_hdr { u32 flags; u32 msgsize; } __packed` — 8 bytes.
 *
 * @since 0.1.0
 * @category schemas
 */
export const VmbusPipeHdr = BinarySchema.struct({ flags: u32, msgsize: u32 }, { identifier: "vmbuspipe_hdr" })

/**
 * @since 0.1.0
 * @category models
 */
export type VmbusPipeHdr = typeof VmbusPipeHdr.Type

/**
 * `struct ic_version { u16 major; u16 minor; } __packed` — 4 bytes. Linux's version tables encode it
 * as `major << 16 | minor`.
 *
 * @since 0.1.0
 * @category schemas
 */
export const IcVersion = BinarySchema.struct({ major: u16, minor: u16 }, { identifier: "ic_version" })

/**
 * @since 0.1.0
 * @category models
 */
export type IcVersion = typeof IcVersion.Type

/**
 * `struct icmsg_hdr` — 20 bytes: `icverframe` (0), `icmsgtype` (4), `icvermsg` (6), `icmsgsize` (10),
 * `status` (12), `ictransaction_id` (16), `icflags` (17), `reserved[2]` (18).
 *
 * @since 0.1.0
 * @category schemas
 */
export const IcMsgHdr = BinarySchema.struct({
  icverframe: IcVersion,
  icmsgtype: u16,
  icvermsg: IcVersion,
  icmsgsize: u16,
  status: u32,
  ictransaction_id: u8,
  icflags: u8,
  reserved: BinarySchema.reserved(2)
}, { identifier: "icmsg_hdr" })

/**
 * @since 0.1.0
 * @category models
 */
export type IcMsgHdr = typeof IcMsgHdr.Type

/**
 * `struct icmsg_negotiate { u16 icframe_vercnt; u16 icmsg_vercnt; u32 reserved; struct ic_version
 * icversion_data[]; }` — 8 bytes plus 4 per version. `icversion_data` holds `icframe_vercnt`
 * framework versions then `icmsg_vercnt` message versions; here they are two arrays,
 * `framework_versions` and `message_versions`, each capped at
 * {@link IC_VERSION_NEGOTIATION_MAX_VER_COUNT} as Linux validates.
 *
 * @since 0.1.0
 * @category schemas
 */
export const IcMsgNegotiate = BinarySchema.struct({
  icframe_vercnt: u16,
  icmsg_vercnt: u16,
  reserved: BinarySchema.reserved(4),
  framework_versions: BinarySchema.array("icframe_vercnt", IcVersion, {
    maxLength: IC_VERSION_NEGOTIATION_MAX_VER_COUNT
  }),
  message_versions: BinarySchema.array("icmsg_vercnt", IcVersion, { maxLength: IC_VERSION_NEGOTIATION_MAX_VER_COUNT })
}, { identifier: "icmsg_negotiate" })

/**
 * @since 0.1.0
 * @category models
 */
export type IcMsgNegotiate = typeof IcMsgNegotiate.Type

// ---------------------------------------------------------------------------------------------
// Service bodies (include/linux/hyperv.h)
// ---------------------------------------------------------------------------------------------

/**
 * `struct heartbeat_msg_data { u64 seq_num; u32 reserved[8]; }` — 40 bytes. Linux answers by
 * incrementing `seq_num`.
 *
 * @since 0.1.0
 * @category schemas
 */
export const HeartbeatMsgData = BinarySchema.struct(
  { seq_num: u64, reserved: BinarySchema.reserved(32) },
  { identifier: "heartbeat_msg_data" }
)

/**
 * @since 0.1.0
 * @category models
 */
export type HeartbeatMsgData = typeof HeartbeatMsgData.Type

/**
 * `struct shutdown_msg_data { u32 reason_code; u32 timeout_seconds; u32 flags; u8
 * display_message[2048]; }` — 2060 bytes. `display_message` is raw bytes, as Linux declares it
 * (Linux never reads it). Per hv_util.c, `flags` is 0 (shut down), 2 (reboot) or 4 (hibernate),
 * possibly OR 1 (force).
 *
 * @since 0.1.0
 * @category schemas
 */
export const ShutdownMsgData = BinarySchema.struct({
  reason_code: u32,
  timeout_seconds: u32,
  flags: u32,
  display_message: BinarySchema.bytes(2048)
}, { identifier: "shutdown_msg_data" })

/**
 * @since 0.1.0
 * @category models
 */
export type ShutdownMsgData = typeof ShutdownMsgData.Type

/**
 * `struct ictimesync_data { u64 parenttime; u64 childtime; u64 roundtriptime; u8 flags; }` — 25
 * bytes; used by TimeSync versions up to 3.0. Times are 100 ns units since 1601 (see
 * {@link WLTIMEDELTA}).
 *
 * @since 0.1.0
 * @category schemas
 */
export const IcTimesyncData = BinarySchema.struct({
  parenttime: u64,
  childtime: u64,
  roundtriptime: u64,
  flags: u8
}, { identifier: "ictimesync_data" })

/**
 * @since 0.1.0
 * @category models
 */
export type IcTimesyncData = typeof IcTimesyncData.Type

/**
 * `struct ictimesync_ref_data { u64 parenttime; u64 vmreferencetime; u8 flags; char leapflags; char
 * stratum; u8 reserved[3]; }` — 22 bytes; used by TimeSync 4.0 (Linux: `ts_srv_version >
 * TS_VERSION_3`). `leapflags` and `stratum` are C `char`; they are read here as `u8`.
 *
 * @since 0.1.0
 * @category schemas
 */
export const IcTimesyncRefData = BinarySchema.struct({
  parenttime: u64,
  vmreferencetime: u64,
  flags: u8,
  leapflags: u8,
  stratum: u8,
  reserved: BinarySchema.reserved(3)
}, { identifier: "ictimesync_ref_data" })

/**
 * @since 0.1.0
 * @category models
 */
export type IcTimesyncRefData = typeof IcTimesyncRefData.Type

// ---------------------------------------------------------------------------------------------
// KVP (include/uapi/linux/hyperv.h)
// ---------------------------------------------------------------------------------------------

/**
 * `struct hv_kvp_hdr { __u8 operation; __u8 pool; __u16 pad; }` — 4 bytes (the first member of
 * `hv_kvp_msg`; the `int error` alternative is only used between the Linux driver and its daemon).
 *
 * @since 0.1.0
 * @category schemas
 */
export const KvpHdr = BinarySchema.struct(
  { operation: u8, pool: u8, pad: BinarySchema.reserved(2) },
  { identifier: "hv_kvp_hdr" }
)

/**
 * @since 0.1.0
 * @category models
 */
export type KvpHdr = typeof KvpHdr.Type

/**
 * `struct hv_kvp_exchg_msg_value { __u32 value_type; __u32 key_size; __u32 value_size; __u8
 * key[512]; union { __u8 value[2048]; __u32 value_u32; __u64 value_u64; }; }` — 2572 bytes.
 *
 * `key` is UTF-16LE (decoding stops at the first NUL; at most 255 code units plus the terminator);
 * `key_size` and `value_size` are byte counts including the terminator, as the host sends them.
 * `value` is kept as raw bytes because its meaning depends on `value_type` (`REG_SZ`: UTF-16LE,
 * `REG_U32`/`REG_U64`: little-endian integers); see {@link kvpValueOf} and {@link kvpStringValue}.
 *
 * @since 0.1.0
 * @category schemas
 */
export const KvpExchgMsgValue = BinarySchema.struct({
  value_type: u32,
  key_size: u32,
  value_size: u32,
  key: BinarySchema.utf16(HV_KVP_EXCHANGE_MAX_KEY_SIZE),
  value: BinarySchema.bytes(HV_KVP_EXCHANGE_MAX_VALUE_SIZE)
}, { identifier: "hv_kvp_exchg_msg_value" })

/**
 * @since 0.1.0
 * @category models
 */
export type KvpExchgMsgValue = typeof KvpExchgMsgValue.Type

/**
 * `struct hv_kvp_msg_get { struct hv_kvp_exchg_msg_value data; }` — 2572 bytes.
 *
 * @since 0.1.0
 * @category schemas
 */
export const KvpMsgGet = BinarySchema.struct({ data: KvpExchgMsgValue }, { identifier: "hv_kvp_msg_get" })

/**
 * `struct hv_kvp_msg_set { struct hv_kvp_exchg_msg_value data; }` — 2572 bytes.
 *
 * @since 0.1.0
 * @category schemas
 */
export const KvpMsgSet = BinarySchema.struct({ data: KvpExchgMsgValue }, { identifier: "hv_kvp_msg_set" })

/**
 * `struct hv_kvp_msg_delete { __u32 key_size; __u8 key[512]; }` — 516 bytes.
 *
 * @since 0.1.0
 * @category schemas
 */
export const KvpMsgDelete = BinarySchema.struct({
  key_size: u32,
  key: BinarySchema.utf16(HV_KVP_EXCHANGE_MAX_KEY_SIZE)
}, { identifier: "hv_kvp_msg_delete" })

/**
 * `struct hv_kvp_msg_enumerate { __u32 index; struct hv_kvp_exchg_msg_value data; }` — 2576 bytes.
 *
 * @since 0.1.0
 * @category schemas
 */
export const KvpMsgEnumerate = BinarySchema.struct(
  { index: u32, data: KvpExchgMsgValue },
  { identifier: "hv_kvp_msg_enumerate" }
)

const kvpMsg = <F extends BinarySchema.Fields>(fields: F, identifier: string) =>
  BinarySchema.struct(fields, { identifier, trailingBytes: "ignore" })

/**
 * `hv_kvp_msg` for `KVP_OP_GET`: `kvp_hdr` + `body.kvp_get`. Decoding ignores the rest of the
 * body union. The same holds for {@link KvpSetMsg}, {@link KvpDeleteMsg}, {@link KvpEnumerateMsg}.
 *
 * @since 0.1.0
 * @category schemas
 */
export const KvpGetMsg = kvpMsg({ kvp_hdr: KvpHdr, kvp_get: KvpMsgGet }, "hv_kvp_msg")

/**
 * `hv_kvp_msg` carrying a set operation.
 *
 * @since 0.1.0
 * @category schemas
 */
export const KvpSetMsg = kvpMsg({ kvp_hdr: KvpHdr, kvp_set: KvpMsgSet }, "hv_kvp_msg")

/**
 * `hv_kvp_msg` carrying a delete operation.
 *
 * @since 0.1.0
 * @category schemas
 */
export const KvpDeleteMsg = kvpMsg({ kvp_hdr: KvpHdr, kvp_delete: KvpMsgDelete }, "hv_kvp_msg")

/**
 * `hv_kvp_msg` carrying an enumerate operation.
 *
 * @since 0.1.0
 * @category schemas
 */
export const KvpEnumerateMsg = kvpMsg({ kvp_hdr: KvpHdr, kvp_enum_data: KvpMsgEnumerate }, "hv_kvp_msg")

/**
 * A decoded `hv_kvp_msg`, by `kvp_hdr.operation`. `Other` covers the IP-info operations and unknown
 * ones, with the body bytes after `kvp_hdr`.
 *
 * @since 0.1.0
 * @category models
 */
export type KvpMessage =
  | ({ readonly _tag: "Get" } & typeof KvpGetMsg.Type)
  | ({ readonly _tag: "Set" } & typeof KvpSetMsg.Type)
  | ({ readonly _tag: "Delete" } & typeof KvpDeleteMsg.Type)
  | ({ readonly _tag: "Enumerate" } & typeof KvpEnumerateMsg.Type)
  | { readonly _tag: "Other"; readonly kvp_hdr: KvpHdr; readonly body: Uint8Array }

/**
 * Decodes an `hv_kvp_msg` (the body of a `ICMSGTYPE_KVPEXCHANGE` packet).
 *
 * @since 0.1.0
 * @category decoding
 */
export const decodeKvpMessage = (body: Uint8Array): Either.Either<KvpMessage, ParseResult.ParseError> =>
  Either.flatMap(BinarySchema.decodePrefix(KvpHdr)(body), ({ value: kvp_hdr }): Either.Either<
    KvpMessage,
    ParseResult.ParseError
  > => {
    switch (kvp_hdr.operation) {
      case KVP_OP_GET:
        return Either.map(decodeGet(body), (m) => ({ _tag: "Get", ...m }))
      case KVP_OP_SET:
        return Either.map(decodeSet(body), (m) => ({ _tag: "Set", ...m }))
      case KVP_OP_DELETE:
        return Either.map(decodeDelete(body), (m) => ({ _tag: "Delete", ...m }))
      case KVP_OP_ENUMERATE:
        return Either.map(decodeEnumerate(body), (m) => ({ _tag: "Enumerate", ...m }))
      default:
        return Either.right({ _tag: "Other", kvp_hdr, body: body.slice(KVP_HDR_SIZE) })
    }
  })

const decodeGet = BinarySchema.decodeEither(KvpGetMsg)
const decodeSet = BinarySchema.decodeEither(KvpSetMsg)
const decodeDelete = BinarySchema.decodeEither(KvpDeleteMsg)
const decodeEnumerate = BinarySchema.decodeEither(KvpEnumerateMsg)
const encodeHdr = BinarySchema.encodeEither(KvpHdr)

/**
 * Encodes an `hv_kvp_msg`: `kvp_hdr` followed by the member for the tag (not padded to
 * {@link HV_KVP_MSG_SIZE}; Linux answers with the host's buffer, see {@link BinarySchema.encodeInto}).
 *
 * @since 0.1.0
 * @category encoding
 */
export const encodeKvpMessage = (message: KvpMessage): Either.Either<Uint8Array, ParseResult.ParseError> => {
  switch (message._tag) {
    case "Get":
      return BinarySchema.encodeEither(KvpGetMsg)(message)
    case "Set":
      return BinarySchema.encodeEither(KvpSetMsg)(message)
    case "Delete":
      return BinarySchema.encodeEither(KvpDeleteMsg)(message)
    case "Enumerate":
      return BinarySchema.encodeEither(KvpEnumerateMsg)(message)
    case "Other":
      return Either.map(encodeHdr(message.kvp_hdr), (hdr) => {
        const out = new Uint8Array(hdr.length + message.body.length)
        out.set(hdr)
        out.set(message.body, hdr.length)
        return out
      })
  }
}

const KvpStrings = BinarySchema.struct({
  key: BinarySchema.utf16(HV_KVP_EXCHANGE_MAX_KEY_SIZE),
  value: BinarySchema.utf16(HV_KVP_EXCHANGE_MAX_VALUE_SIZE)
}, { identifier: "hv_kvp_exchg_msg_value" })

const encodeKvpStrings = BinarySchema.encodeEither(KvpStrings)

/**
 * Builds a `REG_SZ` `hv_kvp_exchg_msg_value` the way `kvp_respond_to_host` does: key and value as
 * UTF-16LE, `key_size = 2 * (key.length + 1)`, `value_size = 2 * (value.length + 1)` (bytes,
 * terminator included). Fails when the key exceeds 255 or the value 1023 UTF-16 code units (the
 * fields' capacity with the terminator; Linux itself writes at most 254 and 1022).
 *
 * @since 0.1.0
 * @category constructors
 */
export const kvpStringValue = (
  key: string,
  value: string
): Either.Either<KvpExchgMsgValue, ParseResult.ParseError> =>
  Either.map(encodeKvpStrings({ key, value }), (bytes) => ({
    value_type: REG_SZ,
    key_size: 2 * (key.length + 1),
    value_size: 2 * (value.length + 1),
    key,
    value: bytes.slice(HV_KVP_EXCHANGE_MAX_KEY_SIZE)
  }))

/**
 * Reads an `hv_kvp_exchg_msg_value`'s value by `value_type`: `REG_SZ` → string (UTF-16LE, up to
 * `value_size` bytes or the first NUL), `REG_U32` → number, `REG_U64` → bigint, anything else → the
 * first `value_size` bytes (at most 2048).
 *
 * @since 0.1.0
 * @category getters
 */
export const kvpValueOf = (data: KvpExchgMsgValue): string | number | bigint | Uint8Array => {
  const view = new DataView(data.value.buffer, data.value.byteOffset, data.value.byteLength)
  const limit = Math.min(data.value_size, data.value.length)
  switch (data.value_type) {
    case REG_SZ: {
      const units: Array<number> = []
      for (let o = 0; o + 1 < limit; o += 2) {
        const unit = view.getUint16(o, true)
        if (unit === 0) break
        units.push(unit)
      }
      return String.fromCharCode(...units)
    }
    case REG_U32:
      return view.getUint32(0, true)
    case REG_U64:
      return view.getBigUint64(0, true)
    default:
      return data.value.slice(0, limit)
  }
}

// ---------------------------------------------------------------------------------------------
// Sizes (verified against the headers in the tests)
// ---------------------------------------------------------------------------------------------

/**
 * `sizeof(struct vmbuspipe_hdr)`.
 *
 * @since 0.1.0
 * @category constants
 */
export const VMBUSPIPE_HDR_SIZE = 8
/**
 * `sizeof(struct ic_version)`.
 *
 * @since 0.1.0
 * @category constants
 */
export const IC_VERSION_SIZE = 4
/**
 * `sizeof(struct icmsg_hdr)`.
 *
 * @since 0.1.0
 * @category constants
 */
export const ICMSG_HDR_SIZE = 20
/**
 * `ICMSG_HDR`: `sizeof(struct vmbuspipe_hdr) + sizeof(struct icmsg_hdr)`, the offset of every body.
 *
 * @since 0.1.0
 * @category constants
 */
export const ICMSG_HDR = 28
/**
 * `sizeof(struct icmsg_negotiate)` (without `icversion_data`).
 *
 * @since 0.1.0
 * @category constants
 */
export const ICMSG_NEGOTIATE_SIZE = 8
/**
 * `sizeof(struct heartbeat_msg_data)`.
 *
 * @since 0.1.0
 * @category constants
 */
export const HEARTBEAT_MSG_DATA_SIZE = 40
/**
 * `sizeof(struct shutdown_msg_data)`.
 *
 * @since 0.1.0
 * @category constants
 */
export const SHUTDOWN_MSG_DATA_SIZE = 2060
/**
 * `sizeof(struct ictimesync_data)`.
 *
 * @since 0.1.0
 * @category constants
 */
export const ICTIMESYNC_DATA_SIZE = 25
/**
 * `sizeof(struct ictimesync_ref_data)`.
 *
 * @since 0.1.0
 * @category constants
 */
export const ICTIMESYNC_REF_DATA_SIZE = 22
/**
 * `sizeof(struct hv_kvp_hdr)`.
 *
 * @since 0.1.0
 * @category constants
 */
export const KVP_HDR_SIZE = 4
/**
 * `sizeof(struct hv_kvp_exchg_msg_value)`.
 *
 * @since 0.1.0
 * @category constants
 */
export const KVP_EXCHG_MSG_VALUE_SIZE = 2572
/**
 * `sizeof(struct hv_kvp_msg_delete)`.
 *
 * @since 0.1.0
 * @category constants
 */
export const KVP_MSG_DELETE_SIZE = 516
/**
 * `sizeof(struct hv_kvp_msg_enumerate)`.
 *
 * @since 0.1.0
 * @category constants
 */
export const KVP_MSG_ENUMERATE_SIZE = 2576
/**
 * `sizeof(struct hv_kvp_msg)`: 4 (`kvp_hdr`) + 7426, the largest body member being
 * `hv_kvp_ipaddr_value` (u16 adapter_id[128], u8 addr_family, u8 dhcp_enabled, u16 ip_addr[1024],
 * u16 sub_net[1024], u16 gate_way[512], u16 dns_addr[1024]; not modelled here).
 *
 * @since 0.1.0
 * @category constants
 */
export const HV_KVP_MSG_SIZE = 7430

/**
 * `ICMSG_NEGOTIATE_PKT_SIZE(icframe_vercnt, icmsg_vercnt)`: the whole negotiate packet size.
 *
 * @since 0.1.0
 * @category constants
 */
export const icmsgNegotiatePktSize = (icframeVercnt: number, icmsgVercnt: number): number =>
  ICMSG_HDR + ICMSG_NEGOTIATE_SIZE + (icframeVercnt + icmsgVercnt) * IC_VERSION_SIZE

// ---------------------------------------------------------------------------------------------
// Whole packets
// ---------------------------------------------------------------------------------------------

/**
 * The 28-byte prefix of every IC packet: `vmbuspipe_hdr` then `icmsg_hdr`.
 *
 * @since 0.1.0
 * @category schemas
 */
export const IcPacketHeader = BinarySchema.struct(
  { pipe_hdr: VmbusPipeHdr, icmsg_hdr: IcMsgHdr },
  { identifier: "ic_packet" }
)

/**
 * @since 0.1.0
 * @category models
 */
export type IcPacketHeader = typeof IcPacketHeader.Type

/**
 * A whole IC packet: `{ pipe_hdr, icmsg_hdr, body }`, with `body` laid out by `body` at offset
 * {@link ICMSG_HDR}. With `trailingBytes: "ignore"` decoding accepts bytes after the body (as for
 * the `hv_kvp_msg` union). `icmsg_hdr.icmsgsize` is not computed: set it as the protocol requires.
 *
 * @since 0.1.0
 * @category constructors
 */
export const icPacket = <S extends BinarySchema.Struct<any>>(
  body: S,
  options?: { readonly trailingBytes?: "reject" | "ignore" }
): BinarySchema.Struct<
  { readonly pipe_hdr: typeof VmbusPipeHdr; readonly icmsg_hdr: typeof IcMsgHdr; readonly body: S }
> =>
  BinarySchema.struct({ pipe_hdr: VmbusPipeHdr, icmsg_hdr: IcMsgHdr, body }, {
    identifier: `ic_packet<${body.identifier}>`,
    trailingBytes: options?.trailingBytes ?? "reject"
  })

const decodeHeaderPrefix = BinarySchema.decodePrefix(IcPacketHeader)

/**
 * Decodes the `vmbuspipe_hdr` + `icmsg_hdr` prefix of an IC packet of any type; the body starts at
 * {@link ICMSG_HDR}.
 *
 * @since 0.1.0
 * @category decoding
 */
export const decodeIcHeader = (packet: Uint8Array): Either.Either<IcPacketHeader, ParseResult.ParseError> =>
  Either.map(decodeHeaderPrefix(packet), (r) => r.value)

// ---------------------------------------------------------------------------------------------
// Version negotiation (drivers/hv/channel_mgmt.c: vmbus_prep_negotiate_resp)
// ---------------------------------------------------------------------------------------------

const v = (major: number, minor: number): IcVersion => ({ major, minor })

/**
 * `fw_versions` (hv_util.c, hv_kvp.c): `UTIL_FW_VERSION` 3.0, `UTIL_WS2K8_FW_VERSION` 1.0.
 *
 * @since 0.1.0
 * @category constants
 */
export const UTIL_FW_VERSIONS: ReadonlyArray<IcVersion> = [v(3, 0), v(1, 0)]
/**
 * `hb_versions` (hv_util.c): 3.0, 1.0.
 *
 * @since 0.1.0
 * @category constants
 */
export const HB_VERSIONS: ReadonlyArray<IcVersion> = [v(3, 0), v(1, 0)]
/**
 * `ts_versions` (hv_util.c): 4.0, 3.0, 1.0.
 *
 * @since 0.1.0
 * @category constants
 */
export const TS_VERSIONS: ReadonlyArray<IcVersion> = [v(4, 0), v(3, 0), v(1, 0)]
/**
 * `sd_versions` (hv_util.c): 3.2, 3.1, 3.0, 1.0.
 *
 * @since 0.1.0
 * @category constants
 */
export const SD_VERSIONS: ReadonlyArray<IcVersion> = [v(3, 2), v(3, 1), v(3, 0), v(1, 0)]
/**
 * `kvp_versions` (hv_kvp.c): `WIN8_SRV_VERSION` 4.0, `WIN7_SRV_VERSION` 3.0, `WS2008_SRV_VERSION` 1.0.
 *
 * @since 0.1.0
 * @category constants
 */
export const KVP_VERSIONS: ReadonlyArray<IcVersion> = [v(4, 0), v(3, 0), v(1, 0)]

/**
 * The versions a service supports, most preferred first (Linux lists them in decreasing order).
 *
 * @since 0.1.0
 * @category models
 */
export interface SupportedVersions {
  /** Framework versions, most preferred first. */
  readonly framework: ReadonlyArray<IcVersion>
  /** Message versions, most preferred first. */
  readonly message: ReadonlyArray<IcVersion>
}

/**
 * A successful negotiation: the versions chosen and the response to send.
 *
 * @since 0.1.0
 * @category models
 */
export interface Negotiated {
  readonly _tag: "Negotiated"
  /** The framework version chosen. */
  readonly framework: IcVersion
  /** The message version chosen. */
  readonly message: IcVersion
  /** The whole response packet, to send back with the request's transaction id. */
  readonly response: Uint8Array
}

/**
 * No common version (`reason` says which kind), or a negotiate Linux refuses to read
 * (`"InvalidRequest"`: more than 100 versions of a kind, or fewer bytes than the counts announce).
 * `response` is what Linux sends then: counts 0/0.
 *
 * @since 0.1.0
 * @category models
 */
export interface NoCommonVersion {
  readonly _tag: "NoCommonVersion"
  /** Which kind of version had no match, or `InvalidRequest`. */
  readonly reason: "Framework" | "Message" | "InvalidRequest"
  /** The framework versions the host offered. */
  readonly offeredFramework: ReadonlyArray<IcVersion>
  /** The message versions the host offered. */
  readonly offeredMessage: ReadonlyArray<IcVersion>
  /** The response to send (counts 0/0). */
  readonly response: Uint8Array
}

/**
 * The outcome of `negotiate`.
 *
 * @since 0.1.0
 * @category models
 */
export type Negotiation = Negotiated | NoCommonVersion

const OFFSET_ICMSGSIZE = VMBUSPIPE_HDR_SIZE + 10
const OFFSET_ICFLAGS = VMBUSPIPE_HDR_SIZE + 17
const OFFSET_VERCNT = ICMSG_HDR
const OFFSET_VERSIONS = ICMSG_HDR + ICMSG_NEGOTIATE_SIZE

const negotiateError = (packet: Uint8Array, message: string): ParseResult.ParseError =>
  ParseResult.parseError(new ParseResult.Type(IcPacketHeader.ast, packet, message))

const pick = (ours: ReadonlyArray<IcVersion>, offered: ReadonlyArray<IcVersion>): IcVersion | undefined => {
  for (const candidate of ours) {
    if (offered.some((o) => o.major === candidate.major && o.minor === candidate.minor)) return candidate
  }
  return undefined
}

/**
 * Answers a host negotiate packet (`vmbuspipe_hdr` + `icmsg_hdr` + `icmsg_negotiate`) exactly as
 * `vmbus_prep_negotiate_resp` and its callers do:
 *
 * - the framework version is the first of `supported.framework` that the host offers, then the
 *   message version likewise (so the highest common one when lists are in decreasing order);
 * - the response is a copy of the request with `icmsgsize = 0x10`, `icflags = TRANSACTION |
 *   RESPONSE`, `icframe_vercnt = icmsg_vercnt = 1` and `icversion_data[0..1]` = the chosen versions;
 *   `status`, the transaction id and every other byte are echoed;
 * - without a match the counts are 0/0 and `icversion_data[0..1]` hold what Linux leaves there:
 *   the matched framework version or `{ major: icframe_vercnt, minor: 0 }`, then
 *   `{ major: icmsg_vercnt, minor: 0 }`.
 *
 * One deliberate difference: the response is at least `icmsgNegotiatePktSize(1, 1)` = 44 bytes, so
 * both version slots are always sent (Linux sends the request's length).
 *
 * Fails with a `ParseError` when the packet is shorter than `ICMSG_HDR + 4` (Linux then answers
 * nothing meaningful) or is not `ICMSGTYPE_NEGOTIATE`.
 *
 * @since 0.1.0
 * @category negotiation
 */
export const negotiate = (
  request: Uint8Array,
  supported: SupportedVersions
): Either.Either<Negotiation, ParseResult.ParseError> => {
  if (request.length < OFFSET_VERCNT + 4) {
    return Either.left(
      negotiateError(
        request,
        `icmsg_negotiate: truncated: ${request.length} bytes, at least ${OFFSET_VERCNT + 4} needed for the counts`
      )
    )
  }
  const header = decodeHeaderPrefix(request)
  if (Either.isLeft(header)) return Either.left(header.left)
  const icmsgtype = header.right.value.icmsg_hdr.icmsgtype
  if (icmsgtype !== ICMSGTYPE_NEGOTIATE) {
    return Either.left(
      negotiateError(request, `ic_packet.icmsg_hdr.icmsgtype: expected ICMSGTYPE_NEGOTIATE (0), got ${icmsgtype}`)
    )
  }
  const view = new DataView(request.buffer, request.byteOffset, request.byteLength)
  const frameCount = view.getUint16(OFFSET_VERCNT, true)
  const msgCount = view.getUint16(OFFSET_VERCNT + 2, true)
  const readVersions = (from: number, count: number): Array<IcVersion> =>
    Array.from({ length: count }, (_, i) =>
      v(
        view.getUint16(OFFSET_VERSIONS + (from + i) * IC_VERSION_SIZE, true),
        view.getUint16(OFFSET_VERSIONS + (from + i) * IC_VERSION_SIZE + 2, true)
      ))

  let offeredFramework: ReadonlyArray<IcVersion> = []
  let offeredMessage: ReadonlyArray<IcVersion> = []
  let framework: IcVersion | undefined
  let message: IcVersion | undefined
  let reason: NoCommonVersion["reason"] | undefined
  if (
    frameCount > IC_VERSION_NEGOTIATION_MAX_VER_COUNT ||
    msgCount > IC_VERSION_NEGOTIATION_MAX_VER_COUNT ||
    icmsgNegotiatePktSize(frameCount, msgCount) > request.length
  ) {
    reason = "InvalidRequest"
  } else {
    offeredFramework = readVersions(0, frameCount)
    offeredMessage = readVersions(frameCount, msgCount)
    framework = pick(supported.framework, offeredFramework)
    if (framework === undefined) {
      reason = "Framework"
    } else {
      message = pick(supported.message, offeredMessage)
      if (message === undefined) reason = "Message"
    }
  }

  const response = new Uint8Array(Math.max(request.length, icmsgNegotiatePktSize(1, 1)))
  response.set(request)
  const out = new DataView(response.buffer)
  const found = reason === undefined
  const slot0 = framework ?? v(frameCount, 0)
  const slot1 = message ?? v(msgCount, 0)
  out.setUint16(OFFSET_ICMSGSIZE, 0x10, true)
  out.setUint8(OFFSET_ICFLAGS, ICMSGHDRFLAG_TRANSACTION | ICMSGHDRFLAG_RESPONSE)
  out.setUint16(OFFSET_VERCNT, found ? 1 : 0, true)
  out.setUint16(OFFSET_VERCNT + 2, found ? 1 : 0, true)
  out.setUint16(OFFSET_VERSIONS, slot0.major, true)
  out.setUint16(OFFSET_VERSIONS + 2, slot0.minor, true)
  out.setUint16(OFFSET_VERSIONS + 4, slot1.major, true)
  out.setUint16(OFFSET_VERSIONS + 6, slot1.minor, true)

  return Either.right(
    reason === undefined
      ? { _tag: "Negotiated", framework: slot0, message: slot1, response }
      : { _tag: "NoCommonVersion", reason, offeredFramework, offeredMessage, response }
  )
}

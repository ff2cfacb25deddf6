// Discovery of a uio_hv_generic device under a sysfs root (native-transport.md §1.2, §4.2), through
// a `Files` reader (@effect/platform's FileSystem fits it) so tests point it at an emulated tree. Everything read is checked
// against the kernel's formats; a value that does not fit is a typed error naming the file.
import * as Effect from "effect/Effect"
import type { Files } from "./files.js"
import { DeviceMapInvalid, DeviceNotBound, DeviceNotFound, SysfsInvalid } from "../../VmbusError.js"

export const DRIVER = "uio_hv_generic"

const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

export const CLASS_NAMES: Readonly<Record<string, string>> = {
  "f8615163-df3e-46c5-913f-f2d2f965ed0e": "network",
  "ba6163d9-04a1-4d29-b605-72e2ffb1dc7f": "scsi",
  "32412632-86cb-44a2-9b5c-50d1417354f5": "ide",
  "2f9bcc4a-0069-4af3-b76b-6fd0be528cda": "fibre-channel",
  "8c2eaf3d-32a7-4b09-ab99-bd1f1c86b501": "network-direct",
  "44c4f61d-4444-4400-9d52-802e27ede19f": "pci",
  "da0a7802-e377-4aac-8e77-0558eb1073f8": "framebuffer",
  "f912ad6d-2b17-48ea-bd65-f927a61c7684": "keyboard",
  "cfa8b69e-5b4a-4cc0-b98b-8ba1a1f3f95a": "mouse",
  "a9a0f4e7-5a45-4d96-b827-8a841e8c03e6": "kvp",
  "9527e630-d0ae-497b-adce-e80ab0175caf": "timesync",
  "57164f39-9115-4e78-ab55-382f3bd5422d": "heartbeat",
  "0e0b6031-5213-4934-818b-38d90ced39db": "shutdown",
  "35fa2e29-ea23-4236-96ae-3a6ebacba440": "vss",
  "525074dc-8985-46e2-8057-a307dc18a502": "dynamic-memory",
  "eb765408-105f-49b6-b4aa-c123b64d17d4": "fcopy"
}

export const className = (classId: string): string => CLASS_NAMES[classId] ?? "unknown"

export interface MapInfo {
  readonly index: number
  readonly name: string
  readonly size: number
  /** The GPADL handle of a `recv:<n>` / `send:<n>` buffer. */
  readonly gpadl?: number | undefined
}

export interface DeviceInfo {
  readonly instance: string
  readonly classId: string
  readonly dir: string
  /** Child relid of the primary channel. */
  readonly relid: number
  /** Absent: the channel is not monitored (signal with write(fd, 1)). */
  readonly monitorId: number | undefined
  readonly uio: string
  readonly devicePath: string
  /** Maps 0–2 always; 3 (`recv:`) and 4 (`send:`) when the kernel made them. */
  readonly maps: ReadonlyArray<MapInfo>
  /** Bytes per direction: half of map 0. */
  readonly ringSize: number
}

export interface Paths {
  readonly sysfsRoot: string
  readonly devRoot: string
}

const join = (...parts: ReadonlyArray<string>): string => parts.join("/").replace(/\/+/g, "/")

export const deviceDir = (paths: Paths, device: string): string => join(paths.sysfsRoot, "bus/vmbus/devices", device)

/** A text attribute without its trailing newline; missing or unreadable → SysfsInvalid. */
export const readText = (fs: Files, path: string): Effect.Effect<string, SysfsInvalid> =>
  fs.readFileString(path).pipe(
    Effect.map((text) => text.replace(/\n$/, "")),
    Effect.mapError((error) => new SysfsInvalid({ path, reason: `unreadable (${error.message})` }))
  )

const readOptional = (fs: Files, path: string): Effect.Effect<string | undefined, SysfsInvalid> =>
  Effect.flatMap(
    fs.exists(path).pipe(Effect.orElseSucceed(() => false)),
    (exists) => (exists ? readText(fs, path) : Effect.succeed(undefined))
  )

export const parseDecimal = (path: string, text: string, max: number): number | SysfsInvalid => {
  if (!/^\d{1,10}$/.test(text)) return new SysfsInvalid({ path, reason: "not a decimal number", value: text })
  const value = Number(text)
  return value > max ? new SysfsInvalid({ path, reason: `greater than ${max}`, value: text }) : value
}

const parseHexSize = (path: string, text: string): number | SysfsInvalid => {
  if (!/^0x[0-9a-fA-F]{1,16}$/.test(text)) return new SysfsInvalid({ path, reason: "not a 0x-prefixed hexadecimal size", value: text })
  const value = Number(BigInt(text))
  return Number.isSafeInteger(value) ? value : new SysfsInvalid({ path, reason: "size too large", value: text })
}

export const parseGuid = (path: string, text: string): string | SysfsInvalid => {
  const guid = text.replace(/^\{(.*)\}$/, "$1").toLowerCase()
  return GUID.test(guid) ? guid : new SysfsInvalid({ path, reason: "not a GUID", value: text })
}

const check = <A>(value: A | SysfsInvalid): Effect.Effect<A, SysfsInvalid> =>
  value instanceof SysfsInvalid ? Effect.fail(value) : Effect.succeed(value)

/** The last path component of the `driver` link, or undefined when unbound. */
export const readDriver = (fs: Files, dir: string): Effect.Effect<string | undefined> =>
  fs.readLink(join(dir, "driver")).pipe(
    Effect.map((target) => target.split("/").filter((part) => part.length > 0).pop()),
    Effect.orElseSucceed(() => undefined)
  )

export const bindingFix = (classId: string, instance: string): string =>
  `as root: echo ${classId} > /sys/bus/vmbus/drivers/${DRIVER}/new_id (binds every unbound device of the class), or ` +
  `echo ${DRIVER} > /sys/bus/vmbus/devices/${instance}/driver_override; ` +
  `echo ${instance} > /sys/bus/vmbus/devices/${instance}/driver/unbind; echo ${instance} > /sys/bus/vmbus/drivers_probe`

/** The `uioN` entry of the device (exactly one). */
const findUio = (fs: Files, dir: string): Effect.Effect<string, SysfsInvalid> => {
  const path = join(dir, "uio")
  return fs.readDirectory(path).pipe(
    Effect.mapError((error) => new SysfsInvalid({ path, reason: `no uio class device (${error.message})` })),
    Effect.flatMap((entries) => {
      const uio = entries.filter((entry) => /^uio\d+$/.test(entry))
      return uio.length === 1 ? Effect.succeed(uio[0]!) : Effect.fail(
        new SysfsInvalid({ path, reason: `expected exactly one uioN entry, found ${uio.length}`, value: entries.join(",") })
      )
    })
  )
}

const EXPECTED_NAMES = ["txrx_rings", "int_page", "monitor_page"] as const

const readMap = (fs: Files, mapsDir: string, index: number): Effect.Effect<MapInfo | undefined, SysfsInvalid> =>
  Effect.gen(function*() {
    const dir = join(mapsDir, `map${index}`)
    const name = yield* readOptional(fs, join(dir, "name"))
    if (name === undefined) return undefined
    const sizePath = join(dir, "size")
    const size = yield* check(parseHexSize(sizePath, yield* readText(fs, sizePath)))
    const buffer = /^(recv|send):(\d{1,10})$/.exec(name)
    return buffer === null ? { index, name, size } : { index, name, size, gpadl: Number(buffer[2]) }
  })

/** Checks the maps against §1.3: names of 0–2, map 0 two rings of whole pages, pages 1–2 one page. */
export const checkMaps = (maps: ReadonlyArray<MapInfo>, pageSize: number): DeviceMapInvalid | undefined => {
  for (let index = 0; index < EXPECTED_NAMES.length; index++) {
    const map = maps[index]
    if (map === undefined) return new DeviceMapInvalid({ map: `map${index}`, reason: `missing (expected ${EXPECTED_NAMES[index]})` })
    if (map.name !== EXPECTED_NAMES[index]) {
      return new DeviceMapInvalid({ map: `map${index}`, reason: `named ${JSON.stringify(map.name)}, expected ${EXPECTED_NAMES[index]}` })
    }
  }
  const rings = maps[0]!
  const half = rings.size / 2
  if (!Number.isInteger(half) || half % pageSize !== 0 || half <= pageSize) {
    return new DeviceMapInvalid({
      map: "map0 (txrx_rings)",
      reason: `must hold two rings of whole ${pageSize}-byte pages, each with at least one data page`,
      size: rings.size
    })
  }
  for (const map of [maps[1]!, maps[2]!]) {
    if (map.size < 4096 || map.size > pageSize) {
      return new DeviceMapInvalid({ map: `map${map.index} (${map.name})`, reason: "must be one page", size: map.size })
    }
  }
  for (const map of maps.slice(3)) {
    if (map.gpadl === undefined || map.name.slice(0, 4) !== (map.index === 3 ? "recv" : "send") || map.size === 0) {
      return new DeviceMapInvalid({ map: `map${map.index}`, reason: `unexpected map ${JSON.stringify(map.name)}`, size: map.size })
    }
  }
  return undefined
}

export const discover = (
  fs: Files,
  paths: Paths,
  device: string,
  pageSize: number
): Effect.Effect<DeviceInfo, DeviceNotFound | DeviceNotBound | SysfsInvalid | DeviceMapInvalid> =>
  Effect.gen(function*() {
    const dir = deviceDir(paths, device)
    const exists = yield* fs.exists(dir).pipe(Effect.orElseSucceed(() => false))
    if (!GUID.test(device) || !exists) {
      return yield* new DeviceNotFound({
        device,
        path: dir,
        detail: GUID.test(device) ? "not offered by the host (or rescinded)" : "not a lowercase instance GUID without braces"
      })
    }
    const classPath = join(dir, "class_id")
    const classId = yield* check(parseGuid(classPath, yield* readText(fs, classPath)))
    const instancePath = join(dir, "device_id")
    const instance = yield* check(parseGuid(instancePath, yield* readText(fs, instancePath)))
    const driver = yield* readDriver(fs, dir)
    if (driver !== DRIVER) {
      return yield* new DeviceNotBound({ device, driver, fix: bindingFix(classId, instance) })
    }
    const idPath = join(dir, "id")
    const relid = yield* check(parseDecimal(idPath, yield* readText(fs, idPath), 0xffffffff))
    const monitorPath = join(dir, "monitor_id")
    const monitorText = yield* readOptional(fs, monitorPath)
    const monitorId = monitorText === undefined
      ? undefined
      : yield* check(parseDecimal(monitorPath, monitorText, 127))
    const uio = yield* findUio(fs, dir)
    const mapsDir = join(dir, "uio", uio, "maps")
    const maps: Array<MapInfo> = []
    for (let index = 0; index < 5; index++) {
      const map = yield* readMap(fs, mapsDir, index)
      if (map === undefined) break
      maps.push(map)
    }
    const problem = checkMaps(maps, pageSize)
    if (problem !== undefined) return yield* problem
    return {
      instance,
      classId,
      dir,
      relid,
      monitorId,
      uio,
      devicePath: join(paths.devRoot, uio),
      maps,
      ringSize: maps[0]!.size / 2
    }
  })

export interface SubChannelInfo {
  readonly relid: number
  readonly index: number
  readonly monitorId: number | undefined
  readonly ringPath: string
}

/** Sub-channels as DPDK finds them: `channels/<relid>` with a non-zero `subchannel_id` and a `ring`. */
export const listSubChannels = (
  fs: Files,
  dir: string
): Effect.Effect<ReadonlyArray<SubChannelInfo>, SysfsInvalid> =>
  Effect.gen(function*() {
    const channelsDir = join(dir, "channels")
    // Created after the driver's probe: briefly missing is "none yet", not an error.
    const entries = yield* fs.readDirectory(channelsDir).pipe(Effect.orElseSucceed((): ReadonlyArray<string> => []))
    const found: Array<SubChannelInfo> = []
    for (const entry of entries) {
      if (!/^\d{1,10}$/.test(entry)) continue
      const channelDir = join(channelsDir, entry)
      const indexText = yield* readOptional(fs, join(channelDir, "subchannel_id"))
      if (indexText === undefined) continue
      const index = yield* check(parseDecimal(join(channelDir, "subchannel_id"), indexText, 0xffff))
      if (index === 0) continue
      const ringPath = join(channelDir, "ring")
      if (!(yield* fs.exists(ringPath).pipe(Effect.orElseSucceed(() => false)))) continue
      const monitorPath = join(channelDir, "monitor_id")
      const monitorText = yield* readOptional(fs, monitorPath)
      const monitorId = monitorText === undefined
        ? undefined
        : yield* check(parseDecimal(monitorPath, monitorText, 127))
      found.push({ relid: Number(entry), index, monitorId, ringPath })
    }
    return found.sort((a, b) => a.index - b.index)
  })

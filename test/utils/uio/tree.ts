// The emulated device's files (native-transport.md §5.2): a sysfs-shaped tree under `{root}/sys` with
// the kernel's byte formats (§1.2), one tmpfs file per map under `{root}/dev/uio0-maps/`, and
// sub-channel `ring` files. The host emulator writes it; bad-input tests write broken variants of it.
import * as fs from "node:fs"
import * as path from "node:path"

export const DM_CLASS = "525074dc-8985-46e2-8057-a307dc18a502"
export const INSTANCE = "0d4c5a73-3c2b-4f5a-9a1e-7b6c5d4e3f21"
export const MiB = 1024 * 1024

export interface DeviceSpec {
  readonly root: string
  readonly instance?: string
  readonly classId?: string
  readonly relid?: number
  /** Present: a monitored channel (monitor_id file, bits in the int/monitor pages). */
  readonly monitorId?: number | undefined
  /** Bytes per direction (map 0 is twice this). Default 2 MiB. */
  readonly ringSize?: number
  /** Driver name of the `driver` link; undefined = unbound. Default uio_hv_generic. */
  readonly driver?: string | undefined
  /** Make maps 3 and 4 (recv/send buffers) of these sizes with these GPADL handles. */
  readonly buffers?: { readonly recvSize: number; readonly sendSize: number; readonly recvGpadl: number; readonly sendGpadl: number }
  /** Overrides of map names / sysfs sizes (for bad-input tests). */
  readonly mapNames?: ReadonlyArray<string>
  readonly mapSizes?: ReadonlyArray<number>
}

export const sysfsRoot = (root: string): string => path.join(root, "sys")
export const devRoot = (root: string): string => path.join(root, "dev")
export const deviceDir = (root: string, instance = INSTANCE): string =>
  path.join(sysfsRoot(root), "bus/vmbus/devices", instance)
export const mapFile = (root: string, index: number): string => path.join(devRoot(root), "uio0-maps", `map${index}`)

const write = (file: string, text: string): void => {
  fs.mkdirSync(path.dirname(file), { recursive: true })
  fs.writeFileSync(file, text)
}

const hex = (n: number): string => `0x${n.toString(16).padStart(16, "0")}`

/** A zero-filled file of `size` bytes (sparse on tmpfs until written). */
export const sizedFile = (file: string, size: number): void => {
  fs.mkdirSync(path.dirname(file), { recursive: true })
  const fd = fs.openSync(file, "w")
  fs.ftruncateSync(fd, size)
  fs.closeSync(fd)
}

/** Writes the whole tree and the map files; returns the maps' (name, size) as sysfs shows them. */
export const writeTree = (spec: DeviceSpec): ReadonlyArray<{ readonly name: string; readonly size: number }> => {
  const instance = spec.instance ?? INSTANCE
  const classId = spec.classId ?? DM_CLASS
  const ringSize = spec.ringSize ?? 2 * MiB
  const dir = deviceDir(spec.root, instance)
  write(path.join(dir, "class_id"), `{${classId}}\n`)
  write(path.join(dir, "device_id"), `{${instance}}\n`)
  write(path.join(dir, "id"), `${spec.relid ?? 14}\n`)
  write(path.join(dir, "state"), "2\n")
  if (spec.monitorId !== undefined) write(path.join(dir, "monitor_id"), `${spec.monitorId}\n`)
  write(path.join(dir, "channel_vp_mapping"), `${spec.relid ?? 14}:0\n`)
  const driver = spec.driver === undefined && "driver" in spec ? undefined : spec.driver ?? "uio_hv_generic"
  if (driver !== undefined) {
    const driverDir = path.join(sysfsRoot(spec.root), "bus/vmbus/drivers", driver)
    fs.mkdirSync(driverDir, { recursive: true })
    fs.symlinkSync(path.relative(dir, driverDir), path.join(dir, "driver"))
  }
  const uio = path.join(dir, "uio/uio0")
  write(path.join(uio, "name"), "uio_hv_generic\n")
  write(path.join(uio, "version"), "0.02.1\n")
  write(path.join(uio, "event"), "0\n")
  const maps: Array<{ name: string; size: number }> = [
    { name: "txrx_rings", size: 2 * ringSize },
    { name: "int_page", size: 4096 },
    { name: "monitor_page", size: 4096 }
  ]
  if (spec.buffers !== undefined) {
    maps.push({ name: `recv:${spec.buffers.recvGpadl}`, size: spec.buffers.recvSize })
    maps.push({ name: `send:${spec.buffers.sendGpadl}`, size: spec.buffers.sendSize })
  }
  maps.forEach((map, index) => {
    const name = spec.mapNames?.[index] ?? map.name
    const size = spec.mapSizes?.[index] ?? map.size
    const mapDir = path.join(uio, "maps", `map${index}`)
    write(path.join(mapDir, "name"), `${name}\n`)
    write(path.join(mapDir, "size"), `${hex(size)}\n`)
    write(path.join(mapDir, "addr"), `${hex(0xffff_8000_0000 + index * 0x10_0000)}\n`)
    write(path.join(mapDir, "offset"), "0x0\n")
    sizedFile(mapFile(spec.root, index), map.size)
  })
  const primary = path.join(dir, "channels", String(spec.relid ?? 14))
  write(path.join(primary, "subchannel_id"), "0\n")
  if (spec.monitorId !== undefined) write(path.join(primary, "monitor_id"), `${spec.monitorId}\n`)
  return maps
}

/** A sub-channel directory with its `ring` file (2 × `ringSize`). */
export const writeSubChannel = (
  root: string,
  relid: number,
  index: number,
  ringSize: number,
  monitorId?: number,
  instance = INSTANCE
): string => {
  const dir = path.join(deviceDir(root, instance), "channels", String(relid))
  write(path.join(dir, "subchannel_id"), `${index}\n`)
  if (monitorId !== undefined) write(path.join(dir, "monitor_id"), `${monitorId}\n`)
  const ring = path.join(dir, "ring")
  sizedFile(ring, 2 * ringSize)
  return ring
}

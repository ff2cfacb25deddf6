/**
 * `effect-vmbus devices` and `effect-vmbus doctor`: what the native transport sees under sysfs, and
 * whether it can run here (module, binding, permissions, koffi, kernel behaviour), with a fix for each
 * problem. Both read through @effect/platform's FileSystem from `--sysfs-root` / `--dev-root`, so the
 * tests run them on an emulated tree.
 */
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import * as FileSystem from "@effect/platform/FileSystem"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as os from "node:os"
import * as native from "../internal/uio/native.js"
import * as sysfs from "../internal/uio/sysfs.js"

export interface DeviceRow {
  readonly instance: string
  readonly classId: string
  readonly className: string
  readonly driver: string | undefined
  readonly uio: string | undefined
  readonly monitored: boolean
  /** Bytes per direction, when bound to uio_hv_generic and its maps are readable. */
  readonly ringSize: number | undefined
}

const join = (...parts: ReadonlyArray<string>) => parts.join("/").replace(/\/+/g, "/")

/** Every VMBus device under the root; a device whose attributes cannot be read is listed with what could. */
export const listDevices = (sysfsRoot: string): Effect.Effect<ReadonlyArray<DeviceRow>, never, FileSystem.FileSystem> =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const devicesDir = join(sysfsRoot, "bus/vmbus/devices")
    const entries = yield* fs.readDirectory(devicesDir).pipe(Effect.orElseSucceed((): ReadonlyArray<string> => []))
    const rows: Array<DeviceRow> = []
    for (const entry of [...entries].sort()) {
      const dir = join(devicesDir, entry)
      const text = (name: string) => sysfs.readText(fs, join(dir, name)).pipe(Effect.orElseSucceed(() => undefined))
      const parse = (name: string, value: string | undefined) => {
        if (value === undefined) return "?"
        const guid = sysfs.parseGuid(join(dir, name), value)
        return typeof guid === "string" ? guid : "?"
      }
      const classId = parse("class_id", yield* text("class_id"))
      const instance = parse("device_id", yield* text("device_id"))
      const driver = yield* sysfs.readDriver(fs, dir)
      const uioEntries = yield* fs.readDirectory(join(dir, "uio")).pipe(Effect.orElseSucceed((): ReadonlyArray<string> => []))
      const uio = uioEntries.find((name) => /^uio\d+$/.test(name))
      const monitored = yield* fs.exists(join(dir, "monitor_id")).pipe(Effect.orElseSucceed(() => false))
      const sizeText = uio === undefined ? undefined : yield* text(`uio/${uio}/maps/map0/size`)
      const size = sizeText !== undefined && /^0x[0-9a-fA-F]+$/.test(sizeText) ? Number(BigInt(sizeText)) / 2 : undefined
      rows.push({
        instance: instance === "?" ? entry : instance,
        classId,
        className: sysfs.className(classId),
        driver,
        uio,
        monitored,
        ringSize: size
      })
    }
    return rows
  })

const human = (bytes: number | undefined): string =>
  bytes === undefined ? "-" : bytes % (1024 * 1024) === 0 ? `${bytes / 1024 / 1024} MiB` : `${bytes / 1024} KiB`

export const formatDevices = (rows: ReadonlyArray<DeviceRow>): string => {
  if (rows.length === 0) return "no VMBus devices (not a Hyper-V guest, or hv_vmbus is not loaded)"
  const table = [
    ["CLASS", "INSTANCE", "DRIVER", "UIO", "MONITORED", "RING"],
    ...rows.map((row) => [
      row.className,
      row.instance,
      row.driver ?? "-",
      row.uio ?? "-",
      row.monitored ? "yes" : "no",
      human(row.ringSize)
    ])
  ]
  const widths = table[0]!.map((_, column) => Math.max(...table.map((line) => line[column]!.length)))
  return table.map((line) => line.map((cell, column) => cell.padEnd(widths[column]!)).join("  ").trimEnd()).join("\n")
}

export interface Check {
  readonly status: "ok" | "fail" | "warn" | "info"
  readonly what: string
  readonly fix?: string | undefined
}

const releaseAtLeast = (release: string, major: number, minor: number): boolean => {
  const match = /^(\d+)\.(\d+)/.exec(release)
  if (match === null) return false
  const [a, b] = [Number(match[1]), Number(match[2])]
  return a > major || (a === major && b >= minor)
}

/** Checks what the native transport needs, for every device bound to uio_hv_generic (or `device`). */
export const diagnose = (options: {
  readonly sysfsRoot: string
  readonly devRoot: string
  readonly device?: string | undefined
  readonly kernelRelease?: string | undefined
}): Effect.Effect<ReadonlyArray<Check>, never, FileSystem.FileSystem> =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const checks: Array<Check> = []
    const exists = (path: string) => fs.exists(path).pipe(Effect.orElseSucceed(() => false))
    const release = options.kernelRelease ?? os.release()
    checks.push({ status: "info", what: `kernel ${release} (behaviour is checked by feature where possible: stable kernels carry backports)` })

    const loaded = yield* Effect.either(native.load)
    if (loaded._tag === "Left") checks.push({ status: "fail", what: "koffi (native calls) cannot be loaded", fix: loaded.left.reason })
    else {
      checks.push({ status: "ok", what: "koffi loads (prebuilt binary)" })
      const pageSize = loaded.right.pageSize
      checks.push(
        pageSize === 4096
          ? { status: "ok", what: "system page size 4096" }
          : { status: "fail", what: `system page size ${pageSize}`, fix: "only 4 KiB pages are supported (the ring code assumes 4096-byte control pages)" }
      )
    }

    if (!(yield* exists(join(options.sysfsRoot, "bus/vmbus")))) {
      checks.push({ status: "fail", what: "no VMBus under sysfs", fix: "run in a Hyper-V/Azure guest with hv_vmbus loaded (modprobe hv_vmbus)" })
      return checks
    }
    checks.push({ status: "ok", what: "VMBus present" })
    const driverDir = join(options.sysfsRoot, "bus/vmbus/drivers", sysfs.DRIVER)
    if (!(yield* exists(driverDir))) {
      checks.push({ status: "fail", what: "uio_hv_generic is not loaded", fix: "modprobe uio_hv_generic (CONFIG_UIO_HV_GENERIC)" })
    } else checks.push({ status: "ok", what: "uio_hv_generic loaded" })

    const rows = yield* listDevices(options.sysfsRoot)
    const targets = options.device === undefined
      ? rows.filter((row) => row.driver === sysfs.DRIVER)
      : rows.filter((row) => row.instance === options.device)
    if (options.device !== undefined && targets.length === 0) {
      checks.push({ status: "fail", what: `no VMBus device ${options.device}`, fix: "list them with `effect-vmbus devices`" })
    } else if (targets.length === 0) {
      checks.push({
        status: "fail",
        what: "no device is bound to uio_hv_generic",
        fix: `as root: echo <class guid> > /sys/bus/vmbus/drivers/${sysfs.DRIVER}/new_id (see \`effect-vmbus devices\` for classes)`
      })
    }
    for (const row of targets) {
      const name = `${row.className} ${row.instance}`
      if (row.driver !== sysfs.DRIVER) {
        checks.push({ status: "fail", what: `${name}: bound to ${row.driver ?? "no driver"}`, fix: sysfs.bindingFix(row.classId, row.instance) })
        continue
      }
      const info = yield* Effect.either(sysfs.discover(fs, options, row.instance, 4096))
      if (info._tag === "Left") {
        checks.push({ status: "fail", what: `${name}: ${info.left.message}`, fix: "the kernel wrote something this transport does not understand: report it" })
        continue
      }
      const device = info.right
      checks.push({
        status: "ok",
        what: `${name}: ${device.uio}, ring ${human(device.ringSize)} per direction, ${device.monitorId === undefined ? "not monitored" : `monitor id ${device.monitorId}`}`
      })
      const node = device.devicePath
      const access = yield* fs.access(node, { readable: true, writable: true }).pipe(Effect.either)
      if (access._tag === "Left") {
        const missing = !(yield* exists(node))
        checks.push({
          status: "fail",
          what: `${name}: ${node} ${missing ? "does not exist" : "is not readable and writable by this user"}`,
          fix: missing
            ? "udev did not create the node: check `ls /sys/class/uio` and udev"
            : `run as root, or add a udev rule: SUBSYSTEM=="uio", ATTR{name}=="uio_hv_generic", MODE="0660", GROUP="<your group>"`
        })
      } else checks.push({ status: "ok", what: `${name}: ${node} is readable and writable` })
      if (device.monitorId === undefined) {
        checks.push(
          releaseAtLeast(release, 6, 10)
            ? { status: "ok", what: `${name}: not monitored, signalled by write(fd, 1) (kernel ≥ 6.10)` }
            : {
              status: "fail",
              what: `${name}: not monitored, but this kernel's write(fd, 1) does not signal the host`,
              fix: "a kernel ≥ 6.10 is needed (older ones refuse to bind such channels: \"vmbus channel requires hypercall\")"
            }
        )
      } else checks.push({ status: "ok", what: `${name}: monitored, signalled through the monitor page (any kernel)` })
      const subs = yield* sysfs.listSubChannels(fs, device.dir).pipe(Effect.orElseSucceed(() => []))
      if (subs.length > 0 || row.className === "network") {
        checks.push({
          status: "info",
          what: `${name}: ${subs.length} sub-channel(s); ` + (releaseAtLeast(release, 6, 16)
            ? "kernel ≥ 6.16: sub-channel interrupts are safe (subChannels: \"interrupt\" allowed)"
            : "kernel < 6.16: sub-channels stay masked and polled (the default) — their interrupts may crash it")
        })
      }
      if (device.maps.length < 5) {
        checks.push({ status: "info", what: `${name}: no receive/send buffers (maps 3–4 are made for the network class only since 6.14)` })
      }
    }
    return checks
  })

export const formatChecks = (checks: ReadonlyArray<Check>): string =>
  checks.map((check) =>
    `${check.status.toUpperCase().padEnd(4)}  ${check.what}${check.fix === undefined ? "" : `\n      fix: ${check.fix}`}`
  ).join("\n")

const sysfsRootOption = Options.text("sysfs-root").pipe(Options.withDefault("/sys"), Options.withDescription("where sysfs is mounted"))
const devRootOption = Options.text("dev-root").pipe(Options.withDefault("/dev"), Options.withDescription("where the uio device nodes are"))

export const devices = Command.make("devices", { sysfsRoot: sysfsRootOption }, (o) =>
  Effect.flatMap(listDevices(o.sysfsRoot), (rows) => Console.log(formatDevices(rows)))).pipe(
    Command.withDescription("lists the VMBus devices under sysfs: class, instance, driver, uio node, monitored, ring size")
  )

export const doctor = Command.make("doctor", {
  sysfsRoot: sysfsRootOption,
  devRoot: devRootOption,
  device: Options.text("device").pipe(Options.optional, Options.withDescription("instance GUID to check (default: every device bound to uio_hv_generic)"))
}, (o) =>
  Effect.gen(function*() {
    const checks = yield* diagnose({
      sysfsRoot: o.sysfsRoot,
      devRoot: o.devRoot,
      device: o.device._tag === "Some" ? o.device.value : undefined
    })
    yield* Console.log(formatChecks(checks))
    if (checks.some((check) => check.status === "fail")) process.exitCode = 1
  })).pipe(Command.withDescription("checks what the native uio transport needs here, and says how to fix each problem"))

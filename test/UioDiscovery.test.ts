// UioTransport's discovery over sysfs-shaped trees with something wrong in them: each a typed error that
// names what was wrong, never a crash. No host process is needed until a device is opened.
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import * as Transport from "../src/Transport.js"
import * as UioTransport from "../src/UioTransport.js"
import { emulated } from "../src/internal/uio/emulatedBackend.js"
import { load, O_CLOEXEC, O_RDWR } from "../src/internal/uio/native.js"
import { UioBackend } from "../src/internal/uio/transport.js"
import { fdGone, lockError, mapError, openError } from "../src/internal/uio/errors.js"
import { layerEmulatedBackend, tempRoot } from "./utils/uio/emulator.js"
import type { DeviceSpec } from "./utils/uio/tree.js"
import { DM_CLASS, deviceDir, devRoot, INSTANCE, MiB, sysfsRoot, writeTree } from "./utils/uio/tree.js"

const withRoot = Effect.acquireRelease(
  Effect.sync(tempRoot),
  (root) => Effect.sync(() => fs.rmSync(root, { recursive: true, force: true }))
)

const build = (root: string, device = INSTANCE, backend = layerEmulatedBackend) =>
  Layer.build(
    UioTransport.layerWith({ device, sysfsRoot: sysfsRoot(root), devRoot: devRoot(root) }).pipe(
      Layer.provide(Layer.merge(backend, UioTransport.layerFiles))
    )
  )

/** Builds a tree (then lets `edit` break it) and returns the layer's error. */
const failure = (spec: Omit<DeviceSpec, "root">, edit: (root: string) => void = () => {}) =>
  Effect.gen(function*() {
    const root = yield* withRoot
    writeTree({ root, ...spec })
    edit(root)
    return yield* Effect.flip(build(root))
  })

const file = (root: string, name: string) => path.join(deviceDir(root), name)

describe("UioTransport discovery: bad input is a typed error naming what was wrong", () => {
  it.scoped("a device that is not there", () =>
    Effect.gen(function*() {
      const root = yield* withRoot
      writeTree({ root })
      const missing = yield* Effect.flip(build(root, "11111111-2222-3333-4444-555555555555"))
      assert.strictEqual(missing._tag, "DeviceNotFound")
      if (missing._tag === "DeviceNotFound") assert.include(missing.path, "11111111-2222-3333-4444-555555555555")
      const notGuid = yield* Effect.flip(build(root, "{0D4C5A73-3C2B-4F5A-9A1E-7B6C5D4E3F21}"))
      assert.strictEqual(notGuid._tag, "DeviceNotFound")
    }))

  it.scoped("a device bound to another driver, or to none, says how to bind it", () =>
    Effect.gen(function*() {
      const other = yield* failure({ driver: "hv_balloon" })
      assert.strictEqual(other._tag, "DeviceNotBound")
      if (other._tag === "DeviceNotBound") {
        assert.strictEqual(other.driver, "hv_balloon")
        assert.include(other.fix, `echo ${DM_CLASS} > /sys/bus/vmbus/drivers/uio_hv_generic/new_id`)
      }
      const none = yield* failure({ driver: undefined })
      assert.strictEqual(none._tag, "DeviceNotBound")
      if (none._tag === "DeviceNotBound") assert.isUndefined(none.driver)
    }))

  it.scoped("unreadable or malformed sysfs values name the file", () =>
    Effect.gen(function*() {
      const cases: ReadonlyArray<[string, string | undefined, string]> = [
        ["id", "fourteen\n", "/id"],
        ["class_id", "{not-a-guid}\n", "/class_id"],
        ["monitor_id", "200\n", "/monitor_id"],
        ["uio/uio0/maps/map0/size", "4194304\n", "/maps/map0/size"],
        ["device_id", undefined, "/device_id"]
      ]
      for (const [name, content, expected] of cases) {
        const error = yield* failure({ monitorId: 1 }, (root) => {
          if (content === undefined) fs.rmSync(file(root, name))
          else fs.writeFileSync(file(root, name), content)
        })
        assert.strictEqual(error._tag, "SysfsInvalid", name)
        if (error._tag === "SysfsInvalid") assert.isTrue(error.path.endsWith(expected), error.path)
      }
      const twoUio = yield* failure({}, (root) => fs.mkdirSync(file(root, "uio/uio1")))
      assert.strictEqual(twoUio._tag, "SysfsInvalid")
    }))

  it.scoped("maps of the wrong name or size", () =>
    Effect.gen(function*() {
      const cases: ReadonlyArray<[Omit<DeviceSpec, "root">, string]> = [
        [{ mapSizes: [2 * MiB + 4096] }, "map0"],
        [{ mapSizes: [8192] }, "map0"],
        [{ mapSizes: [4 * MiB, 8192] }, "map1"],
        [{ mapNames: ["txrx_rings", "monitor_page", "int_page"] }, "map1"],
        [{ mapNames: ["rings"] }, "map0"]
      ]
      for (const [spec, map] of cases) {
        const error = yield* failure(spec)
        assert.strictEqual(error._tag, "DeviceMapInvalid", JSON.stringify(spec))
        if (error._tag === "DeviceMapInvalid") assert.isTrue(error.map.startsWith(map), error.map)
      }
    }))

  it.scoped("a map smaller than sysfs says: the open fails InvalidData naming the map, nothing stays open", () =>
    Effect.gen(function*() {
      const root = yield* withRoot
      // sysfs claims 8 MiB of rings; the device memory is 4 MiB.
      writeTree({ root, mapSizes: [8 * MiB] })
      const native = yield* load
      const opened: Array<number> = []
      // The device node answers at once (no host needed to reach the mapping step).
      const backend = Layer.succeed(UioBackend, {
        ...emulated(native),
        openDevice: () =>
          Effect.sync(() => {
            const fd = native.open("/dev/null", O_RDWR | O_CLOEXEC)
            opened.push(fd)
            return fd
          })
      })
      const context = yield* build(root, INSTANCE, backend)
      const device = yield* Effect.provide(UioTransport.UioDevice, context)
      const error = yield* Effect.flip(Effect.scoped(Effect.flatMap(
        Effect.provide(Transport.Transport, context),
        (transport) => transport.open({ interfaceType: DM_CLASS, outgoingRingPages: 0, incomingRingPages: 0 })
      )))
      assert.strictEqual(error._tag, "TransportError")
      if (error._tag === "TransportError") {
        assert.strictEqual(error.reason, "InvalidData")
        assert.include(error.detail, "map0 (txrx_rings)")
      }
      const stats = yield* device.stats
      assert.deepStrictEqual([stats.open, stats.mappings], [false, 0])
      assert.strictEqual(opened.length, 1)
    }))
})

describe("UioTransport errno mapping (§4.5)", () => {
  it("open, lock, mmap and fd errors", () => {
    const tags = (e: { readonly _tag: string; readonly reason?: unknown }) => `${e._tag}:${String(e.reason ?? "")}`
    assert.strictEqual(tags(openError("/dev/uio0", 2)), "TransportError:NotFound")
    assert.strictEqual(tags(openError("/dev/uio0", 19)), "TransportError:NotFound")
    assert.strictEqual(tags(openError("/dev/uio0", 13)), "TransportError:PermissionDenied")
    assert.strictEqual(openError("/dev/uio0", 11)._tag, "OpenRejected")
    assert.strictEqual(openError("/dev/uio0", 122)._tag, "OpenRejected")
    assert.strictEqual(tags(openError("/dev/uio0", 12)), "TransportError:Unknown")
    assert.strictEqual(tags(lockError("/dev/uio0", 11)), "TransportError:Busy")
    assert.strictEqual(tags(mapError("map0", 22)), "TransportError:InvalidData")
    assert.strictEqual(tags(mapError("ring", 19)), "ChannelClosed:Rescinded")
    // EIO (rescinded), EINVAL (unregistered, with a 4-byte count), end of file (emulated) end the device.
    assert.deepStrictEqual([-5, -22, 0, -11, -4, 4].map(fdGone), [true, true, true, false, false, false])
  })
})

// `effect-vmbus devices` and `doctor` on emulated sysfs trees.
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { diagnose, formatChecks, formatDevices, listDevices } from "../src/bin/devices.js"
import { tempRoot } from "./utils/uio/emulator.js"
import { devRoot, INSTANCE, sysfsRoot, writeSubChannel, writeTree } from "./utils/uio/tree.js"

const NIC = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
const HEARTBEAT = "12345678-bbbb-cccc-dddd-eeeeeeeeeeee"

const tree = Effect.acquireRelease(
  Effect.sync(() => {
    const root = tempRoot()
    writeTree({ root })
    writeTree({
      root,
      instance: NIC,
      classId: "f8615163-df3e-46c5-913f-f2d2f965ed0e",
      monitorId: 2,
      ringSize: 0x11000,
      buffers: { recvSize: 65536, sendSize: 65536, recvGpadl: 7, sendGpadl: 8 }
    })
    writeSubChannel(root, 40, 1, 65536, 9, NIC)
    writeTree({ root, instance: HEARTBEAT, classId: "57164f39-9115-4e78-ab55-382f3bd5422d", driver: "hv_utils" })
    fs.rmSync(path.join(sysfsRoot(root), "bus/vmbus/devices", HEARTBEAT, "uio"), { recursive: true })
    return root
  }),
  (root) => Effect.sync(() => fs.rmSync(root, { recursive: true, force: true }))
)

describe("effect-vmbus devices / doctor", () => {
  it.scoped("devices lists class, instance, driver, uio node, monitored, ring size", () =>
    Effect.gen(function*() {
      const root = yield* tree
      const rows = yield* listDevices(sysfsRoot(root))
      assert.deepStrictEqual(
        rows.map((r) => [r.className, r.instance, r.driver, r.uio, r.monitored, r.ringSize]),
        [
          ["dynamic-memory", INSTANCE, "uio_hv_generic", "uio0", false, 2 * 1024 * 1024],
          ["heartbeat", HEARTBEAT, "hv_utils", undefined, false, undefined],
          ["network", NIC, "uio_hv_generic", "uio0", true, 0x11000]
        ]
      )
      const text = formatDevices(rows)
      assert.include(text, "68 KiB")
      assert.include(text.split("\n")[0]!, "MONITORED")
      assert.strictEqual(formatDevices([]), "no VMBus devices (not a Hyper-V guest, or hv_vmbus is not loaded)")
    }).pipe(Effect.provide(NodeFileSystem.layer)))

  it.scoped("doctor: every failure comes with a fix; a healthy device passes", () =>
    Effect.gen(function*() {
      const root = yield* tree
      // No device node yet, an old kernel for a non-monitored channel, a heartbeat device bound elsewhere.
      const broken = yield* diagnose({ sysfsRoot: sysfsRoot(root), devRoot: devRoot(root), kernelRelease: "6.1.0-18-amd64" })
      const failures = broken.filter((c) => c.status === "fail")
      assert.isTrue(failures.every((c) => c.fix !== undefined && c.fix.length > 0))
      assert.isTrue(failures.some((c) => c.what.includes("does not exist")))
      assert.isTrue(failures.some((c) => c.what.includes("write(fd, 1) does not signal")))
      assert.isTrue(broken.some((c) => c.status === "info" && c.what.includes("polled")))
      const heartbeat = yield* diagnose({ sysfsRoot: sysfsRoot(root), devRoot: devRoot(root), device: HEARTBEAT })
      const bound = heartbeat.find((c) => c.what.includes("bound to hv_utils"))
      assert.isDefined(bound)
      assert.include(bound!.fix!, "uio_hv_generic/new_id")
      // Create the node (a file stands in): everything about the DM device passes on a 6.12 kernel.
      fs.mkdirSync(devRoot(root), { recursive: true })
      fs.writeFileSync(path.join(devRoot(root), "uio0"), "")
      const healthy = yield* diagnose({ sysfsRoot: sysfsRoot(root), devRoot: devRoot(root), device: INSTANCE, kernelRelease: "6.12.57+deb12-amd64" })
      assert.deepStrictEqual(healthy.filter((c) => c.status === "fail"), [])
      assert.include(formatChecks(healthy), "not monitored, signalled by write(fd, 1)")
      const noVmbus = yield* diagnose({ sysfsRoot: path.join(root, "nothing"), devRoot: devRoot(root) })
      assert.isTrue(noVmbus.some((c) => c.status === "fail" && c.what === "no VMBus under sysfs"))
    }).pipe(Effect.provide(NodeFileSystem.layer)))
})

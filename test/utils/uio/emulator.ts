// The test side of the emulated device: spawns the host emulator (./host.ts) in a child process over a
// fresh tmpfs root, sends it commands, and builds the guest's UioTransport layer over the emulated
// backend. Everything is scoped: closing the scope kills the child and removes the root.
import * as FileSystem from "@effect/platform/FileSystem"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Channel from "../../../src/Channel.js"
import * as Transport from "../../../src/Transport.js"
import type * as Scope from "effect/Scope"
import { type ChildProcess, fork } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { emulated } from "../../../src/internal/uio/emulatedBackend.js"
import { load } from "../../../src/internal/uio/native.js"
import { UioBackend } from "../../../src/internal/uio/transport.js"
import * as UioTransport from "../../../src/UioTransport.js"
import type { Command, HostStats, StartCommand } from "./host.js"
import { DM_CLASS, devRoot, INSTANCE, sysfsRoot } from "./tree.js"
import type { DeviceSpec } from "./tree.js"

export interface Emulator {
  readonly root: string
  readonly sysfsRoot: string
  readonly devRoot: string
  readonly instance: string
  readonly classId: string
  readonly child: ChildProcess
  readonly command: (command: Command) => Effect.Effect<any>
  readonly stats: Effect.Effect<HostStats>
  /** SIGKILL: the host process dies, its sockets close. */
  readonly kill: Effect.Effect<void>
}

export type EmulatorOptions = Omit<StartCommand, "op" | "spec"> & { readonly spec?: Partial<Omit<DeviceSpec, "root">> }

/** A fresh directory on tmpfs (short, for the socket path limit of 107 bytes). */
export const tempRoot = (): string => fs.mkdtempSync(path.join(fs.existsSync("/dev/shm") ? "/dev/shm" : os.tmpdir(), "uio-"))

// Compiled (the benchmark runs built JavaScript) the host is host.js and needs no tsx.
const compiled = import.meta.url.endsWith(".js")
const hostEntry = new URL(compiled ? "./host.js" : "./host.ts", import.meta.url)

export const spawnEmulator = (options: EmulatorOptions): Effect.Effect<Emulator, never, Scope.Scope> =>
  Effect.gen(function*() {
    const root = yield* Effect.acquireRelease(
      Effect.sync(tempRoot),
      (root) => Effect.sync(() => fs.rmSync(root, { recursive: true, force: true }))
    )
    const child = yield* Effect.acquireRelease(
      Effect.async<ChildProcess>((resume) => {
        const child = fork(hostEntry, [], { execArgv: compiled ? [] : ["--import", "tsx"], stdio: ["ignore", "inherit", "inherit", "ipc"] })
        child.once("message", () => resume(Effect.succeed(child)))
        child.once("exit", (code) => resume(Effect.dieMessage(`host emulator exited early (${code})`)))
      }),
      (child) =>
        Effect.async<void>((resume) => {
          if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.void)
          child.once("exit", () => resume(Effect.void))
          child.kill("SIGKILL")
        })
    )
    let nextId = 1
    const command = (command: Command): Effect.Effect<any> =>
      Effect.async<any>((resume) => {
        const id = nextId++
        const onMessage = (message: { id?: number; result?: unknown; error?: string }) => {
          if (message.id !== id) return
          child.off("message", onMessage)
          child.off("exit", onExit)
          resume(message.error !== undefined ? Effect.dieMessage(`host emulator: ${message.error}`) : Effect.succeed(message.result))
        }
        const onExit = () => {
          child.off("message", onMessage)
          resume(Effect.dieMessage("host emulator exited"))
        }
        child.on("message", onMessage)
        child.once("exit", onExit)
        child.send({ id, command })
      })
    const instance = options.spec?.instance ?? INSTANCE
    const classId = options.spec?.classId ?? DM_CLASS
    yield* command({ ...options, op: "start", spec: { ...options.spec, root, instance, classId } })
    return {
      root,
      sysfsRoot: sysfsRoot(root),
      devRoot: devRoot(root),
      instance,
      classId,
      child,
      command,
      stats: command({ op: "stats" }) as Effect.Effect<HostStats>,
      kill: Effect.async<void>((resume) => {
        if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.void)
        child.once("exit", () => resume(Effect.void))
        child.kill("SIGKILL")
      })
    }
  })

/** Discovery reads through @effect/platform's FileSystem (Node's), which fits UioTransport.Files as it is. */
export const layerPlatformFiles = Layer.effect(UioTransport.UioFiles, FileSystem.FileSystem).pipe(Layer.provide(NodeFileSystem.layer))

/** The emulated backend as a layer (koffi loaded lazily, as the real one). */
export const layerEmulatedBackend = Layer.effect(UioBackend, Effect.map(load, emulated))

/** The guest's UioTransport over the emulated device at `root`. */
export const guestLayer = (
  emulator: { readonly sysfsRoot: string; readonly devRoot: string; readonly instance: string },
  options: Partial<UioTransport.Options> = {}
) =>
  UioTransport.layerWith({
    device: emulator.instance,
    sysfsRoot: emulator.sysfsRoot,
    devRoot: emulator.devRoot,
    ...options
  }).pipe(Layer.provide(Layer.merge(layerEmulatedBackend, layerPlatformFiles)))

export const bytes = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 7 + seed) & 0xff)

/** Polls `check` (5 ms steps) until it holds, or dies after `millis`. */
export const eventually = <E, R>(check: Effect.Effect<boolean, E, R>, label: string, millis = 5000) => {
  const loop = (left: number): Effect.Effect<void, E, R> =>
    Effect.flatMap(check, (ok) => {
      if (ok) return Effect.void
      if (left <= 0) return Effect.dieMessage(`condition never held: ${label}`)
      return Effect.zipRight(Effect.sleep("5 millis"), loop(left - 5))
    })
  return loop(millis)
}

/** The emulator in a child process, and the guest's transport + device built over it in `scope`. */
export const setup = (options: EmulatorOptions, transportOptions: Partial<UioTransport.Options> = {}) =>
  Effect.gen(function*() {
    const emulator = yield* spawnEmulator(options)
    const context = yield* Layer.build(guestLayer(emulator, transportOptions))
    const transport = Effect.provide(Transport.Transport, context)
    const device = yield* Effect.provide(UioTransport.UioDevice, context)
    const withGuest = <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.provide(self, context)
    return { emulator, device, transport, withGuest }
  })

export const openClient = (emulator: Emulator) =>
  Channel.open({ role: "client", interfaceType: emulator.classId, maxPacketSize: 64 * 1024 })


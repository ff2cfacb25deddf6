/**
 * A `Transport` that wraps another and injects faults, for testing protocols and drivers built on the
 * channel API against a misbehaving connection — the way a fuzzer or a chaos harness would:
 *
 * - **signals** (doorbells) dropped, duplicated, delayed, reordered, and spurious ones added
 *   (`spuriousEveryMillis` also recovers dropped ones, as a polling driver would);
 * - **control messages** delayed (in order, per direction), withheld by type until released (e.g.
 *   `hold: ["GpadlCreated"]` gives "interrupted while waiting for the host" a real window) or
 *   corrupted (one byte flipped; host→guest by default: a hostile host);
 * - **readers** stalled (their wake-ups held back for a while, so rings fill up);
 * - **peers** rescinded or killed, and **ring bytes** corrupted — at a chosen step (`schedule`) or on
 *   demand through `FaultControl`.
 *
 * Every random decision comes from a per-site generator seeded by `seed`: the n-th decision of each
 * site is the same on every run with that seed, so a failing run can be replayed by its seed (timings
 * of the runtime itself still vary). A step is one transport event: a signal sent or a control
 * message posted.
 *
 * Control-message faults need a transport that exposes `interceptMessages` (the in-memory transport
 * does); on others they are ignored. Typical use, over the in-memory transport:
 *
 * ```ts
 * const layer = FaultInjectingTransport.layer({ seed: 7, signals: { drop: 0.1, spuriousEveryMillis: 5 } }).pipe(
 *   Layer.provideMerge(InMemoryTransport.layer)
 * )
 * ```
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as internal from "./internal/faultInjectingTransport.js"
import * as Transport from "./Transport.js"
import { InvalidParameter } from "./VmbusError.js"

/**
 * The fault configuration, validated with Schema. Every field is optional:
 * - `seed` (integer, default 0);
 * - `signals`: probabilities `drop`, `duplicate`, `delay`, `reorder` (per signal, exclusive, default 0),
 *   `maxDelayMillis` (default 2), `spuriousEveryMillis` (a signal to every live endpoint at that period);
 * - `messages`: `delay` (probability; delays keep each direction in order), `maxDelayMillis` (default
 *   2), `corrupt` (probability), `corruptDirection` (`"toGuest"` default, `"toHost"`, `"both"`),
 *   `corruptOnly` (message tags to corrupt; default all), `hold`
 *   (message tags — `"GpadlCreated"`, `"OpenChannelResult"`, `"GpadlTorndown"`, … — withheld until
 *   `releaseMessages`), `holdMillis` (release held messages after that long instead);
 * - `readers`: `stall` (probability per wake-up), `maxStallMillis` (default 5);
 * - `schedule`: `[{ atStep, fault }]` with `fault` one of `"rescind"`, `"killClient"`, `"killServer"`,
 *   `"corruptClientToServer"`, `"corruptServerToClient"` (on the most recently opened live channel).
 *
 * @since 0.1.0
 * @category models
 */
export const FaultConfig = internal.FaultConfig

/**
 * @since 0.1.0
 * @category models
 */
export type FaultConfig = internal.FaultConfig

/**
 * The configuration as written by the caller (every field optional).
 *
 * @since 0.1.0
 * @category models
 */
export type FaultConfigInput = internal.FaultConfigInput

/**
 * The kinds of fault the layer injects (the keys of `FaultStats`).
 *
 * @since 0.1.0
 * @category models
 */
export type Fault = internal.Fault

/**
 * One injected fault: the step it happened at, the channel (child relid) when known, and a detail.
 *
 * @since 0.1.0
 * @category models
 */
export type FaultLogEntry = internal.FaultLogEntry

/**
 * How many transport events (steps) went through and how many faults of each kind were injected.
 *
 * @since 0.1.0
 * @category models
 */
export type FaultStats = internal.FaultStats

/**
 * Control of the fault layer. A `childRelid` left out means the most recently opened live channel.
 *
 * @since 0.1.0
 * @category models
 */
export interface FaultControlShape {
  /** The validated configuration the layer runs with. */
  readonly config: FaultConfig
  /** Steps seen and faults injected so far, by kind. */
  readonly stats: Effect.Effect<FaultStats>
  /** The last 2000 injected faults, oldest first. */
  readonly log: Effect.Effect<ReadonlyArray<FaultLogEntry>>
  /** Child relids of the channels with a live endpoint. */
  readonly channels: Effect.Effect<ReadonlyArray<number>>
  /** Turns random faults off (false) or back on; scheduled and explicit faults still run. */
  readonly setEnabled: (enabled: boolean) => Effect.Effect<void>
  /** The host withdraws the offer: both sides see a rescind. False when there is no such offer. */
  readonly rescind: (childRelid?: number) => Effect.Effect<boolean>
  /**
   * One side dies: its channel is told the peer is gone and its transport resources close at once,
   * without the orderly close; the other side sees a close (dead guest) or a rescind (dead host).
   */
  readonly kill: (side: "client" | "server", childRelid?: number) => Effect.Effect<boolean>
  /** Corrupts a ring now (the next unread descriptor, or the write index of an empty ring). */
  readonly corruptRing: (ring: "clientToServer" | "serverToClient", childRelid?: number) => Effect.Effect<boolean>
  /** Holds a reader's wake-ups back for `millis`. */
  readonly stallReader: (side: "client" | "server", millis: number, childRelid?: number) => Effect.Effect<boolean>
  /** Starts withholding control messages of these tags. */
  readonly holdMessages: (tags: ReadonlyArray<string>) => Effect.Effect<void>
  /** Stops withholding and delivers what was held, in order; returns how many. */
  readonly releaseMessages: Effect.Effect<number>
  /** Tags of the messages held now. */
  readonly heldMessages: Effect.Effect<ReadonlyArray<string>>
}

/**
 * The service that controls a `FaultInjectingTransport` layer (provided by the same layer).
 *
 * @since 0.1.0
 * @category tags
 */
export class FaultControl extends Context.Tag("effect-vmbus/FaultInjectingTransport/FaultControl")<
  FaultControl,
  FaultControlShape
>() {}

/**
 * Validates a configuration.
 *
 * @since 0.1.0
 * @category constructors
 */
export const decodeConfig = (input: FaultConfigInput): Either.Either<FaultConfig, InvalidParameter> => {
  const result = Schema.decodeUnknownEither(internal.FaultConfig)(input, { errors: "first", onExcessProperty: "error" })
  if (Either.isRight(result)) return Either.right(result.right)
  const issue = ParseResult.ArrayFormatter.formatErrorSync(result.left)[0]
  return Either.left(
    new InvalidParameter({
      field: issue === undefined || issue.path.length === 0 ? "config" : issue.path.join("."),
      reason: issue?.message ?? "invalid fault configuration"
    })
  )
}

/**
 * Wraps `inner`: the returned transport injects faults into everything that goes through it. Scoped:
 * closing the scope turns faults off, delivers held and delayed messages and waits for running actions.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  inner: Transport.TransportShape,
  input: FaultConfigInput = {}
): Effect.Effect<{ readonly transport: Transport.TransportShape; readonly control: FaultControlShape }, InvalidParameter, Scope.Scope> =>
  Effect.gen(function*() {
    const config = yield* decodeConfig(input)
    const runtime = yield* Effect.runtime<never>()
    const injector = new internal.Injector(config, runtime)
    yield* Effect.addFinalizer(() => injector.shutdown)
    if (inner.interceptMessages !== undefined) yield* inner.interceptMessages(injector.intercept)
    const transport: Transport.TransportShape = {
      name: `fault-injecting(${inner.name})`,
      capabilities: inner.capabilities,
      offer: (identity) => injector.offer(inner, identity),
      open: (request) => injector.open(inner.open(request))
    }
    const control: FaultControlShape = {
      config,
      stats: Effect.sync(() => injector.stats()),
      log: Effect.sync(() => injector.log.slice()),
      channels: Effect.sync(() => injector.liveChannels()),
      setEnabled: (enabled) =>
        Effect.sync(() => {
          injector.enabled = enabled
        }),
      rescind: (childRelid) => injector.rescind(childRelid),
      kill: (side, childRelid) => injector.kill(side, childRelid),
      corruptRing: (ring, childRelid) => Effect.sync(() => injector.corruptRing(ring, childRelid)),
      stallReader: (side, millis, childRelid) => Effect.sync(() => injector.stallReader(side, millis, childRelid)),
      holdMessages: (tags) => Effect.sync(() => injector.holdMessages(tags)),
      releaseMessages: Effect.sync(() => injector.releaseMessages()),
      heldMessages: Effect.sync(() => injector.heldMessages())
    }
    return { transport, control }
  })

/**
 * Replaces the `Transport` in the context with a fault-injecting wrapper of it, and provides
 * `FaultControl`. Compose with `Layer.provideMerge(InMemoryTransport.layer)` to keep the inner layer's
 * other services (`InMemoryTransport.Control`, `GuestMemory`).
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  config: FaultConfigInput = {}
): Layer.Layer<Transport.Transport | FaultControl, InvalidParameter, Transport.Transport> =>
  Layer.scopedContext(
    Effect.flatMap(Transport.Transport, (inner) =>
      Effect.map(make(inner, config), ({ control, transport }) =>
        Context.make(Transport.Transport, transport).pipe(Context.add(FaultControl, control))
      ))
  )

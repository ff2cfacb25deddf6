// Bounded waits on fibers the channel does not control (handler fibers, serve workers). A close must
// return whatever user code does: a handler may be uninterruptible, or may itself be the fiber that runs
// the close (a handler closing its own channel), and waiting on it would then never end.
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"

/** How long interrupted handler fibers get to run their finalizers before a close goes on without them. */
export const HANDLER_EXIT_GRACE_MILLIS = 100

/** The fiber running the caller's synchronous code, if any (inside `Effect.sync`/`suspend`). */
export const currentFiber = (): Fiber.RuntimeFiber<unknown, unknown> | undefined =>
  Option.getOrUndefined(Fiber.getCurrentFiber())

/**
 * Fibers that run a close on another fiber's behalf (the close runs in a fiber of its own so that
 * interrupting the closer cannot abandon it), with that other fiber: the close must not wait for it,
 * since it is waiting for the close. (Not a FiberRef: finalizers run with the FiberRefs of the scope's
 * creator.)
 */
const principals = new WeakMap<Fiber.RuntimeFiber<unknown, unknown>, Fiber.RuntimeFiber<unknown, unknown>>()

/** Runs `effect` in the current fiber as acting for `principal` (if any). */
export const actingFor = <A, E, R>(
  principal: Fiber.RuntimeFiber<unknown, unknown> | undefined,
  effect: Effect.Effect<A, E, R>
): Effect.Effect<A, E, R> =>
  principal === undefined ? effect : Effect.suspend(() => {
    const self = currentFiber()
    if (self === undefined) return effect
    principals.set(self, principal)
    return Effect.ensuring(effect, Effect.sync(() => principals.delete(self)))
  })

/** The fiber the caller acts for: the fiber a close runs on behalf of, else the current fiber. */
export const actingFiber = (): Fiber.RuntimeFiber<unknown, unknown> | undefined => {
  const fiber = currentFiber()
  return fiber === undefined ? undefined : principals.get(fiber) ?? fiber
}

/**
 * Interrupts `fibers` — never the calling fiber itself — and waits for them to end, at most
 * `graceMillis`. Fibers still running afterwards stay interrupted and end on their own. Fibers for
 * which `spare` holds are waited for within the same bound but not interrupted.
 */
export const interruptBounded = (
  fibers: Iterable<Fiber.RuntimeFiber<unknown, unknown>>,
  graceMillis: number = HANDLER_EXIT_GRACE_MILLIS,
  spare?: (fiber: Fiber.RuntimeFiber<unknown, unknown>) => boolean
): Effect.Effect<void> =>
  Effect.suspend(() => {
    const self = currentFiber()
    const principal = actingFiber()
    const others = Array.from(fibers).filter((fiber) => fiber !== self && fiber !== principal)
    if (others.length === 0) return Effect.void
    const doomed = spare === undefined ? others : others.filter((fiber) => !spare(fiber))
    return Effect.fiberIdWith((id) => Effect.forEach(doomed, (fiber) => Fiber.interruptAsFork(fiber, id), { discard: true })).pipe(
      Effect.zipRight(
        Effect.interruptible(Effect.forEach(others, (fiber) => Fiber.await(fiber), { discard: true })).pipe(
          Effect.timeout(Duration.millis(graceMillis)),
          Effect.ignore
        )
      )
    )
  })

// Conformance review of the in-memory control plane against Linux drivers/hv/channel.c. The test is
// it asserts the Linux message sequence (an earlier effect-vmbus sent a different one).
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Scope } from "effect"
import * as Channel from "../src/Channel.js"
import * as InMemoryTransport from "../src/InMemoryTransport.js"
import { INSTANCE, TYPE } from "./utils/channels.js"
import { logLength, messagesSince, settle, tags, withLeakCheck } from "./utils/gpadl.js"

const openIn = (scope: Scope.Scope, role: "client" | "server") =>
  Channel.open({ interfaceType: TYPE, interfaceInstance: INSTANCE, role } as Channel.ChannelConfigInput).pipe(
    Scope.extend(scope)
  )

describe("Conformance: close after rescind vs Linux channel.c", () => {
  // Linux behaviour (close after rescind): Linux vmbus_close_internal always posts CHANNELMSG_CLOSECHANNEL
  // (no rescind check), and vmbus_teardown_gpadl skips the GPADL_TEARDOWN post when
  // `channel->rescind` is set ("goto post_msg_err" — the host already released it); RELID_RELEASED
  // then comes from hv_process_channel_removal. effect-vmbus does the opposite: no CLOSECHANNEL,
  // but GPADL_TEARDOWN for every GPADL, waiting for GPADL_TORNDOWN, which a real host may never send
  // for a rescinded channel.
  it.effect("after RESCIND the guest's close sends CLOSECHANNEL, no GPADL_TEARDOWN, then RELID_RELEASED", () =>
    withLeakCheck(
      Effect.gen(function*() {
        const control = yield* InMemoryTransport.Control
        const serverScope = yield* Scope.make()
        const clientScope = yield* Scope.make()
        yield* Effect.all([openIn(serverScope, "server"), openIn(clientScope, "client")], { concurrency: 2 })
        yield* settle()
        const before = yield* logLength
        assert.isTrue(yield* control.rescind(INSTANCE))
        yield* Scope.close(clientScope, Exit.void)
        yield* settle()
        const after = tags(yield* messagesSince(before + 1)).filter((tag) => tag !== "GpadlTorndown")
        yield* Scope.close(serverScope, Exit.void)
        assert.deepStrictEqual(after, ["CloseChannel", "RelidReleased"])
      }),
      { recordMessages: true }
    ))
})

// One channel endpoint over mapped uio memory: the ring views the channel runs on, the host doorbell,
// and the delivery of device events and of the rescind. Signals that arrive before the channel installs
// its callback are kept (one pending flag), so no wake-up is lost.
import type * as Transport from "../../Transport.js"
import type { CloseReason } from "../../VmbusError.js"
import type { MappedRegion } from "./mapping.js"

export class UioEndpoint implements Transport.Endpoint {
  readonly role = "client" as const
  readonly counters: Transport.EndpointCounters = {
    signalsSent: 0,
    signalsReceived: 0,
    outstandingTransactions: 0,
    outstandingPackets: 0
  }
  readonly memory = undefined
  readonly createGpadl = undefined
  readonly mapGpadl = undefined
  readonly gpaDirect = false
  readonly outgoing: Uint8Array
  readonly incoming: Uint8Array
  private signalCallback: (() => void) | undefined = undefined
  private pendingSignal = false
  private peerCloseCallback: ((reason: CloseReason) => void) | undefined = undefined
  private closedBy: CloseReason | undefined = undefined
  private stopped = false
  /** Stops the poll timer of a polled endpoint. */
  stopTimer: (() => void) | undefined = undefined

  constructor(
    readonly identity: Transport.OfferIdentity,
    readonly childRelid: number,
    /** The channel's two rings: TX (guest→host) first, RX second, each half of the region. */
    readonly region: MappedRegion,
    /** Sub-channels on kernels that may crash on their interrupts: keep RX masked, drain on a timer. */
    readonly polled: boolean,
    private readonly ringHost: () => void
  ) {
    const half = region.bytes.byteLength / 2
    this.outgoing = region.bytes.subarray(0, half)
    this.incoming = region.bytes.subarray(half)
  }

  /** The channel checks it before every ring access: false once the mapping is revoked (close or rescind). */
  readonly ringsValid = (): boolean => !this.stopped && this.region.valid()

  get live(): boolean {
    return !this.stopped && this.closedBy === undefined && this.region.valid()
  }

  readonly signal = (): void => {
    if (!this.live) return
    this.counters.signalsSent++
    this.ringHost()
  }

  readonly onSignal = (callback: () => void): void => {
    this.signalCallback = callback
    if (this.pendingSignal) {
      this.pendingSignal = false
      callback()
    }
  }

  readonly onPeerClose = (callback: (reason: CloseReason) => void): void => {
    this.peerCloseCallback = callback
    if (this.closedBy !== undefined) callback(this.closedBy)
  }

  /** A device event (or a poll tick): the channel re-reads its rings. */
  notify(): void {
    if (this.stopped || this.closedBy !== undefined) return
    this.counters.signalsReceived++
    const callback = this.signalCallback
    if (callback === undefined) {
      this.pendingSignal = true
      return
    }
    try {
      callback()
    } catch {
      // A throwing callback must not stop the device's event delivery to the other endpoints.
    }
  }

  peerClosed(reason: CloseReason): void {
    if (this.stopped || this.closedBy !== undefined) return
    this.closedBy = reason
    try {
      this.peerCloseCallback?.(reason)
    } catch {
      // as above
    }
  }

  stop(): void {
    this.stopped = true
  }
}

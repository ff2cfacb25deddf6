// The delivered packets not yet released, as an intrusive doubly linked list: adding and removing a
// packet (once each per packet, on the hot path) touch two links and allocate nothing, where a Set
// hashes and resizes. Walked only by a pause or close.

/** What a member carries: its links, and whether it is in the list. */
export interface LiveLinks {
  livePrev: LiveLinks | undefined
  liveNext: LiveLinks | undefined
  isLive: boolean
}

export class LiveList<A extends LiveLinks> {
  private head: A | undefined = undefined
  private count = 0

  get size(): number {
    return this.count
  }

  add(item: A): void {
    if (item.isLive) return
    item.isLive = true
    item.livePrev = undefined
    item.liveNext = this.head
    if (this.head !== undefined) this.head.livePrev = item
    this.head = item
    this.count++
  }

  /** Removes `item`; false if it was not in the list. */
  delete(item: A): boolean {
    if (!item.isLive) return false
    item.isLive = false
    const prev = item.livePrev
    const next = item.liveNext
    if (prev !== undefined) prev.liveNext = next
    else this.head = next as A | undefined
    if (next !== undefined) next.livePrev = prev
    item.livePrev = undefined
    item.liveNext = undefined
    this.count--
    return true
  }

  has(item: A): boolean {
    return item.isLive
  }

  /** A snapshot, oldest first: safe to walk while members are removed. */
  toArray(): Array<A> {
    const out: Array<A> = []
    for (let item = this.head; item !== undefined; item = item.liveNext as A | undefined) out.push(item)
    return out.reverse()
  }
}

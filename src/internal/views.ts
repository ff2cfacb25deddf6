// Revocable views of guest memory a channel hands out (a packet's external data, a transfer page
// set). The channel owns them: every access checks `live`, and the channel revokes them when the packet
// is released, the set unregistered, or the open period ends — whichever comes first.

export interface View {
  readonly live: boolean
}

class Token implements View {
  live = true
}

export class Views {
  private readonly open = new Set<Token>()

  constructor(
    /** Told the number of live views after every change. */
    private readonly changed: (count: number) => void
  ) {}

  get size(): number {
    return this.open.size
  }

  make(): View {
    const token = new Token()
    this.open.add(token)
    this.changed(this.open.size)
    return token
  }

  revoke(view: View): void {
    const token = view as Token
    if (!this.open.delete(token)) return
    token.live = false
    this.changed(this.open.size)
  }

  revokeAll(): void {
    for (const token of this.open) token.live = false
    this.open.clear()
    this.changed(0)
  }
}

// Memory figures for status reports. Linux reports si_mem_available() and vm_memory_committed() (plus
// the ballooned pages), which user space reads as MemAvailable and Committed_AS in /proc/meminfo.
import * as Effect from "effect/Effect"
import * as fs from "node:fs"
import * as os from "node:os"

export interface MemoryStatus {
  /** Memory available without swapping (Linux: `MemAvailable`). */
  readonly availablePages: number
  /** Memory committed (Linux: `Committed_AS`); the host sizes the guest by it. */
  readonly committedPages: number
  /** Swap size in pages (the host's "page file"). */
  readonly pageFileSizePages?: number | undefined
  /** Free pages (`zero_free`; Linux: `MemFree`). */
  readonly freePages?: number | undefined
}

const PAGE = 4096

/** Parses /proc/meminfo text (values in kB); `undefined` when the two figures Linux uses are missing. */
export const parseMeminfo = (text: string): MemoryStatus | undefined => {
  const kb = new Map<string, number>()
  for (const line of text.split("\n")) {
    const match = /^(\w+):\s+(\d+)\s*kB/.exec(line)
    if (match !== null) kb.set(match[1]!, Number(match[2]))
  }
  const available = kb.get("MemAvailable")
  const committed = kb.get("Committed_AS")
  if (available === undefined || committed === undefined) return undefined
  const pages = (v: number | undefined) => (v === undefined ? undefined : Math.floor((v * 1024) / PAGE))
  return {
    availablePages: pages(available)!,
    committedPages: pages(committed)!,
    pageFileSizePages: pages(kb.get("SwapTotal")),
    freePages: pages(kb.get("MemFree"))
  }
}

export const readMemoryStatus: Effect.Effect<MemoryStatus> = Effect.sync(() => {
  try {
    const parsed = parseMeminfo(fs.readFileSync("/proc/meminfo", "utf8"))
    if (parsed !== undefined) return parsed
  } catch {
    // Not Linux, or /proc is not mounted: fall back to what Node knows.
  }
  const free = Math.floor(os.freemem() / PAGE)
  return { availablePages: free, committedPages: Math.floor(os.totalmem() / PAGE) - free, freePages: free }
})

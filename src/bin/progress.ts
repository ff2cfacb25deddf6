/**
 * Progress of a long run on stderr: on a terminal one live line rewritten in place (at most ten
 * times a second); otherwise (a pipe, a file, CI) a plain line every `periodMillis`, so a log
 * shows the run is alive without flooding it.
 */

export interface ProgressStream {
  readonly isTTY?: boolean
  write(text: string): unknown
}

export interface Progress {
  /** The run's state now; shown at once if the live line or the period allows. */
  readonly update: (text: string) => void
  /** Takes the live line off the screen while a line is printed on stdout; `show` puts it back. */
  readonly hide: () => void
  readonly show: () => void
  /** Removes the live line (a final summary follows). */
  readonly end: () => void
}

const LIVE_MILLIS = 100
const CLEAR_LINE = "\r\u001b[2K"

export const make = (options: {
  readonly stream?: ProgressStream
  readonly periodMillis: number
  readonly now?: () => number
}): Progress => {
  const stream = options.stream ?? process.stderr
  const now = options.now ?? (() => performance.now())
  const live = stream.isTTY === true
  const period = live ? LIVE_MILLIS : options.periodMillis
  let last = -Infinity
  let shown = "" // the live line on screen, if any
  let latest = ""
  const update = (text: string) => {
    latest = text
    const t = now()
    if (t - last < period) return
    last = t
    if (live) {
      shown = text
      stream.write(`${CLEAR_LINE}${text}`)
    } else {
      stream.write(`${text}\n`)
    }
  }
  let hidden = false
  const hide = () => {
    if (shown === "") return
    stream.write(CLEAR_LINE)
    hidden = true
  }
  const show = () => {
    if (!hidden) return
    hidden = false
    stream.write(latest)
    shown = latest
  }
  const end = () => {
    if (shown !== "" && !hidden) stream.write(CLEAR_LINE)
    shown = ""
    hidden = false
  }
  return { update, hide, show, end }
}

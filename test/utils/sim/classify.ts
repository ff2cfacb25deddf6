// Sorts a failed scenario into the known defects of issue 8 (or "new"), from its report and plan.
import type { Report } from "./harness.js"
import type { Scenario } from "./scenario.js"

const LIFECYCLE = new Set(["pauseClient", "pauseServer", "closeClient", "closeServer", "rescind", "killClient", "killServer"])

export const classify = (scenario: Scenario, report: Report): ReadonlyArray<string> => {
  const classes = new Set<string>()
  const lifecycle = scenario.actions.some((a) => LIFECYCLE.has(a.action))
  const closeInServe = scenario.consumer === "serve" && scenario.requests.some((r) => r.outcome === "closeFromHandler")
  for (const failure of report.failures) {
    if (/canary written.*page offset (8|12):/.test(failure)) classes.add("D2 ring control words written after the ring pages were freed")
    else if (/canary written|external data reads/.test(failure)) {
      classes.add(lifecycle ? "D1 external data used after pause/close released its pins" : "D5 released buffer pinned as external data")
    } else if (/GPADL \d+ reads/.test(failure)) classes.add("D4 GPADL mapping outlives its open period")
    else if (closeInServe && /hung|offers is|openChannels is|fiber/.test(failure)) classes.add("D7 serve handler closing its own channel deadlocks")
    else classes.add(`new: ${failure.replace(/\d+/g, "N").slice(0, 120)}`)
  }
  return Array.from(classes)
}

/** Formatting shared by the pages. */

export const dateTime = (ms: number): string =>
  new Date(ms).toLocaleString(undefined, {
    year: "numeric",
    month: "short",
    day: "2-digit",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
  })

/** "12 s ago", "3 min ago", … from `now`. */
export const ago = (ms: number, now = Date.now()): string => {
  const s = Math.max(0, Math.round((now - ms) / 1000))
  if (s < 60) return `${s} s ago`
  if (s < 3600) return `${Math.round(s / 60)} min ago`
  if (s < 86_400) return `${Math.round(s / 3600)} h ago`
  return `${Math.round(s / 86_400)} d ago`
}

export const number = (n: number, digits = 2): string =>
  Number.isInteger(n) ? n.toLocaleString() : n.toLocaleString(undefined, { maximumFractionDigits: digits })

/**
 * Aggregate intervals the console asks for, smallest first. The history plot takes the smallest
 * that keeps a range under ~400 buckets: enough to draw a plot's width, few enough to stay fast.
 */
const intervals: ReadonlyArray<readonly [string, number]> = [
  ["1s", 1_000],
  ["5s", 5_000],
  ["10s", 10_000],
  ["30s", 30_000],
  ["1m", 60_000],
  ["5m", 300_000],
  ["15m", 900_000],
  ["1h", 3_600_000],
  ["3h", 10_800_000],
  ["6h", 21_600_000],
  ["1d", 86_400_000],
]

export const MAX_BUCKETS = 400

/** The interval for a range of `ms` milliseconds: its name for the API and its length. */
export const intervalFor = (ms: number): { name: string; ms: number } => {
  const hit = intervals.find(([, len]) => ms / len <= MAX_BUCKETS) ?? intervals[intervals.length - 1]!
  return { name: hit[0], ms: hit[1] }
}

/** A `datetime-local` input's value for `ms`, in local time. */
export const toLocalInput = (ms: number): string => {
  const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60_000)
  return d.toISOString().slice(0, 16)
}

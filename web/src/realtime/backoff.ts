/** Reconnect delays: exponential from 250 ms, capped, with jitter so a restarted server is not stampeded. */
export function backoffDelay(attempt: number, { base = 250, cap = 10_000, random = Math.random } = {}): number {
  const ceiling = Math.min(cap, base * 2 ** Math.max(0, attempt))
  return Math.round(ceiling / 2 + (random() * ceiling) / 2)
}

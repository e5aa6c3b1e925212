/**
 * Resolve in a later task, so the browser may paint and handle input in between: one long task
 * becomes two. `scheduler.yield()` where the browser has it (the continuation runs ahead of other
 * queued tasks), else a zero-delay timer.
 */
export function nextTask(): Promise<void> {
  const scheduler = (globalThis as { scheduler?: { yield?: () => Promise<void> } }).scheduler
  if (typeof scheduler?.yield === 'function') return scheduler.yield()
  return new Promise((resolve) => setTimeout(resolve, 0))
}

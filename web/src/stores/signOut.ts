/** Work to do when the user signs out (registered by modules that hold per-user state). */
const hooks = new Set<() => void>()

export function onSignOut(hook: () => void): void {
  hooks.add(hook)
}

export function runSignOutHooks(): void {
  for (const hook of hooks) hook()
}

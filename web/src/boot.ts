import { createApp } from 'vue'
import { createPinia } from 'pinia'
import App from './App.vue'
import { reportChunkErrors } from './lib/asyncPanel'
import { nextTask } from './lib/nextTask'
import { makeRouter, preloadStoredSession } from './router'
import { readStored, useAuthStore } from './stores/auth'

/**
 * The app's start, one step per task: with the browser on one busy core a task's wall time is 3-6x
 * its CPU time, so a step of 10 ms of CPU was a long task (web/README.md, "Start-up in smaller
 * tasks"). In order: the entry script's evaluation (nothing else: this runs a task later); the app,
 * its store and the session's restore (GET /me in flight); the router; the page's chunks fetched
 * meanwhile when a session is stored (a <link> each); the first navigation once the session is
 * known; the mount of the app's shell; then the route's view (router `lazy()`).
 */
export async function start(el: string | Element = '#app'): Promise<void> {
  await nextTask()
  reportChunkErrors()
  const app = createApp(App)
  app.use(createPinia())
  // Restore the session before the first navigation so a reload keeps the user on their page.
  const restored = useAuthStore().restore()
  await nextTask()
  const router = makeRouter()
  await nextTask()
  // A stored session: fetch the page's chunks while GET /me is in flight, not after it (only a live
  // session's, and only the page this user will land on).
  preloadStoredSession(router, location.pathname + location.search, readStored())
  await restored
  await nextTask()
  app.use(router) // starts the first navigation
  await nextTask()
  app.mount(el)
}

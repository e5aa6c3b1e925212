import { createApp } from 'vue'
import { createPinia } from 'pinia'
import App from './App.vue'
import { reportChunkErrors } from './lib/asyncPanel'
import { nextTask } from './lib/nextTask'
import { makeRouter, preloadStoredSession } from './router'
import { readStored, useAuthStore } from './stores/auth'
import './styles.css'

/**
 * The app's start, one step per task (each one a long task's worth on a slow device when they were
 * together): the entry script, which restores the session (GET /me in flight); the router, and the
 * page's chunks fetched meanwhile when a session is stored; the first navigation once the session is
 * known; the mount of the app's shell; then the route's view (router `lazy()`).
 */
async function start(): Promise<void> {
  reportChunkErrors()
  const app = createApp(App)
  app.use(createPinia())
  // Restore the session before the first navigation so a reload keeps the user on their page.
  const restored = useAuthStore().restore()
  await nextTask()
  const router = makeRouter()
  // A stored session: fetch the page's chunks while GET /me is in flight, not after it (only a live
  // session's, and only the page this user will land on).
  preloadStoredSession(router, location.pathname + location.search, readStored())
  await restored
  app.use(router) // starts the first navigation
  await nextTask()
  app.mount('#app')
}

void start()

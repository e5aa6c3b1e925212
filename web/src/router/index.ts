import { createRouter, createWebHistory, type RouteComponent, type RouteLocationNormalized,
  type RouteLocationNormalizedLoaded, type RouteLocationRaw,
  type Router, type RouteRecordRaw } from 'vue-router'
import type { Role } from '../api/types'
import { loadEditorKit } from '../components/loadEditorKit'
import { nextTask } from '../lib/nextTask'
import { REFRESH_MARGIN_MS, useAuthStore, type Stored } from '../stores/auth'
// Sign-in is in the main bundle: an expired session must reach it even when a chunk cannot load.
import LoginView from '../views/LoginView.vue'

type Loader = () => Promise<{ default: RouteComponent }>

/**
 * A screen in a chunk of its own. Once the chunk has loaded and run, the router goes on (renders the
 * screen) in a later task: evaluating a chunk and mounting its view in one task was the page's
 * longest start-up task. `lazy(loader).preload()` starts the fetch without the yield.
 */
export function lazy(loader: Loader): Loader & { preload: Loader } {
  const load = async () => {
    const module = await loader()
    await nextTask()
    return module
  }
  return Object.assign(load, { preload: loader })
}

/**
 * Where a navigation to `to` goes for a user (signed in or not, with a role): `true` to stay, or the
 * page they are sent to. The router's guard, and what preloadRoute follows.
 */
export function landing(to: Pick<RouteLocationNormalized, 'meta' | 'name' | 'fullPath'>, signedIn: boolean, role: Role | null): true | RouteLocationRaw {
  if (to.meta.public) {
    if (signedIn && (to.name === 'login' || to.name === 'register')) return { path: '/classes' }
    return true
  }
  if (!signedIn) return { path: '/login', query: to.fullPath !== '/classes' ? { next: to.fullPath } : {} }
  // A page for one role: anyone else lands on their classes (the API refuses them anyway).
  if (to.meta.role && role !== to.meta.role) return { path: '/classes' }
  return true
}

/**
 * Start fetching the chunk(s) of the screen a signed-in user with `role` lands on at `path` (no
 * navigation, no yield): redirects and the role guard are followed, so a page for another role (the
 * admin's) is never fetched for them. Errors are left to the navigation.
 */
export function preloadRoute(router: Router, path: string, role: Role): void {
  // A resolved location has what the guard and a redirect read (its name may be null: unnamed records).
  const resolve = (raw: RouteLocationRaw, from?: RouteLocationNormalized) =>
    router.resolve(raw, from as RouteLocationNormalizedLoaded | undefined) as unknown as RouteLocationNormalized
  let to = resolve(path)
  for (let hop = 0; hop < 5; hop++) {
    const redirect = to.matched.find((record) => record.redirect)?.redirect
    const next = redirect
      ? (typeof redirect === 'function' ? redirect(to, to) : redirect)
      : landing(to, true, role)
    if (next === true) break
    to = resolve(next, to)
  }
  for (const record of to.matched) {
    const component = record.components?.default as { preload?: Loader } | undefined
    if (typeof component?.preload === 'function') component.preload().catch(() => undefined)
  }
}

/**
 * At start, with the session kept by an earlier load (`stored`): preload the page's chunks while
 * GET /me is in flight, as that user. Only when the access token is still good: a session that needs
 * a refresh may have ended (the page is then /login), so nothing is preloaded and the navigation
 * fetches what it needs.
 */
export function preloadStoredSession(router: Router, path: string, stored: Stored | null, now = Date.now()): void {
  if (stored?.user && stored.accessExpiresAt - now > REFRESH_MARGIN_MS) preloadRoute(router, path, stored.user.role)
}

/**
 * A screen with an essay editor: its chunk, and CodeMirror's chunk started alongside (not awaited):
 * fetched in parallel rather than after the view's chunk ran, evaluated in a task of its own. Its
 * request (Vite inserts a <link> per file) is made in the next task, not in the one requesting the
 * screen's chunks.
 */
function withEditor(loader: Loader): Loader {
  return () => {
    // EssayEditor waits for it, and shows its failure.
    void nextTask().then(loadEditorKit).catch(() => undefined)
    return loader()
  }
}

// Every other screen is its own chunk: the editor route loads only what it needs.
export const routes: RouteRecordRaw[] = [
  { path: '/', redirect: '/classes' },
  { path: '/login', name: 'login', component: LoginView, meta: { public: true } },
  { path: '/register', name: 'register', component: lazy(() => import('../views/RegisterView.vue')), meta: { public: true } },
  { path: '/classes', name: 'classes', component: lazy(() => import('../views/ClassesView.vue')) },
  { path: '/classes/:classId', name: 'class', component: lazy(() => import('../views/ClassView.vue')), props: true },
  { path: '/classes/:classId/live', name: 'live', component: lazy(() => import('../views/LiveClassView.vue')), props: true },
  { path: '/essays/:essayId', name: 'editor', component: lazy(withEditor(() => import('../views/EditorView.vue'))), props: true },
  { path: '/essays/:essayId/review', name: 'review', component: lazy(withEditor(() => import('../views/ReviewView.vue'))), props: true },
  { path: '/rubrics', name: 'rubrics', component: lazy(() => import('../views/RubricsView.vue')) },
  { path: '/rubrics/:rubricId', name: 'rubric', component: lazy(() => import('../views/RubricEditView.vue')), props: true },
  { path: '/account', name: 'account', component: lazy(() => import('../views/AccountView.vue')) },
  // Admin code is its own chunk, fetched only by an admin who opens the page.
  { path: '/admin', name: 'admin', component: lazy(() => import('../views/AdminView.vue')), meta: { role: 'admin' } },
  { path: '/submissions/:submissionId', name: 'submission', component: lazy(() => import('../views/SubmissionView.vue')), props: true },
  { path: '/:pathMatch(.*)*', name: 'missing', component: lazy(() => import('../views/NotFoundView.vue')), meta: { public: true } },
]

export function makeRouter(): Router {
  const router = createRouter({ history: createWebHistory(), routes })
  router.beforeEach((to) => {
    const auth = useAuthStore()
    return landing(to, auth.signedIn, auth.role)
  })
  return router
}

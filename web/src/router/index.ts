import { createRouter, createWebHistory, type RouteComponent, type Router, type RouteRecordRaw } from 'vue-router'
import { nextTask } from '../lib/nextTask'
import { useAuthStore } from '../stores/auth'
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

/** Start fetching the chunk(s) of the screen at `path` (no navigation, no yield); errors are left to the navigation. */
export function preloadRoute(router: Router, path: string): void {
  for (const record of router.resolve(path).matched) {
    const component = record.components?.default as { preload?: Loader } | undefined
    if (typeof component?.preload === 'function') component.preload().catch(() => undefined)
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
  { path: '/essays/:essayId', name: 'editor', component: lazy(() => import('../views/EditorView.vue')), props: true },
  { path: '/essays/:essayId/review', name: 'review', component: lazy(() => import('../views/ReviewView.vue')), props: true },
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
    if (to.meta.public) {
      if (auth.signedIn && (to.name === 'login' || to.name === 'register')) return { path: '/classes' }
      return true
    }
    if (!auth.signedIn) return { path: '/login', query: to.fullPath !== '/classes' ? { next: to.fullPath } : {} }
    // A page for one role: anyone else lands on their classes (the API refuses them anyway).
    if (to.meta.role && auth.role !== to.meta.role) return { path: '/classes' }
    return true
  })
  return router
}

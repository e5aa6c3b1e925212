import { createRouter, createWebHistory, type Router, type RouteRecordRaw } from 'vue-router'
import { useAuthStore } from '../stores/auth'
// Sign-in is in the main bundle: an expired session must reach it even when a chunk cannot load.
import LoginView from '../views/LoginView.vue'

// Every other screen is its own chunk: the editor route loads only what it needs.
export const routes: RouteRecordRaw[] = [
  { path: '/', redirect: '/classes' },
  { path: '/login', name: 'login', component: LoginView, meta: { public: true } },
  { path: '/register', name: 'register', component: () => import('../views/RegisterView.vue'), meta: { public: true } },
  { path: '/classes', name: 'classes', component: () => import('../views/ClassesView.vue') },
  { path: '/classes/:classId', name: 'class', component: () => import('../views/ClassView.vue'), props: true },
  { path: '/classes/:classId/live', name: 'live', component: () => import('../views/LiveClassView.vue'), props: true },
  { path: '/essays/:essayId', name: 'editor', component: () => import('../views/EditorView.vue'), props: true },
  { path: '/essays/:essayId/review', name: 'review', component: () => import('../views/ReviewView.vue'), props: true },
  { path: '/rubrics', name: 'rubrics', component: () => import('../views/RubricsView.vue') },
  { path: '/rubrics/:rubricId', name: 'rubric', component: () => import('../views/RubricEditView.vue'), props: true },
  { path: '/account', name: 'account', component: () => import('../views/AccountView.vue') },
  // Admin code is its own chunk, fetched only by an admin who opens the page.
  { path: '/admin', name: 'admin', component: () => import('../views/AdminView.vue'), meta: { role: 'admin' } },
  { path: '/submissions/:submissionId', name: 'submission', component: () => import('../views/SubmissionView.vue'), props: true },
  { path: '/:pathMatch(.*)*', name: 'missing', component: () => import('../views/NotFoundView.vue'), meta: { public: true } },
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

import { existsSync, readFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { mount } from '@vue/test-utils'
import { createMemoryHistory, createRouter } from 'vue-router'
import * as Y from 'yjs'
import { Awareness } from 'y-protocols/awareness'
import { lazy, preloadRoute, preloadStoredSession } from '../src/router'
import type { Stored } from '../src/stores/auth'
import EssayEditor from '../src/components/EssayEditor.vue'
import { loadEditorKit } from '../src/components/loadEditorKit'

/** Run every queued microtask (many rounds), but no timer task. */
async function microtasks(): Promise<void> {
  for (let i = 0; i < 50; i++) await Promise.resolve()
}
const task = () => new Promise<void>((resolve) => setTimeout(resolve, 0))

/** An essay editor on `doc`'s text, in the page, with CodeMirror's chunk already loaded (as the route does). */
async function mountEditor(doc: Y.Doc) {
  await loadEditorKit()
  return mount(EssayEditor, { props: { text: doc.getText('content'), awareness: new Awareness(doc), marks: [],
    label: 'Your essay' }, attachTo: document.body })
}

/** The packages and files the module at `entry` imports statically (not `import type`, not `import()`), transitively. */
function staticImports(entry: string, seen = new Set<string>()): Set<string> {
  if (seen.has(entry)) return seen
  seen.add(entry)
  if (!entry.startsWith('/')) return seen // a package
  const source = readFileSync(entry, 'utf8')
  for (const [, spec] of source.matchAll(/^\s*import\s+(?!type\b)(?:[^'"]*?\s+from\s+)?['"]([^'"]+)['"]/gm)) {
    if (!spec.startsWith('.')) { staticImports(spec, seen); continue }
    const base = resolve(dirname(entry), spec)
    const file = [base, `${base}.ts`, join(base, 'index.ts')].find((f) => existsSync(f) && !f.endsWith('/') && /\.(ts|vue|css)$/.test(f))
    if (file && !file.endsWith('.css')) staticImports(file, seen)
  }
  return seen
}

describe('start-up work split into tasks', () => {
  afterEach(() => { document.body.innerHTML = '' })

  it('the entry script runs no component library code (Naive UI was dropped: web/README.md)', () => {
    const graph = staticImports(join(__dirname, '..', 'src', 'main.ts'))
    expect(graph.has(join(__dirname, '..', 'src', 'App.vue'))).toBe(true)
    expect(graph.has('vue-router')).toBe(true)
    expect([...graph].filter((m) => m.startsWith('naive-ui'))).toEqual([])
  })

  it('a lazy screen resolves a task after its chunk ran, not in the same task', async () => {
    const screen = { template: '<p>screen</p>' }
    const load = lazy(async () => ({ default: screen }))
    let resolved: unknown = null
    void load().then((m) => { resolved = m.default })
    await microtasks()
    expect(resolved).toBeNull()
    await task()
    await microtasks()
    expect(resolved).toBe(screen)
  })

  it('preloadRoute fetches the chunk of the screen at a path, and only that one', async () => {
    const editor = vi.fn(async () => ({ default: { template: '<p>e</p>' } }))
    const other = vi.fn(async () => ({ default: { template: '<p>o</p>' } }))
    const broken = vi.fn(async () => { throw new Error('offline') })
    const router = createRouter({ history: createMemoryHistory(), routes: [
      { path: '/essays/:id', component: lazy(editor) },
      { path: '/other', component: lazy(other) },
      { path: '/broken', component: lazy(broken) },
    ] })
    preloadRoute(router, '/essays/e1?x=1', 'student')
    expect(editor).toHaveBeenCalledTimes(1)
    expect(other).not.toHaveBeenCalled()
    preloadRoute(router, '/broken', 'student') // a chunk that cannot load: left to the navigation, no unhandled rejection
    await task()
    expect(broken).toHaveBeenCalledTimes(1)
    // The navigation still gets the screen (the same loader: the browser fetches a chunk once).
    await router.push('/essays/e1')
    expect(editor).toHaveBeenCalledTimes(2)
    expect(router.currentRoute.value.matched[0].components?.default).toEqual({ template: '<p>e</p>' })
  })

  it('preloadRoute fetches only what this user lands on: no page of another role, redirects followed', async () => {
    const loader = () => vi.fn(async () => ({ default: { template: '<p>x</p>' } }))
    const admin = loader(), classes = loader(), register = loader(), editor = loader()
    const router = createRouter({ history: createMemoryHistory(), routes: [
      { path: '/', redirect: '/classes' },
      { path: '/home', redirect: () => ({ path: '/' }) },
      { path: '/register', name: 'register', component: lazy(register), meta: { public: true } },
      { path: '/classes', component: lazy(classes) },
      { path: '/essays/:id', component: lazy(editor) },
      { path: '/admin', component: lazy(admin), meta: { role: 'admin' } },
    ] })
    preloadRoute(router, '/admin', 'student') // the guard sends a student to their classes
    expect(admin).not.toHaveBeenCalled()
    expect(classes).toHaveBeenCalledTimes(1)
    preloadRoute(router, '/admin', 'admin')
    expect(admin).toHaveBeenCalledTimes(1)
    preloadRoute(router, '/home', 'teacher') // two redirects
    expect(classes).toHaveBeenCalledTimes(2)
    preloadRoute(router, '/register', 'teacher') // signed in: sign-up sends them to their classes
    expect(register).not.toHaveBeenCalled()
    expect(classes).toHaveBeenCalledTimes(3)
    // At start: only a stored session whose access token is still good (one that needs a refresh may
    // have ended: its page is then /login) and that has a user.
    const now = 1_000_000_000
    const user = { id: 'u1', email: 'a@b.c', name: 'A', role: 'admin' as const, created_at: '' }
    const stored = (accessExpiresAt: number, u: Stored['user'] = user): Stored => ({ access: 'a', refresh: 'r', accessExpiresAt, user: u })
    preloadStoredSession(router, '/essays/e1', stored(now + 30_000), now) // within the refresh margin
    preloadStoredSession(router, '/essays/e1', stored(now + 600_000, null), now)
    preloadStoredSession(router, '/essays/e1', null, now)
    expect(editor).not.toHaveBeenCalled()
    preloadStoredSession(router, '/essays/e1', stored(now + 600_000), now)
    expect(editor).toHaveBeenCalledTimes(1)
    preloadStoredSession(router, '/admin', stored(now + 600_000, { ...user, role: 'student' }), now)
    expect(admin).toHaveBeenCalledTimes(1)
  })

  it('CodeMirror is a chunk of its own: neither the entry nor the editor and review views import it statically', () => {
    const src = join(__dirname, '..', 'src')
    for (const entry of ['main.ts', 'views/EditorView.vue', 'views/ReviewView.vue']) {
      const graph = staticImports(join(src, entry))
      expect([...graph].filter((m) => m.startsWith('@codemirror/') || m === 'y-codemirror.next'), entry).toEqual([])
    }
    expect(staticImports(join(src, 'components', 'editorKit.ts')).has('@codemirror/view')).toBe(true)
  })

  it('the essay editor builds CodeMirror in a task after mount, and puts it in the page in the next, with the text', async () => {
    await loadEditorKit() // as the route does, alongside the view's chunk
    const doc = new Y.Doc()
    const text = doc.getText('content')
    text.insert(0, 'Hello class')
    const w = mount(EssayEditor, { props: { text, awareness: new Awareness(doc), marks: [], label: 'Your essay' },
      attachTo: document.body })
    await microtasks()
    expect(w.vm.ready()).toBe(false)
    expect(w.emitted('ready')).toBeUndefined()
    expect(w.find('.cm-content').exists()).toBe(false)
    await task()
    await microtasks()
    expect(w.vm.ready()).toBe(false) // built, not yet in the page
    expect(w.find('.cm-content').exists()).toBe(false)
    await task()
    await microtasks()
    expect(w.vm.ready()).toBe(true)
    expect(w.emitted('ready')).toHaveLength(1)
    const content = w.get('.cm-content')
    expect(content.text()).toBe('Hello class')
    expect(content.attributes('aria-label')).toBe('Your essay')
    text.insert(11, '!') // still bound to the Y.Text
    expect(w.get('.cm-content').text()).toBe('Hello class!')
    w.unmount()
  })

  it('marks that change between the build and the attach are the ones shown', async () => {
    const doc = new Y.Doc()
    doc.getText('content').insert(0, 'they was late')
    const w = await mountEditor(doc)
    await microtasks()
    await task()
    await microtasks() // built, with no marks
    await w.setProps({ marks: [{ id: 'f1', kind: 'grammar', start: 0, end: 8, quote: 'they was' }] })
    await task()
    await microtasks()
    expect(w.vm.ready()).toBe(true)
    expect(w.get('.fb-mark').text()).toBe('they was')
    expect(w.vm.spanOf('f1')).toEqual({ from: 0, to: 8 })
    w.unmount()
  })

  // Unmounted before the build's task (0: never built), or between the build and the attach (1).
  for (const tasksBefore of [0, 1]) {
    it(`an editor unmounted after ${tasksBefore} of its 2 tasks leaves nothing in the page`, async () => {
      const doc = new Y.Doc()
      const w = await mountEditor(doc)
      const vm = w.vm
      await microtasks()
      for (let i = 0; i < tasksBefore; i++) {
        await task()
        await microtasks()
      }
      w.unmount()
      await task()
      await microtasks()
      expect(vm.ready()).toBe(false)
      expect(w.emitted('ready')).toBeUndefined()
      expect(document.querySelector('.cm-editor')).toBeNull()
      doc.getText('content').insert(0, 'typed elsewhere') // a built, destroyed view no longer follows the text
    })
  }
})

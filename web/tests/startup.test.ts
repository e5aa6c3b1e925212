import { afterEach, describe, expect, it, vi } from 'vitest'
import { mount } from '@vue/test-utils'
import { createMemoryHistory, createRouter } from 'vue-router'
import * as Y from 'yjs'
import { Awareness } from 'y-protocols/awareness'
import { lazy, preloadRoute } from '../src/router'
import EssayEditor from '../src/components/EssayEditor.vue'

/** Run every queued microtask (many rounds), but no timer task. */
async function microtasks(): Promise<void> {
  for (let i = 0; i < 50; i++) await Promise.resolve()
}
const task = () => new Promise<void>((resolve) => setTimeout(resolve, 0))

describe('start-up work split into tasks', () => {
  afterEach(() => { document.body.innerHTML = '' })

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
    preloadRoute(router, '/essays/e1?x=1')
    expect(editor).toHaveBeenCalledTimes(1)
    expect(other).not.toHaveBeenCalled()
    preloadRoute(router, '/broken') // a chunk that cannot load: left to the navigation, no unhandled rejection
    await task()
    expect(broken).toHaveBeenCalledTimes(1)
    // The navigation still gets the screen (the same loader: the browser fetches a chunk once).
    await router.push('/essays/e1')
    expect(editor).toHaveBeenCalledTimes(2)
    expect(router.currentRoute.value.matched[0].components?.default).toEqual({ template: '<p>e</p>' })
  })

  it('the essay editor builds CodeMirror in a task after mount, with the text', async () => {
    const doc = new Y.Doc()
    const text = doc.getText('content')
    text.insert(0, 'Hello class')
    const w = mount(EssayEditor, { props: { text, awareness: new Awareness(doc), marks: [], label: 'Your essay' },
      attachTo: document.body })
    await microtasks()
    expect(w.vm.ready()).toBe(false)
    expect(w.find('.cm-content').exists()).toBe(false)
    await task()
    await microtasks()
    expect(w.vm.ready()).toBe(true)
    const content = w.get('.cm-content')
    expect(content.text()).toBe('Hello class')
    expect(content.attributes('aria-label')).toBe('Your essay')
    text.insert(11, '!') // still bound to the Y.Text
    expect(w.get('.cm-content').text()).toBe('Hello class!')
    w.unmount()
  })

  it('an editor unmounted before its task never builds CodeMirror', async () => {
    const doc = new Y.Doc()
    const w = mount(EssayEditor, { props: { text: doc.getText('content'), awareness: new Awareness(doc), marks: [],
      label: 'Your essay' }, attachTo: document.body })
    const vm = w.vm
    w.unmount()
    await task()
    await microtasks()
    expect(vm.ready()).toBe(false)
    expect(document.querySelector('.cm-editor')).toBeNull()
  })
})

/** The app's and the live class view's start, one step per task (web/README.md, "Start-up in smaller tasks"). */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { flushPromises, mount } from '@vue/test-utils'
import { createPinia } from 'pinia'
import { createMemoryHistory, createRouter } from 'vue-router'
import App from '../src/App.vue'
import { makeRouter, preloadStoredSession } from '../src/router'
import LiveClassView from '../src/views/LiveClassView.vue'
import { freshServer } from './fakes'

// Every nextTask is held until the test lets the queued ones run (`step`): one task at a time.
const held = vi.hoisted(() => ({ release: [] as (() => void)[] }))
vi.mock('../src/lib/nextTask', () => ({ nextTask: () => new Promise<void>((resolve) => held.release.push(resolve)) }))
vi.mock('../src/router', async (importOriginal) => {
  const real = await importOriginal<typeof import('../src/router')>()
  return { ...real, makeRouter: vi.fn(real.makeRouter), preloadStoredSession: vi.fn() }
})

/** Let the work waiting for the next task run (every nextTask queued so far), then its microtasks. */
async function step(): Promise<void> {
  await vi.waitUntil(() => held.release.length > 0)
  for (const release of held.release.splice(0)) release()
  await flushPromises()
}

const USER = { id: 'u1', email: 'rivera@example.com', name: 'Ms Rivera', role: 'teacher', created_at: '' }

describe('start-up steps in tasks of their own', () => {
  beforeEach(() => { held.release = [] })
  afterEach(() => {
    vi.unstubAllGlobals()
    document.body.innerHTML = ''
  })

  it('the shell renders first, the nav a task later, the route\'s view a task after that', async () => {
    freshServer()
    const router = createRouter({ history: createMemoryHistory(), routes: [
      { path: '/', component: { template: '<p data-testid="screen">screen</p>' } }] })
    await router.push('/')
    const w = mount(App, { global: { plugins: [createPinia(), router] } })
    await flushPromises()
    expect(w.find('main').exists()).toBe(true)
    expect(w.find('header.nav').exists()).toBe(false)
    expect(w.find('[data-testid=screen]').exists()).toBe(false)
    await step()
    expect(w.find('header.nav').exists()).toBe(true)
    expect(w.find('[data-testid=screen]').exists()).toBe(false)
    await step()
    expect(w.find('header.nav').exists()).toBe(true)
    expect(w.find('[data-testid=screen]').exists()).toBe(true)
    w.unmount()
  })

  it('the entry\'s task only evaluates it; the session, the router, the preloads, the navigation and the mount follow a task each', async () => {
    const fake = freshServer().on('GET', '/me', () => ({ status: 200, body: USER }))
    localStorage.setItem('essaycoach.auth', JSON.stringify({ access: 'a', refresh: 'r', user: USER,
      accessExpiresAt: Date.now() + 600_000 }))
    const el = document.createElement('div')
    document.body.append(el)
    const { start } = await import('../src/boot')
    void start(el)
    await flushPromises()
    expect(fake.calls).toHaveLength(0)
    await step() // the app, its store, the session's restore
    expect(fake.callsTo('GET', '/me')).toHaveLength(1)
    expect(makeRouter).not.toHaveBeenCalled()
    await step()
    expect(makeRouter).toHaveBeenCalledOnce()
    expect(preloadStoredSession).not.toHaveBeenCalled()
    await step()
    expect(preloadStoredSession).toHaveBeenCalledOnce()
    await step() // the first navigation starts
    expect(el.querySelector('main')).toBeNull()
    await step()
    expect(el.querySelector('main')).not.toBeNull()
  })

  it('the live class view renders its heading first, its controls a task later, and fetches the class a task after that', async () => {
    const fake = freshServer().on('GET', '/classes/c1', () => ({ status: 200, body: { id: 'c1', name: 'English 9' } }))
    const w = mount(LiveClassView, { props: { classId: 'c1' }, global: { plugins: [createPinia()] } })
    await flushPromises()
    expect(w.find('h1').text()).toBe('Live: class')
    expect(w.find('[data-testid=live-sort]').exists()).toBe(false)
    await step()
    expect(w.find('[data-testid=live-sort]').exists()).toBe(true)
    expect(w.find('[data-testid=live-docs-toggle]').exists()).toBe(true)
    expect(fake.callsTo('GET', '/classes/c1')).toHaveLength(0)
    await step()
    expect(fake.callsTo('GET', '/classes/c1')).toHaveLength(1)
    await flushPromises()
    expect(w.find('h1').text()).toBe('Live: English 9')
    w.unmount()
  })
})

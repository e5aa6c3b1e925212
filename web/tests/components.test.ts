import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { flushPromises, mount } from '@vue/test-utils'
import { createPinia, setActivePinia } from 'pinia'
import { createMemoryHistory, createRouter } from 'vue-router'
import LoginView from '../src/views/LoginView.vue'
import FeedbackPanel from '../src/components/FeedbackPanel.vue'
import LiveCard from '../src/components/LiveCard.vue'
import type { Comment, FeedbackItem, LiveRow } from '../src/api/types'
import { arrangeRows } from '../src/stores/classLive'
import { FakeServer } from './fakes'

const HOSTILE = '<script>window.pwned=1</script><img src=x onerror="window.pwned=1"><a href="javascript:alert(1)">click</a>'

function router() {
  return createRouter({ history: createMemoryHistory(), routes: [
    { path: '/login', component: LoginView },
    { path: '/classes', component: { template: '<p>classes</p>' } },
    { path: '/register', component: { template: '<p>register</p>' } },
  ] })
}

describe('login form', () => {
  let fake: FakeServer
  beforeEach(() => {
    localStorage.clear()
    setActivePinia(createPinia())
    fake = new FakeServer()
    vi.stubGlobal('fetch', fake.fetch)
  })
  afterEach(() => vi.unstubAllGlobals())

  it('has labelled fields and signs in', async () => {
    fake.on('POST', '/auth/token', () => ({ status: 200, body: { access_token: 'a', refresh_token: 'r', token_type: 'bearer', expires_in: 900 } }))
      .on('GET', '/me', () => ({ status: 200, body: { id: 'u', email: 'a@b.c', name: 'Ada', role: 'student', created_at: '' } }))
    const r = router()
    await r.push('/login')
    const w = mount(LoginView, { global: { plugins: [r] }, attachTo: document.body })
    for (const id of ['login-email', 'login-password']) {
      const input = w.get(`[data-testid="${id}"]`)
      expect(w.find(`label[for="${input.attributes('id')}"]`).exists()).toBe(true)
    }
    await w.get('[data-testid="login-email"]').setValue('a@b.c')
    await w.get('[data-testid="login-password"]').setValue('secret-password')
    await w.get('form').trigger('submit')
    await flushPromises()
    expect(fake.callsTo('POST', '/auth/token')[0].body).toEqual({ email: 'a@b.c', password: 'secret-password' })
    expect(r.currentRoute.value.path).toBe('/classes')
    w.unmount()
  })

  it('shows the problem detail as text', async () => {
    fake.on('POST', '/auth/token', () => ({ status: 401, body: { detail: HOSTILE, code: 'bad_credentials' } }))
    const r = router()
    await r.push('/login')
    const w = mount(LoginView, { global: { plugins: [r] } })
    await w.get('[data-testid="login-email"]').setValue('a@b.c')
    await w.get('[data-testid="login-password"]').setValue('x')
    await w.get('form').trigger('submit')
    await flushPromises()
    const error = w.get('[data-testid="auth-error"]')
    expect(error.text()).toBe(HOSTILE)
    expect(error.element.querySelector('script, img, a')).toBeNull()
  })
})

describe('feedback panel', () => {
  const items: FeedbackItem[] = [
    { id: 'f1', kind: 'spelling', message: 'Possible misspelling', suggestion: 'believe', quote: 'beleive', start: 2, end: 9 },
    { id: 'f2', kind: 'style', message: HOSTILE, quote: HOSTILE, start: 10, end: 20 },
  ]
  const comments: Comment[] = [{ id: 'c1', essay_id: 'e', author_id: 't', body: HOSTILE, quote: 'x', start: 0, end: 1, created_at: '' }]

  it('lists items by kind and applies a suggestion in one click', async () => {
    const w = mount(FeedbackPanel, { props: { items, comments, canApply: true } })
    const rows = w.findAll('[data-testid="feedback-item"]')
    expect(rows.map((r) => r.attributes('data-kind'))).toEqual(['spelling', 'style'])
    expect(rows[0].findAll('[data-testid="feedback-apply"]')).toHaveLength(1)
    expect(rows[1].findAll('[data-testid="feedback-apply"]')).toHaveLength(0)
    await rows[0].get('[data-testid="feedback-apply"]').trigger('click')
    expect(w.emitted('apply')?.[0]).toEqual([items[0]])
  })

  it('shows hostile feedback and comments as text', () => {
    const w = mount(FeedbackPanel, { props: { items, comments } })
    expect(w.element.querySelector('script, img, a[href^="javascript"]')).toBeNull()
    expect(w.get('[data-testid="comment-item"]').text()).toContain(HOSTILE)
    expect(w.findAll('[data-testid="feedback-item"]')[1].text()).toContain(HOSTILE)
  })
})

describe('live card', () => {
  const row: LiveRow = {
    type: 'student', student_id: 's1', essay_id: 'e1', name: HOSTILE, title: 't', word_count: 42,
    last_active_at: new Date(1_000_000).toISOString(), excerpt: HOSTILE, feedback_counts: { spelling: 2, grammar: 0 },
    flags: ['large_paste'], typing_seconds: 75,
  }

  it('shows words, activity, feedback counts and flags; hostile text as text', () => {
    const w = mount(LiveCard, { props: { row, now: 1_005_000 }, global: { stubs: { RouterLink: { template: '<a data-testid="live-card-open"><slot /></a>' } } } })
    expect(w.get('[data-testid="live-card-words"]').text()).toBe('42')
    expect(w.get('[data-testid="live-card-flag"]').attributes('data-flag')).toBe('large_paste')
    expect(w.get('[data-testid="live-card-feedback-counts"]').text()).toBe('spelling: 2')
    expect(w.text()).toContain('typing now')
    expect(w.get('[data-testid="live-card-excerpt"]').text()).toBe(HOSTILE)
    expect(w.get('[data-testid="live-card-name"]').text()).toBe(HOSTILE)
    expect(w.element.querySelector('script, img, a[href^="javascript"]')).toBeNull()
  })

  it('sorts by name, words or activity and filters by name', () => {
    const rows = [
      { ...row, student_id: 'a', name: 'Bea', word_count: 10, last_active_at: '2026-12-06T02:00:00Z' },
      { ...row, student_id: 'b', name: 'Al', word_count: 30, last_active_at: '2026-12-06T01:00:00Z' },
      { ...row, student_id: 'c', name: 'Cy', word_count: 20, last_active_at: null },
    ]
    expect(arrangeRows(rows, 'name', '').map((r) => r.name)).toEqual(['Al', 'Bea', 'Cy'])
    expect(arrangeRows(rows, 'words', '').map((r) => r.name)).toEqual(['Al', 'Cy', 'Bea'])
    expect(arrangeRows(rows, 'activity', '').map((r) => r.name)).toEqual(['Bea', 'Al', 'Cy'])
    expect(arrangeRows(rows, 'name', 'b').map((r) => r.name)).toEqual(['Bea'])
  })
})

import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { flushPromises, mount } from '@vue/test-utils'
import { createMemoryHistory, createRouter } from 'vue-router'
import ExtensionsPanel from '../src/components/ExtensionsPanel.vue'
import LiveCard from '../src/components/LiveCard.vue'
import ClassView from '../src/views/ClassView.vue'
import type { Assignment, LiveRow } from '../src/api/types'
import { deadlineLabel, deadlineNotice, dueLine } from '../src/lib/deadline'
import { formatDate, isoToLocalInput } from '../src/lib/format'
import { EssayEventState, type EssayEvent } from '../src/realtime/essayEvents'
import { useAuthStore } from '../src/stores/auth'
import { FakeServer, freshServer } from './fakes'

const DUE = '2026-12-08T17:00:00.000Z'
const LATER = '2026-12-10T17:00:00.000Z'
const CLASS = 'c1'
const assignment: Assignment = { id: 'a0000000-1', class_id: CLASS, title: 'Homework', prompt: '', rubric_id: null,
  due_at: DUE, created_at: '', late_policy: 'accept', close_at: null }

describe('deadline wording', () => {
  it('says on time, late, closed, and extended until the new due time', () => {
    expect(deadlineLabel({ deadline_status: null })).toBe('')
    expect(deadlineLabel({ deadline_status: 'on_time', due_at: DUE })).toBe('on time')
    expect(deadlineLabel({ deadline_status: 'late', due_at: DUE, extended: true })).toBe(`late · extended until ${formatDate(DUE)}`)
    expect(deadlineLabel({ deadline_status: 'closed', due_at: DUE, extended: true })).toBe('closed')
    expect(deadlineNotice({ deadline_status: 'on_time', due_at: LATER, extended: true })).toBe(
      `Your teacher gave you an extension: due ${formatDate(LATER)}.`)
    expect(deadlineNotice({ deadline_status: 'closed', due_at: DUE, close_at: DUE, extended: false })).toContain('closed for writing now')
  })

  it('gives a student their own due line', () => {
    expect(dueLine({ ...assignment, effective_due_at: LATER, effective_close_at: LATER, extended: true }))
      .toBe(`Due ${formatDate(LATER)} (your extension)`)
    expect(dueLine({ ...assignment, close_at: LATER })).toBe(`Due ${formatDate(DUE)}, closes for writing ${formatDate(LATER)}`)
    expect(dueLine({ ...assignment, due_at: null })).toBe('')
  })

  it('round-trips a local datetime input', () => {
    expect(new Date(isoToLocalInput(DUE)).toISOString()).toBe(DUE)
    expect(isoToLocalInput(null)).toBe('')
  })

  it('hands a deadline event to the sink, and only once', () => {
    const got: EssayEvent[] = []
    const state = new EssayEventState({ feedback: () => {}, comment: () => {}, submission: () => {}, refetch: () => {},
      deadline: (e) => got.push(e) })
    state.handle(JSON.stringify({ type: 'presence', essay_id: 'e', seq: 3, epoch: 'x' }))
    const event = JSON.stringify({ type: 'deadline', essay_id: 'e', seq: 4, epoch: 'x', extended: true, due_at: LATER })
    state.handle(event)
    state.handle(event) // a resume's replay
    expect(got).toHaveLength(1)
    expect(got[0].due_at).toBe(LATER)
  })
})

describe('live card', () => {
  it('shows the deadline status from the live row', () => {
    const row: LiveRow = { type: 'student', student_id: 's1', essay_id: 'e1', name: 'Ada', title: 't', word_count: 3,
      last_active_at: null, excerpt: '', feedback_counts: {}, flags: [], typing_seconds: 0,
      deadline_status: 'on_time', due_at: LATER, close_at: null, extended: true }
    const w = mount(LiveCard, { props: { row, now: Date.now() }, global: { stubs: { RouterLink: true } } })
    const badge = w.get('[data-testid="live-card-deadline"]')
    expect(badge.attributes('data-status')).toBe('on_time')
    expect(badge.text()).toBe(`on time · extended until ${formatDate(LATER)}`)
    const none = mount(LiveCard, { props: { row: { ...row, deadline_status: null }, now: Date.now() }, global: { stubs: { RouterLink: true } } })
    expect(none.find('[data-testid="live-card-deadline"]').exists()).toBe(false)
  })
})

describe('extensions', () => {
  let fake: FakeServer
  beforeEach(() => { fake = freshServer() })
  afterEach(() => vi.unstubAllGlobals())

  it('the teacher gives, changes and withdraws a student\'s extension', async () => {
    const base = `/classes/${CLASS}/assignments/${assignment.id}/extensions`
    const saved = { assignment_id: assignment.id, student_id: 's1', due_at: LATER, close_at: null, granted_by: 't', created_at: '' }
    fake.on('GET', base, () => ({ status: 200, body: [] }))
      .on('PUT', `${base}/s1`, () => ({ status: 200, body: saved }))
      .on('DELETE', `${base}/s1`, () => ({ status: 204 }))
    const roster = [{ student_id: 's1', name: 'Ada', email: 'a@x', essay_count: 1, last_active_at: null, live: false }]
    const w = mount(ExtensionsPanel, { props: { classId: CLASS, assignment, roster }, attachTo: document.body })
    const details = w.get('details')
    ;(details.element as HTMLDetailsElement).open = true
    await details.trigger('toggle')
    await flushPromises()
    expect(fake.callsTo('GET', base)).toHaveLength(1)
    for (const id of ['extension-student', 'extension-due', 'extension-close']) {
      expect(w.find(`label[for="${w.get(`[data-testid="${id}"]`).attributes('id')}"]`).exists()).toBe(true)
    }
    await w.get('[data-testid="extension-student"]').setValue('s1')
    await w.get('[data-testid="extension-due"]').setValue(isoToLocalInput(LATER))
    await w.get('[data-testid="extension-close"]').setValue(isoToLocalInput(DUE)) // before the due: refused here
    await w.get('form').trigger('submit')
    await flushPromises()
    expect(w.get('[data-testid="extension-error"]').text()).toContain('cannot be before')
    expect(fake.callsTo('PUT', `${base}/s1`)).toHaveLength(0)
    await w.get('[data-testid="extension-close"]').setValue('')
    await w.get('form').trigger('submit')
    await flushPromises()
    expect(fake.callsTo('PUT', `${base}/s1`)[0].body).toEqual({ due_at: LATER, close_at: null })
    const row = w.get('[data-testid="extension-row"]')
    expect(row.text()).toContain('Ada')
    await w.get('[data-testid="extension-student"]').setValue('s1') // picking fills the form to change it
    expect((w.get('[data-testid="extension-due"]').element as HTMLInputElement).value).toBe(isoToLocalInput(LATER))
    await row.get('[data-testid="extension-withdraw"]').trigger('click')
    await flushPromises()
    expect(fake.callsTo('DELETE', `${base}/s1`)).toHaveLength(1)
    expect(w.findAll('[data-testid="extension-row"]')).toHaveLength(0)
    w.unmount()
  })

  /** The class screen of `user`, signed in, with these assignments (and nothing else in the class). */
  async function classScreen(user: { id: string; email: string; role: string }, items: Assignment[]) {
    fake.on('POST', '/auth/token', () => ({ status: 200, body: { access_token: 't', refresh_token: 'r', token_type: 'bearer', expires_in: 900 } }))
      .on('GET', '/me', () => ({ status: 200, body: { name: 'Someone', created_at: '', ...user } }))
      .on('GET', `/classes/${CLASS}`, () => ({ status: 200, body: { id: CLASS, name: 'English', join_code: 'X', teacher_id: 't', created_at: '' } }))
      .on('GET', `/classes/${CLASS}/assignments`, () => ({ status: 200, body: { items, next_cursor: null } }))
      .on('GET', '/essays', () => ({ status: 200, body: { items: [], next_cursor: null } }))
      .on('GET', `/classes/${CLASS}/students`, () => ({ status: 200, body: { items: [], next_cursor: null } }))
      .on('GET', '/rubrics', () => ({ status: 200, body: { items: [], next_cursor: null } }))
      .on('GET', `/classes/${CLASS}/teachers`, () => ({ status: 200, body: [] }))
    await useAuthStore().login(user.email, 'violet-Harbor-93!')
    const router = createRouter({ history: createMemoryHistory(), routes: [{ path: '/:p(.*)*', component: { template: '<p/>' } }] })
    const w = mount(ClassView, { props: { classId: CLASS }, global: { plugins: [router] } })
    await flushPromises()
    return w
  }

  it('a student sees their own due time with their extension', async () => {
    const w = await classScreen({ id: 's1', email: 'ada@example.com', role: 'student' },
      [{ ...assignment, effective_due_at: LATER, effective_close_at: LATER, extended: true }])
    expect(w.get('[data-testid="assignment-due"]').text()).toBe(`· Due ${formatDate(LATER)} (your extension)`)
    expect(w.find('[data-testid="extensions"]').exists()).toBe(false)
    w.unmount()
  })

  it("a teacher sees the class's due and close times and that late work is refused", async () => {
    const w = await classScreen({ id: 't', email: 'rivera@example.com', role: 'teacher' }, [
      // For a teacher the API's own times are the class's.
      { ...assignment, late_policy: 'reject', close_at: LATER, effective_due_at: DUE, effective_close_at: LATER, extended: false },
      { ...assignment, id: 'a0000000-2', due_at: null, effective_due_at: null }])
    expect(w.findAll('[data-testid="assignment-due"]').map((d) => d.text())).toEqual([
      `· Due ${formatDate(DUE)}, closes for writing ${formatDate(LATER)}, no late work`, '· no due date'])
    w.unmount()
  })
})

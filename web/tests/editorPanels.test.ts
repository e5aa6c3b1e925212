import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { nextTick } from 'vue'
import { mount } from '@vue/test-utils'
import { createPinia, setActivePinia } from 'pinia'
import FeedbackPanel from '../src/components/FeedbackPanel.vue'
import type { FeedbackItem } from '../src/api/types'
import EditorView from '../src/views/EditorView.vue'
import { FakeServer } from './fakes'

// The editor view's coach, revisions and scores are async components (chunks of their own): they
// still show, with their data, and work.
// Chunks are transformed on demand the first time they load: more than waitFor's default 1 s on a busy machine.
const wait = { timeout: 5000 }

describe('editor view: lazily loaded panels', () => {
  let fake: FakeServer
  beforeEach(() => {
    localStorage.clear()
    setActivePinia(createPinia()) // nobody signed in: the essay's sockets wait for a ticket, none opens
    fake = new FakeServer()
      .on('GET', '/essays/e1', () => ({ status: 200, body: { id: 'e1', title: 'Choice', assignment_id: null } }))
      .on('GET', '/essays/e1/coach', () => ({ status: 200, body: { items: [], next_cursor: null } }))
      .on('POST', '/essays/e1/coach', () => ({ status: 201, body: { id: 't1', essay_id: 'e1', student_id: 's1', about: 'essay',
        item_id: null, item_kind: null, item_message: null, quote: null, question: 'Is my thesis clear?', answer: 'Mostly.',
        source: 'local', flags: [], tokens: 0, created_at: '2026-12-07T12:00:00Z' } }))
      .on('GET', '/essays/e1/submissions', () => ({ status: 200, body: { items: [{ id: 's1' }], next_cursor: null } }))
      .on('GET', '/submissions/s1', () => ({ status: 200, body: { id: 's1', status: 'done', essay_id: 'e1', title: 'Choice',
        created_at: '', completed_at: '', feedback: { items: [] }, error: null,
        scores: [{ criterion_id: 'c1', criterion: 'Thesis', level: 'Good', points: 3, max_points: 4, rationale: 'Clear.', source: 'ai' }] } }))
      .on('GET', '/essays/e1/revisions', () => ({ status: 200, body: { items: [
        { n: 2, seq: 9, reason: 'idle', created_at: '2026-12-07T12:01:00Z', word_count: 3, text: 'Choice builds motivation', diff: '' },
        { n: 1, seq: 4, reason: 'idle', created_at: '2026-12-07T12:00:00Z', word_count: 2, text: 'Choice builds', diff: '' },
      ], next_cursor: null } }))
      .on('GET', '/essays/e1/replay', () => ({ status: 200, body: { items: [
        { seq: 4, at: '2026-12-07T12:00:00Z', inserted_chars: 13, deleted_chars: 0, update: '', text: 'Choice builds' },
        { seq: 9, at: '2026-12-07T12:01:00Z', inserted_chars: 11, deleted_chars: 0, update: '', text: 'Choice builds motivation' },
      ] } }))
    vi.stubGlobal('fetch', fake.fetch)
  })
  afterEach(() => {
    vi.unstubAllGlobals()
    document.body.innerHTML = ''
  })

  it('shows the coach, the scores of the latest submission and, on its tab, the revisions and replay', async () => {
    const w = mount(EditorView, { props: { essayId: 'e1' }, attachTo: document.body })
    // The coach loads after the view and works: a question goes to the server, the answer shows.
    await vi.waitFor(() => expect(w.find('[data-testid="coach-question"]').exists()).toBe(true), wait)
    await w.get('[data-testid="coach-question"]').setValue('Is my thesis clear?')
    await w.get('[data-testid="coach-ask"]').trigger('submit')
    await vi.waitFor(() => expect(w.find('[data-testid="coach-turn"]').exists()).toBe(true), wait)
    expect(fake.callsTo('POST', '/essays/e1/coach')).toHaveLength(1)
    expect(w.get('[data-testid="coach-turn"]').text()).toContain('Mostly.')
    // The latest submission's scores.
    await vi.waitFor(() => expect(w.find('[data-testid="score-row"]').exists()).toBe(true), wait)
    expect(w.get('[data-testid="submission-status"]').attributes('data-state')).toBe('done')
    // Revisions: not fetched until their tab opens, then listed with the replay slider.
    expect(fake.callsTo('GET', '/essays/e1/revisions?limit=100')).toHaveLength(0)
    await w.get('[data-testid="revisions-tab"]').trigger('click')
    await vi.waitFor(() => expect(w.findAll('[data-testid="revision-item"]')).toHaveLength(2), wait)
    await vi.waitFor(() => expect(w.find('[data-testid="replay-slider"]').exists()).toBe(true), wait)
    expect(fake.callsTo('GET', '/essays/e1/revisions?limit=100')).toHaveLength(1)
    w.unmount()
  })

  it('renders the coach a task after the view, not in the view\'s first render (its chunk request is not in that task)', async () => {
    const w = mount(EditorView, { props: { essayId: 'e1' }, attachTo: document.body })
    // The coach's panel is the one given the essay id (the revisions' too, but only on their tab).
    const coach = () => w.findAllComponents({ name: 'AsyncPanel' }).filter((p) => 'essay-id' in p.vm.$attrs || 'essayId' in p.vm.$attrs)
    await nextTick()
    expect(coach()).toHaveLength(0)
    await new Promise<void>((resolve) => setTimeout(resolve, 0))
    await nextTick()
    expect(coach()).toHaveLength(1)
    await vi.waitFor(() => expect(w.find('[data-testid="coach-question"]').exists()).toBe(true), wait)
    w.unmount()
  })

  it('Apply and Show in text wait for the editor (built a task after the view) instead of saying the text changed', async () => {
    const w = mount(EditorView, { props: { essayId: 'e1' }, attachTo: document.body })
    const panel = w.getComponent(FeedbackPanel)
    // Before CodeMirror exists: the buttons are disabled, and an Apply that still comes is ignored.
    expect(panel.props('textPending')).toBe(true)
    const item = { id: 'f1', kind: 'grammar', message: 'Agreement', quote: 'they was', suggestion: 'they were',
      start: 0, end: 8, source: 'rules' } as unknown as FeedbackItem
    panel.vm.$emit('apply', item)
    panel.vm.$emit('show', 'f1')
    await nextTick()
    expect(w.find('.error[role="alert"]').exists()).toBe(false)
    // Once it is built, they work (an unknown span is then really "changed").
    await vi.waitFor(() => expect(w.getComponent(FeedbackPanel).props('textPending')).toBe(false), wait)
    panel.vm.$emit('apply', item)
    await nextTick()
    expect(w.get('.error[role="alert"]').text()).toContain('That text changed')
    w.unmount()
  })

  it('the feedback panel disables Apply and Show in text while the text is pending', async () => {
    const item = { id: 'f1', kind: 'grammar', message: 'Agreement', quote: 'they was', suggestion: 'they were',
      start: 0, end: 8, source: 'rules' } as unknown as FeedbackItem
    const w = mount(FeedbackPanel, { props: { items: [item], comments: [], canApply: true, textPending: true } })
    expect(w.get('[data-testid="feedback-apply"]').attributes('disabled')).toBeDefined()
    expect(w.get('[data-testid="feedback-show"]').attributes('disabled')).toBeDefined()
    await w.setProps({ textPending: false })
    expect(w.get('[data-testid="feedback-apply"]').attributes('disabled')).toBeUndefined()
    expect(w.get('[data-testid="feedback-show"]').attributes('disabled')).toBeUndefined()
  })
})

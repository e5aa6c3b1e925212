import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { mount } from '@vue/test-utils'
import { createPinia, setActivePinia } from 'pinia'
import EditorView from '../src/views/EditorView.vue'
import { FakeServer } from './fakes'

// The editor view's coach, revisions and scores are async components (chunks of their own): they
// still show, with their data, and work.
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
    await vi.waitFor(() => expect(w.find('[data-testid="coach-question"]').exists()).toBe(true))
    await w.get('[data-testid="coach-question"]').setValue('Is my thesis clear?')
    await w.get('[data-testid="coach-ask"]').trigger('submit')
    await vi.waitFor(() => expect(w.find('[data-testid="coach-turn"]').exists()).toBe(true))
    expect(fake.callsTo('POST', '/essays/e1/coach')).toHaveLength(1)
    expect(w.get('[data-testid="coach-turn"]').text()).toContain('Mostly.')
    // The latest submission's scores.
    await vi.waitFor(() => expect(w.find('[data-testid="score-row"]').exists()).toBe(true))
    expect(w.get('[data-testid="submission-status"]').attributes('data-state')).toBe('done')
    // Revisions: not fetched until their tab opens, then listed with the replay slider.
    expect(fake.callsTo('GET', '/essays/e1/revisions?limit=100')).toHaveLength(0)
    await w.get('[data-testid="revisions-tab"]').trigger('click')
    await vi.waitFor(() => expect(w.findAll('[data-testid="revision-item"]')).toHaveLength(2))
    await vi.waitFor(() => expect(w.find('[data-testid="replay-slider"]').exists()).toBe(true))
    expect(fake.callsTo('GET', '/essays/e1/revisions?limit=100')).toHaveLength(1)
    w.unmount()
  })
})

import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { flushPromises, mount } from '@vue/test-utils'
import { createPinia, setActivePinia } from 'pinia'
import SubmissionView from '../src/views/SubmissionView.vue'
import ScoreList from '../src/components/ScoreList.vue'
import { useAuthStore } from '../src/stores/auth'
import type { Submission } from '../src/api/types'
import { FakeServer } from './fakes'

const score = (id: string, points: number, extra = {}) => ({ criterion_id: id, criterion: `C ${id}`, level: 'ok', points,
  max_points: 4, rationale: 'AI thinks so', source: 'llm' as const, estimate: false, ...extra })
const submission = (scores: ReturnType<typeof score>[]): Submission => ({ id: 's1', status: 'done', essay_id: 'e1', title: 'T',
  created_at: '', completed_at: '', feedback: { items: [] }, scores, error: null })

describe('submission review', () => {
  let fake: FakeServer
  beforeEach(() => {
    setActivePinia(createPinia())
    fake = new FakeServer()
    vi.stubGlobal('fetch', fake.fetch)
  })
  afterEach(() => vi.unstubAllGlobals())

  it('overrides only the scores the teacher changed', async () => {
    useAuthStore().user = { id: 't', email: 't@x.y', name: 'T', role: 'teacher', created_at: '' }
    fake.on('GET', '/submissions/s1', () => ({ status: 200, body: submission([score('a', 2), score('b', 3)]) }))
      .on('PUT', '/submissions/s1/scores', () => ({ status: 200,
        body: submission([score('a', 4, { source: 'teacher', ai_points: 2 }), score('b', 3)]) }))
    const w = mount(SubmissionView, { props: { submissionId: 's1' }, global: { stubs: { RouterLink: true } } })
    await flushPromises()
    const inputs = w.findAll('[data-testid="score-override-points"]')
    expect(inputs).toHaveLength(2)
    await inputs[0].setValue('4')
    await w.get('form').trigger('submit')
    await flushPromises()
    expect(fake.callsTo('PUT', '/submissions/s1/scores')[0].body).toEqual({ scores: [{ criterion_id: 'a', points: 4 }] })
    const rows = w.findAll('[data-testid="score-row"]')
    expect(rows.map((r) => r.attributes('data-source'))).toEqual(['teacher', 'llm'])
    w.unmount()
  })

  it('confirms every AI proposal when saved with nothing changed', async () => {
    useAuthStore().user = { id: 't', email: 't@x.y', name: 'T', role: 'teacher', created_at: '' }
    fake.on('GET', '/submissions/s1', () => ({ status: 200, body: submission([score('a', 2), score('b', 3)]) }))
      .on('PUT', '/submissions/s1/scores', () => ({ status: 200, body: submission([score('a', 2), score('b', 3)]) }))
    const w = mount(SubmissionView, { props: { submissionId: 's1' }, global: { stubs: { RouterLink: true } } })
    await flushPromises()
    await w.findAll('[data-testid="score-override-points"]')[0].setValue('2')
    await w.get('form').trigger('submit')
    await flushPromises()
    expect(fake.callsTo('PUT', '/submissions/s1/scores')[0].body).toEqual(
      { scores: [{ criterion_id: 'a', points: 2 }, { criterion_id: 'b', points: 3 }] })
    w.unmount()
  })

  it("shows the student a teacher's score as final, beside what the AI proposed", () => {
    const w = mount(ScoreList, { props: { submission: submission([score('a', 4, { source: 'teacher', ai_points: 2, rationale: '' })]) } })
    const row = w.get('[data-testid="score-row"]')
    expect(row.attributes('data-source')).toBe('teacher')
    expect(row.find('[data-testid="score-final"]').exists()).toBe(true)
    expect(row.text()).toContain('4 / 4')
    expect(row.text()).toContain('the AI had proposed 2')
  })
})

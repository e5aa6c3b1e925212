import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { flushPromises, mount } from '@vue/test-utils'
import CoachPanel from '../src/components/CoachPanel.vue'
import FeedbackPanel from '../src/components/FeedbackPanel.vue'
import type { CoachTurn, FeedbackItem } from '../src/api/types'
import { useCoach } from '../src/stores/coach'
import { FakeServer } from './fakes'

const HOSTILE = '<script>window.pwned=1</script><img src=x onerror="window.pwned=1"><a href="javascript:alert(1)">click</a>'
const ITEM: FeedbackItem = { id: 'f1', kind: 'spelling', message: 'Possible misspelling', suggestion: 'believe', quote: 'beleive', start: 2, end: 9 }

function turn(n: number, extra: Partial<CoachTurn> = {}): CoachTurn {
  return { id: `t${n}`, essay_id: 'e1', student_id: 's1', about: 'essay', item_id: null, item_kind: null, item_message: null,
    quote: null, question: `Question ${n}?`, answer: `Answer ${n}.`, source: 'local', flags: [], tokens: 0,
    created_at: '2026-12-06T05:00:00Z', ...extra }
}

describe('coach store', () => {
  let fake: FakeServer
  beforeEach(() => {
    fake = new FakeServer()
    vi.stubGlobal('fetch', fake.fetch)
  })
  afterEach(() => vi.unstubAllGlobals())

  it('loads every page of the history, oldest first', async () => {
    fake.on('GET', '/essays/e1/coach', (call) => call.path.includes('cursor=c1')
      ? { status: 200, body: { items: [turn(3)], next_cursor: null } }
      : { status: 200, body: { items: [turn(1), turn(2)], next_cursor: 'c1' } })
    const coach = useCoach('e1')
    await coach.load()
    expect(coach.turns.value.map((t) => t.id)).toEqual(['t1', 't2', 't3'])
    expect(fake.callsTo('GET', '/essays/e1/coach?limit=200&cursor=c1')).toHaveLength(1)
  })

  it('asks about an item with its id, about the rubric without one, and adds each answer', async () => {
    let n = 0
    fake.on('POST', '/essays/e1/coach', (call) => ({ status: 201, body: turn(++n, { question: (call.body as { question: string }).question }) }))
    const coach = useCoach('e1')
    expect(await coach.ask({ question: '  Why?  ', about: 'item', itemId: 'f1' })).not.toBeNull()
    await coach.ask({ question: 'What counts?', about: 'rubric', itemId: 'f1' })
    expect(await coach.ask({ question: '   ', about: 'essay' })).toBeNull()
    expect(fake.calls.filter((c) => c.method === 'POST').map((c) => c.body)).toEqual([
      { question: 'Why?', about: 'item', item_id: 'f1' }, { question: 'What counts?', about: 'rubric' }])
    expect(coach.turns.value.map((t) => t.question)).toEqual(['Why?', 'What counts?'])
  })

  it('says plainly when the day’s AI allowance is spent, and keeps the history', async () => {
    fake.on('POST', '/essays/e1/coach', () => ({ status: 429, body: { code: 'token_budget_exhausted', detail: "today's AI token budget is spent" } }))
    const coach = useCoach('e1')
    coach.turns.value = [turn(1)]
    expect(await coach.ask({ question: 'More?', about: 'essay' })).toBeNull()
    expect(coach.error.value).toBe('You have used today’s AI allowance. The coach is back tomorrow.')
    expect(coach.turns.value).toHaveLength(1)
    expect(coach.busy.value).toBe(false)
  })
})

describe('coach panel', () => {
  let fake: FakeServer
  beforeEach(() => {
    fake = new FakeServer()
    vi.stubGlobal('fetch', fake.fetch)
  })
  afterEach(() => vi.unstubAllGlobals())

  it('asks about the feedback item picked in the feedback panel and shows the answer', async () => {
    fake.on('GET', '/essays/e1/coach', () => ({ status: 200, body: { items: [], next_cursor: null } }))
      .on('POST', '/essays/e1/coach', () => ({ status: 201, body: turn(1, { about: 'item', item_id: 'f1', quote: 'beleive', question: 'Why?', answer: 'Check the i before e.' }) }))
    const feedback = mount(FeedbackPanel, { props: { items: [ITEM], comments: [], canAsk: true } })
    await feedback.get('[data-testid="feedback-ask"]').trigger('click')
    const focus = feedback.emitted('ask')?.[0]?.[0] as FeedbackItem
    expect(focus).toEqual(ITEM)
    const w = mount(CoachPanel, { props: { essayId: 'e1', focus } })
    await flushPromises()
    expect(w.get('[data-testid="coach-focus"]').text()).toContain('beleive')
    expect((w.get('[data-testid="coach-about-item"]').element as HTMLInputElement).checked).toBe(true)
    await w.get('[data-testid="coach-question"]').setValue('Why?')
    await w.get('form').trigger('submit')
    await flushPromises()
    expect(fake.callsTo('POST', '/essays/e1/coach')[0].body).toEqual({ question: 'Why?', about: 'item', item_id: 'f1' })
    expect(w.get('[data-testid="coach-turn-answer"]').text()).toBe('Check the i before e.')
    expect((w.get('[data-testid="coach-question"]').element as HTMLTextAreaElement).value).toBe('')
  })

  it('without a picked item asks about the essay; the item choice is off', async () => {
    fake.on('GET', '/essays/e1/coach', () => ({ status: 200, body: { items: [], next_cursor: null } }))
    const w = mount(CoachPanel, { props: { essayId: 'e1', focus: null } })
    await flushPromises()
    expect((w.get('[data-testid="coach-about-item"]').element as HTMLInputElement).disabled).toBe(true)
    expect((w.get('[data-testid="coach-about-essay"]').element as HTMLInputElement).checked).toBe(true)
    expect(w.get('[data-testid="coach-ask"]').attributes('disabled')).toBeDefined()
  })

  it('shows the teacher the history read-only, hostile text as text', async () => {
    fake.on('GET', '/essays/e1/coach', () => ({ status: 200, body: { items: [
      turn(1, { question: HOSTILE, answer: HOSTILE, quote: HOSTILE, about: 'item' }),
      turn(2, { flags: ['withheld_prose'] })], next_cursor: null } }))
    const w = mount(CoachPanel, { props: { essayId: 'e1', readOnly: true } })
    await flushPromises()
    expect(w.find('form').exists()).toBe(false)
    const rows = w.findAll('[data-testid="coach-turn"]')
    expect(rows).toHaveLength(2)
    expect(rows[0].get('[data-testid="coach-turn-answer"]').text()).toBe(HOSTILE)
    expect(rows[0].get('[data-testid="coach-turn-question"]').text()).toBe(HOSTILE)
    expect(w.element.querySelector('script, img, a[href^="javascript"]')).toBeNull()
    expect(rows[1].find('[data-testid="coach-turn-flag"]').exists()).toBe(true)
    expect(fake.calls.filter((c) => c.method === 'POST')).toHaveLength(0)
  })
})

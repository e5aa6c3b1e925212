import { describe, expect, it } from 'vitest'
import type { Comment, FeedbackItem } from '../src/api/types'
import { EssayEventState, type EssayEvent } from '../src/realtime/essayEvents'

function harness() {
  const seen = { items: [] as FeedbackItem[], comments: [] as Comment[], refetches: 0, submissions: [] as EssayEvent[] }
  const state = new EssayEventState({
    feedback: (items) => { seen.items = items },
    comment: (c) => { seen.comments.push(c) },
    submission: (e) => { seen.submissions.push(e) },
    refetch: () => { seen.refetches += 1 },
  })
  return { state, seen, send: (e: object) => state.handle(JSON.stringify({ essay_id: 'e1', ...e })) }
}
const fb = (id: string, start: number): FeedbackItem => ({ id, kind: 'spelling', message: 'm', quote: 'q', start, end: start + 1 })

describe('events socket state', () => {
  it('applies feedback diffs in seq order and resumes from the last seq and epoch', () => {
    const { state, seen, send } = harness()
    expect(JSON.parse(state.resumeMessage())).toEqual({ type: 'resume', last_seq: 0 })
    send({ type: 'presence', seq: 3, epoch: 'A' })
    expect(seen.refetches).toBe(1)
    send({ type: 'feedback', seq: 4, epoch: 'A', items: [fb('a', 5), fb('b', 1)], removed: [] })
    send({ type: 'feedback', seq: 5, epoch: 'A', items: [], removed: ['a'] })
    expect(seen.items.map((i) => i.id)).toEqual(['b'])
    send({ type: 'feedback', seq: 5, epoch: 'A', items: [fb('x', 0)], removed: [] }) // a repeat: ignored
    expect(seen.items.map((i) => i.id)).toEqual(['b'])
    expect(JSON.parse(state.resumeMessage())).toEqual({ type: 'resume', last_seq: 5, epoch: 'A' })
  })

  it('replaces the set on a full event even for a seq already seen', () => {
    const { seen, send } = harness()
    send({ type: 'presence', seq: 1, epoch: 'A' })
    send({ type: 'feedback', seq: 2, epoch: 'A', items: [fb('a', 0)], removed: [] })
    send({ type: 'feedback', seq: 2, epoch: 'A', full: true, items: [fb('c', 3)] })
    expect(seen.items.map((i) => i.id)).toEqual(['c'])
  })

  it('refetches over REST on a gap, a new epoch or a resync', () => {
    const { seen, send } = harness()
    send({ type: 'presence', seq: 1, epoch: 'A' })
    send({ type: 'feedback', seq: 4, epoch: 'A', items: [fb('a', 0)], removed: [] })
    expect(seen.refetches).toBe(2)
    send({ type: 'comment', seq: 1, epoch: 'B', comment: { id: 'c1' } })
    expect(seen.refetches).toBe(3)
    send({ type: 'resync', seq: 9, epoch: 'B' })
    expect(seen.refetches).toBe(4)
  })

  it('passes submission events through even from the backlog of a first connection', () => {
    const { seen, send } = harness()
    send({ type: 'presence', seq: 10, epoch: 'A' })
    send({ type: 'submission', seq: 4, epoch: 'A', submission_id: 's1', status: 'queued' })
    expect(seen.submissions.map((e) => e.submission_id)).toEqual(['s1'])
  })
})

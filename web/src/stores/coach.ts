/** The coach chat of one essay: its history (oldest first) and, for its author, asking. */
import { ref, shallowRef } from 'vue'
import { ApiError, api } from '../api/http'
import type { CoachAbout, CoachTurn, Page } from '../api/types'
import { errorText } from '../lib/format'

export const MAX_QUESTION_CHARS = 1000

/** What the student reads when the coach says no: the server's detail, put plainly for the codes they can act on. */
export function coachErrorText(err: unknown): string {
  if (err instanceof ApiError) {
    if (err.code === 'token_budget_exhausted') return 'You have used today’s AI allowance. The coach is back tomorrow.'
    if (err.code === 'rate_limited') return 'That is a lot of questions for one hour. Try again a little later.'
    if (err.code === 'feedback_item_gone') return 'That feedback changed while you typed. Pick it again from the feedback list.'
    if (err.code === 'coach_unavailable') return 'The coach cannot answer right now. Try again in a minute.'
  }
  return errorText(err)
}

export interface Question { question: string; about: CoachAbout; itemId?: string | null }

export function useCoach(essayId: string) {
  const turns = shallowRef<CoachTurn[]>([])
  const busy = ref(false)
  const error = ref('')

  /** Every page of the history (a chat is short; a teacher reads it whole). */
  async function load(): Promise<void> {
    error.value = ''
    try {
      const all: CoachTurn[] = []
      let cursor: string | null = null
      do {
        const query: string = cursor ? `?limit=200&cursor=${encodeURIComponent(cursor)}` : '?limit=200'
        const page: Page<CoachTurn> = await api<Page<CoachTurn>>('GET', `/essays/${essayId}/coach${query}`)
        all.push(...page.items)
        cursor = page.next_cursor
      } while (cursor)
      turns.value = all
    } catch (err) {
      error.value = coachErrorText(err)
    }
  }

  /** Ask; the answer is added to the history. Resolves with it, or null (the reason is in `error`). */
  async function ask(q: Question): Promise<CoachTurn | null> {
    const question = q.question.trim()
    if (!question || busy.value) return null
    busy.value = true
    error.value = ''
    try {
      const body: Record<string, string> = { question: question.slice(0, MAX_QUESTION_CHARS), about: q.about }
      if (q.about === 'item' && q.itemId) body.item_id = q.itemId
      const turn = await api<CoachTurn>('POST', `/essays/${essayId}/coach`, body)
      turns.value = [...turns.value, turn]
      return turn
    } catch (err) {
      error.value = coachErrorText(err)
      return null
    } finally {
      busy.value = false
    }
  }

  return { turns, busy, error, load, ask }
}

/** Deadline wording shared by the live card, the assignment list and the editor (plain text). */
import type { Assignment, DeadlineStatus } from '../api/types'
import { formatDate } from './format'

export interface DeadlineFields {
  deadline_status?: DeadlineStatus | null
  due_at?: string | null
  close_at?: string | null
  extended?: boolean
}

const STATUS: Record<DeadlineStatus, string> = { on_time: 'on time', late: 'late', closed: 'closed' }

/** "on time", "late · extended until 8 Dec 2026, 17:00", "closed", or '' when there is no deadline. */
export function deadlineLabel(d: DeadlineFields): string {
  if (!d.deadline_status) return ''
  const status = STATUS[d.deadline_status] ?? d.deadline_status
  if (d.extended && d.due_at && d.deadline_status !== 'closed') return `${status} · extended until ${formatDate(d.due_at)}`
  return status
}

/** What the editor says when a `deadline` event arrives. */
export function deadlineNotice(event: object): string {
  const d = event as DeadlineFields
  const due = d.due_at ? `due ${formatDate(d.due_at)}` : 'no due date'
  const close = d.close_at && d.close_at !== d.due_at ? `, closes for writing ${formatDate(d.close_at)}` : ''
  const now = d.deadline_status === 'closed' ? ' It is closed for writing now.' : ''
  return d.extended ? `Your teacher gave you an extension: ${due}${close}.${now}`
    : `Your extension was withdrawn: ${due}${close}.${now}`
}

/**
 * The caller's own times for an assignment ('' when it has none): "Due …, closes for writing …" (a
 * student's with their extension applied, a teacher's the class's: the API's `effective_*`).
 */
export function dueLine(a: Assignment): string {
  const due = a.effective_due_at ?? a.due_at
  const close = a.effective_close_at ?? a.close_at ?? null
  const parts = due ? [`Due ${formatDate(due)}${a.extended ? ' (your extension)' : ''}`] : []
  if (close && close !== due) parts.push(`closes for writing ${formatDate(close)}`)
  return parts.join(', ')
}

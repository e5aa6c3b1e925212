/** Shapes of the REST API (DESIGN.md "Shapes"), only the fields the app reads. */

export type Role = 'student' | 'teacher' | 'admin'

export interface User { id: string; email: string; name: string; role: Role; created_at: string }
export interface TokenPair { access_token: string; refresh_token: string; token_type: 'bearer'; expires_in: number }
export interface Page<T> { items: T[]; next_cursor: string | null }
export interface ClassRoom {
  id: string; name: string; join_code: string; teacher_id: string; created_at: string; archived_at?: string | null
}
/** GET /classes/{id}/teachers: the owner and the co-teachers. */
export interface ClassTeacher { teacher_id: string; name: string; email: string; owner: boolean }
export interface RosterRow {
  student_id: string; name: string; email: string; essay_count: number; last_active_at: string | null; live: boolean
}
export interface Level { min_score: number; max_score: number; descriptor: string }
export interface Criterion { id?: string; name: string; description?: string | null; weight: number; levels: Level[] }
export interface Rubric { id: string; title: string; criteria: Criterion[]; created_at?: string }
export interface Assignment {
  id: string; class_id: string; title: string; prompt: string; rubric_id: string | null; due_at: string | null
  created_at: string; late_policy?: 'accept' | 'flag' | 'reject'; close_at?: string | null
  /** The caller's own times: a student's extension applied (a teacher: the assignment's). */
  effective_due_at?: string | null; effective_close_at?: string | null; extended?: boolean
}
export type DeadlineStatus = 'on_time' | 'late' | 'closed'
/** PUT /classes/{id}/assignments/{aid}/extensions/{student_id} */
export interface Extension {
  assignment_id: string; student_id: string; due_at: string; close_at: string | null; granted_by: string | null
  created_at: string
}
export interface EssaySummary {
  id: string; owner_id: string; assignment_id: string | null; class_id: string | null; title: string
  word_count: number; seq: number; updated_at: string; submitted_at: string | null
}
export interface Essay extends EssaySummary { text: string }

export type FeedbackKind = 'spelling' | 'grammar' | 'style' | 'structure' | 'rubric' | 'comment'
export interface FeedbackItem {
  id: string; kind: FeedbackKind | string; source?: string; severity?: string; message: string
  suggestion?: string | null; quote: string; start: number; end: number; anchor?: string | null
}
export interface Comment {
  id: string; essay_id: string; author_id: string; body: string; quote: string
  start: number | null; end: number | null; created_at: string
}
export interface Score {
  criterion_id: string; criterion: string; level: string; points: number; max_points: number; rationale: string
  source: 'local' | 'llm' | 'teacher'; estimate: boolean; final?: boolean; ai_points?: number | null
}
export interface Submission {
  id: string; status: 'queued' | 'running' | 'done' | 'failed'; essay_id: string | null; title: string
  created_at: string; completed_at: string | null; feedback: { items: FeedbackItem[] }; scores: Score[]
  error: string | null; late?: boolean
}
export interface Revision { n: number; seq: number; reason: string; created_at: string; word_count: number; text: string; diff: string }
export interface ReplayStep { seq: number; at: string; inserted_chars: number; deleted_chars: number; update: string; text?: string }
export interface LiveRow {
  type: 'student'; student_id: string; essay_id: string | null; name: string; title: string | null
  word_count: number; last_active_at: string | null; excerpt: string; feedback_counts: Record<string, number>
  flags: string[]; typing_seconds: number
  // Added by the Gateway from the assignment and the student's extension (null: no assignment).
  deadline_status?: DeadlineStatus | null; due_at?: string | null; close_at?: string | null; extended?: boolean
}
/** `{type: "student_removed"}` on the live socket: the student left the class. */
export interface StudentRemoved { type: 'student_removed'; class_id: string; student_id: string }
/** GET /admin/users */
export interface AdminUser { id: string; email: string; name: string; role: Role; created_at: string; suspended_at: string | null }
/** GET /admin/audit */
export interface AuditEvent {
  id: number; actor_id: string | null; actor_name?: string | null; actor_email?: string | null
  action: string; target_type: string; target_id: string
  details: Record<string, unknown>; created_at: string
}
/** One question and answer of the coach chat on an essay (GET/POST /essays/{id}/coach). */
export type CoachAbout = 'item' | 'rubric' | 'essay'
export interface CoachTurn {
  id: string; essay_id: string; student_id: string; about: CoachAbout; item_id: string | null
  item_kind: string | null; item_message: string | null; quote: string | null; question: string
  answer: string; source: 'local' | 'llm'; flags: string[]; tokens: number; created_at: string
}

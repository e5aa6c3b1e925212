/** Administration (role admin; `serve_app/api/admin.py`, `privacy.py`). */
import { api } from './http'
import type { AdminUser, AuditEvent, Page, Role } from './types'

export const PAGE_SIZE = 20

function query(params: Record<string, string | null | undefined>): string {
  const q = new URLSearchParams()
  for (const [k, v] of Object.entries(params)) if (v) q.set(k, v)
  return q.toString()
}

export const searchUsers = (q: string, role: Role | '', cursor: string | null) =>
  api<Page<AdminUser>>('GET', `/admin/users?${query({ q: q.trim(), role, cursor, limit: String(PAGE_SIZE) })}`)

const user = (id: string) => `/admin/users/${encodeURIComponent(id)}`
export const suspendUser = (id: string) => api<AdminUser>('POST', `${user(id)}/suspend`)
export const reactivateUser = (id: string) => api<AdminUser>('POST', `${user(id)}/reactivate`)
export const changeRole = (id: string, role: Role) => api<AdminUser>('PATCH', user(id), { role })
/** Delete a student and everything of theirs (essays, logs, usage). */
export const deleteUser = (id: string) => api<unknown>('DELETE', user(id))

export const auditLog = (action: string, actor: string, cursor: string | null) =>
  api<Page<AuditEvent>>('GET', `/admin/audit?${query({ action: action.trim(), actor: actor.trim(), cursor, limit: String(PAGE_SIZE) })}`)

/** Every action the audit log records (README "Admin"), for the filter. */
export const AUDIT_ACTIONS = [
  'user.suspend', 'user.reactivate', 'user.role', 'user.delete', 'score.override', 'extension.set',
  'extension.remove', 'roster.remove', 'class.archive', 'class.unarchive', 'class.rotate_join_code',
  'class.add_teacher', 'class.remove_teacher', 'assignment.update',
] as const

/** An event's details as one line of text (never markup): `key: value` pairs. */
export function detailsText(details: Record<string, unknown>): string {
  return Object.entries(details).map(([k, v]) => `${k}: ${typeof v === 'string' ? v : JSON.stringify(v)}`).join('; ')
}

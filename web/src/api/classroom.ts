/** Roster control, co-teachers and extensions (REST, `serve_app/api/roster.py`, `extensions.py`). */
import { api } from './http'
import type { ClassRoom, ClassTeacher, Extension } from './types'

const cls = (id: string) => `/classes/${encodeURIComponent(id)}`

/** The student leaves the class (their essays in it become private; their sockets close 4404). */
export const removeStudent = (classId: string, studentId: string) =>
  api<void>('DELETE', `${cls(classId)}/students/${encodeURIComponent(studentId)}`)

/** A new join code; the old one stops working. */
export const rotateJoinCode = (classId: string) => api<ClassRoom>('POST', `${cls(classId)}/join-code`)

export const setArchived = (classId: string, archived: boolean) =>
  api<ClassRoom>('POST', `${cls(classId)}/${archived ? 'archive' : 'unarchive'}`)

export const listTeachers = (classId: string) => api<ClassTeacher[]>('GET', `${cls(classId)}/teachers`)

/** The API takes the co-teacher's account id (shown on their Account page). */
export const addTeacher = (classId: string, teacherId: string) =>
  api<ClassTeacher[]>('POST', `${cls(classId)}/teachers`, { teacher_id: teacherId.trim() })

export const removeTeacher = (classId: string, teacherId: string) =>
  api<void>('DELETE', `${cls(classId)}/teachers/${encodeURIComponent(teacherId)}`)

const extensionPath = (classId: string, assignmentId: string, studentId: string) =>
  `${cls(classId)}/assignments/${encodeURIComponent(assignmentId)}/extensions/${encodeURIComponent(studentId)}`

export const listExtensions = (classId: string, assignmentId: string) =>
  api<Extension[]>('GET', `${cls(classId)}/assignments/${encodeURIComponent(assignmentId)}/extensions`)

export const putExtension = (classId: string, assignmentId: string, studentId: string,
  dueAt: string, closeAt: string | null) =>
  api<Extension>('PUT', extensionPath(classId, assignmentId, studentId), { due_at: dueAt, close_at: closeAt })

export const deleteExtension = (classId: string, assignmentId: string, studentId: string) =>
  api<void>('DELETE', extensionPath(classId, assignmentId, studentId))

/** A UUID as the API takes it (a pasted id with spaces or braces is refused here, not with a 422). */
export function isUuid(value: string): boolean {
  return /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(value.trim())
}

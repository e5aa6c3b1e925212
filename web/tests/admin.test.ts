import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { flushPromises, mount } from '@vue/test-utils'
import AdminUsers from '../src/components/admin/AdminUsers.vue'
import AuditLog from '../src/components/admin/AuditLog.vue'
import AppNav from '../src/components/AppNav.vue'
import { detailsText } from '../src/api/admin'
import type { AdminUser } from '../src/api/types'
import { makeRouter } from '../src/router'
import { useAuthStore } from '../src/stores/auth'
import { usePager } from '../src/stores/pager'
import { FakeServer, freshServer } from './fakes'

const HOSTILE = '<img src=x onerror="window.pwned=1">'
const ADMIN = { id: 'admin-1', email: 'root@example.com', name: 'Root', role: 'admin', created_at: '' }
const person = (i: number, extra: Partial<AdminUser> = {}): AdminUser => ({
  id: `u${i}`, email: `u${i}@example.com`, name: `User ${i}`, role: 'student', created_at: '', suspended_at: null, ...extra })

describe('usePager', () => {
  it('goes forward by cursor and back through the cursors it has seen', async () => {
    const seen: (string | null)[] = []
    const pages: Record<string, { items: number[]; next_cursor: string | null }> = {
      first: { items: [1, 2], next_cursor: 'c2' }, c2: { items: [3, 4], next_cursor: 'c3' }, c3: { items: [5], next_cursor: null } }
    const pager = usePager<number>(async (cursor) => { seen.push(cursor); return pages[cursor ?? 'first'] })
    await pager.reset()
    expect([pager.items.value, pager.page.value, pager.hasPrev.value, pager.hasNext.value]).toEqual([[1, 2], 1, false, true])
    await pager.next()
    await pager.next()
    expect([pager.items.value, pager.page.value, pager.hasNext.value]).toEqual([[5], 3, false])
    await pager.next() // nothing further
    await pager.prev()
    expect([pager.items.value, pager.page.value]).toEqual([[3, 4], 2])
    await pager.reset()
    expect([pager.items.value, pager.page.value, pager.hasPrev.value]).toEqual([[1, 2], 1, false])
    expect(seen).toEqual([null, 'c2', 'c3', 'c2', null])
  })

  it('keeps the newest request when an older one answers late', async () => {
    const answers: ((p: { items: string[]; next_cursor: null }) => void)[] = []
    const pager = usePager<string>(() => new Promise((resolve) => answers.push(resolve)))
    const first = pager.reset()
    const second = pager.reset()
    answers[1]({ items: ['new'], next_cursor: null })
    answers[0]({ items: ['old'], next_cursor: null })
    await Promise.all([first, second])
    expect(pager.items.value).toEqual(['new'])
  })
})

describe('admin screens', () => {
  let fake: FakeServer
  beforeEach(async () => {
    fake = freshServer()
      .on('POST', '/auth/token', () => ({ status: 200, body: { access_token: 'tok', refresh_token: 'r', token_type: 'bearer', expires_in: 900 } }))
      .on('GET', '/me', () => ({ status: 200, body: ADMIN }))
  })
  afterEach(() => vi.unstubAllGlobals())

  it('the router and the nav keep /admin to admins', async () => {
    const auth = useAuthStore()
    fake.on('GET', '/me', () => ({ status: 200, body: { ...ADMIN, role: 'teacher' } }))
    await auth.login('t@example.com', 'violet-Harbor-93!')
    const router = makeRouter()
    await router.push('/admin')
    expect(router.currentRoute.value.path).toBe('/classes')
    const nav = mount(AppNav, { global: { plugins: [router] } })
    expect(nav.find('[data-testid="nav-admin"]').exists()).toBe(false)
    fake.on('GET', '/me', () => ({ status: 200, body: ADMIN }))
    await auth.login(ADMIN.email, 'violet-Harbor-93!')
    await router.push('/admin')
    expect(router.currentRoute.value.path).toBe('/admin')
    await flushPromises()
    expect(nav.find('[data-testid="nav-admin"]').exists()).toBe(true)
  })

  it('searches, pages, suspends after confirming, and deletes a student only once their email is typed', async () => {
    await useAuthStore().login(ADMIN.email, 'violet-Harbor-93!')
    const target = person(1, { name: HOSTILE })
    fake.on('GET', '/admin/users', (call) => ({ status: 200, body: call.path.includes('cursor=')
      ? { items: [person(3)], next_cursor: null } : { items: [target, person(2), { ...ADMIN, suspended_at: null } as AdminUser], next_cursor: 'p2' } }))
      .on('POST', '/admin/users/u1/suspend', () => ({ status: 200, body: { ...target, suspended_at: '2026-12-06T19:00:00Z' } }))
      .on('DELETE', '/admin/users/u2', () => ({ status: 200, body: {} }))
    const w = mount(AdminUsers, { attachTo: document.body })
    await flushPromises()
    await w.get('[data-testid="admin-search"]').setValue('  ann ')
    await w.get('[data-testid="admin-role-filter"]').setValue('student')
    await w.get('form').trigger('submit')
    await flushPromises()
    expect(fake.calls.at(-1)!.path).toBe('/admin/users?q=ann&role=student&limit=20')
    expect(w.find('img').exists()).toBe(false)
    const own = w.get('[data-user-id="admin-1"]')
    expect(own.find('[data-testid="admin-suspend"]').exists()).toBe(false) // never yourself
    expect((own.get('[data-testid="admin-user-role"]').element as HTMLSelectElement).disabled).toBe(true)

    await w.get('[data-user-id="u1"] [data-testid="admin-suspend"]').trigger('click')
    await flushPromises()
    expect(fake.callsTo('POST', '/admin/users/u1/suspend')).toHaveLength(0)
    await w.get('dialog form').trigger('submit')
    await flushPromises()
    expect(fake.callsTo('POST', '/admin/users/u1/suspend')).toHaveLength(1)
    expect(w.get('[data-user-id="u1"]').attributes('data-suspended')).toBe('true')
    expect(w.emitted('changed')).toHaveLength(1)

    await w.get('[data-user-id="u2"] [data-testid="admin-delete"]').trigger('click')
    await flushPromises()
    await w.get('[data-testid="confirm-typed"]').setValue('u1@example.com')
    await w.get('dialog form').trigger('submit')
    expect(fake.callsTo('DELETE', '/admin/users/u2')).toHaveLength(0)
    await w.get('[data-testid="confirm-typed"]').setValue('u2@example.com')
    await w.get('dialog form').trigger('submit')
    await flushPromises()
    expect(fake.callsTo('DELETE', '/admin/users/u2')).toHaveLength(1)

    await w.get('[data-testid="admin-users-next"]').trigger('click')
    await flushPromises()
    expect(fake.calls.at(-1)!.path).toContain('cursor=p2')
    expect(w.findAll('[data-testid="admin-user-row"]').map((r) => r.attributes('data-user-id'))).toEqual(['u3'])
    w.unmount()
  })

  it('changes a role only after confirming, and shows the old one on cancel', async () => {
    await useAuthStore().login(ADMIN.email, 'violet-Harbor-93!')
    fake.on('GET', '/admin/users', () => ({ status: 200, body: { items: [person(1)], next_cursor: null } }))
      .on('PATCH', '/admin/users/u1', () => ({ status: 200, body: person(1, { role: 'teacher' }) }))
    const w = mount(AdminUsers, { attachTo: document.body })
    await flushPromises()
    const select = w.get('[data-testid="admin-user-role"]')
    await select.setValue('teacher')
    expect((select.element as HTMLSelectElement).value).toBe('student')
    await w.get('[data-testid="confirm-cancel"]').trigger('click')
    expect(fake.callsTo('PATCH', '/admin/users/u1')).toHaveLength(0)
    await select.setValue('teacher')
    await w.get('dialog form').trigger('submit')
    await flushPromises()
    expect(fake.callsTo('PATCH', '/admin/users/u1')[0].body).toEqual({ role: 'teacher' })
    expect((w.get('[data-testid="admin-user-role"]').element as HTMLSelectElement).value).toBe('teacher')
    w.unmount()
  })

  it('shows the audit log as text, filtered by action', async () => {
    await useAuthStore().login(ADMIN.email, 'violet-Harbor-93!')
    fake.on('GET', '/admin/audit', () => ({ status: 200, body: { items: [{ id: 1, actor_id: 'admin-1', actor_name: HOSTILE, actor_email: 'root@example.com', action: 'user.suspend',
      target_type: 'user', target_id: 'u1', details: { note: HOSTILE, revoked_refresh_tokens: 2 }, created_at: '2026-12-06T19:00:00Z' }], next_cursor: null } }))
    const w = mount(AuditLog)
    await flushPromises()
    await w.get('[data-testid="audit-action"]').setValue('user.suspend')
    await w.get('[data-testid="audit-action"]').trigger('change')
    await flushPromises()
    expect(fake.calls.at(-1)!.path).toBe('/admin/audit?action=user.suspend&limit=20')
    const row = w.get('[data-testid="audit-row"]')
    expect(row.text()).toContain(`note: ${HOSTILE}; revoked_refresh_tokens: 2`)
    expect(row.get('[data-testid="audit-actor-cell"]').text()).toContain(`${HOSTILE} root@example.com`)
    expect(w.find('img').exists()).toBe(false)
    expect(detailsText({})).toBe('')
  })
})

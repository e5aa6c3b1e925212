import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { flushPromises, mount } from '@vue/test-utils'
import { createMemoryHistory, createRouter } from 'vue-router'
import ConfirmDialog from '../src/components/ConfirmDialog.vue'
import ClassView from '../src/views/ClassView.vue'
import { isUuid } from '../src/api/classroom'
import { useConfirm } from '../src/lib/confirm'
import { useAuthStore } from '../src/stores/auth'
import { FakeServer, freshServer } from './fakes'

const HOSTILE = '<img src=x onerror="window.pwned=1">'
const CLASS = 'c0000000-0000-4000-8000-000000000001'
const TEACHER = { id: 't0000000-0000-4000-8000-000000000001', email: 'rivera@example.com', name: 'Ms Rivera', role: 'teacher', created_at: '' }
const CO = 'd0000000-0000-4000-8000-000000000002'
const room = { id: CLASS, name: 'English 9', join_code: 'ABCD2345', teacher_id: TEACHER.id, created_at: '', archived_at: null }
const students = [
  { student_id: 's1', name: HOSTILE, email: 'sam@example.com', essay_count: 1, last_active_at: null, live: false },
  { student_id: 's2', name: 'Lee', email: 'lee@example.com', essay_count: 0, last_active_at: null, live: false },
]

describe('useConfirm', () => {
  it('runs the action only on confirm and closes on success', async () => {
    const c = useConfirm()
    const run = vi.fn(async () => undefined)
    c.ask({ title: 'Remove?', message: 'Sure?' }, run)
    expect(c.state.open).toBe(true)
    expect(run).not.toHaveBeenCalled()
    expect(await c.confirm()).toBe(true)
    expect(run).toHaveBeenCalledOnce()
    expect(c.state.open).toBe(false)
  })

  it('keeps the dialog open with the error when the action fails, and cancel drops the action', async () => {
    const c = useConfirm()
    c.ask({ title: 't', message: 'm' }, async () => { throw new Error('no such student in this class') })
    expect(await c.confirm()).toBe(false)
    expect(c.state.open).toBe(true)
    expect(c.state.error).toBe('no such student in this class')
    c.cancel()
    expect(c.state.open).toBe(false)
    expect(await c.confirm()).toBe(false)
  })

  it('is busy while the action runs: a second confirm and cancel do nothing until it ends', async () => {
    const c = useConfirm()
    let finish = () => {}
    const run = vi.fn(() => new Promise<void>((resolve) => { finish = resolve }))
    c.ask({ title: 't', message: 'm' }, run)
    const first = c.confirm()
    expect(c.state.busy).toBe(true)
    expect(await c.confirm()).toBe(false)
    c.cancel()
    expect(c.state.open).toBe(true)
    finish()
    expect(await first).toBe(true)
    expect(c.state).toMatchObject({ busy: false, open: false, error: '' })
    expect(run).toHaveBeenCalledOnce()
  })
})

describe('ConfirmDialog', () => {
  it('is labelled, focuses cancel first, and confirms only once the required text is typed', async () => {
    const w = mount(ConfirmDialog, { props: { open: false, title: HOSTILE, message: 'Delete?', requireText: 'sam@example.com', confirmLabel: 'Delete' }, attachTo: document.body })
    await w.setProps({ open: true })
    await flushPromises()
    const dialog = w.get('dialog')
    expect(dialog.attributes('aria-labelledby')).toBeTruthy()
    expect(w.get(`#${dialog.attributes('aria-labelledby')}`).text()).toBe(HOSTILE) // text, not markup
    expect(w.find('img').exists()).toBe(false)
    expect(document.activeElement).toBe(w.get('[data-testid="confirm-cancel"]').element)
    const ok = w.get('[data-testid="confirm-ok"]')
    expect((ok.element as HTMLButtonElement).disabled).toBe(true)
    const typed = w.get('[data-testid="confirm-typed"]')
    expect(w.find(`label[for="${typed.attributes('id')}"]`).exists()).toBe(true)
    await typed.setValue('sam@example.co')
    await w.get('form').trigger('submit')
    expect(w.emitted('confirm')).toBeUndefined()
    await typed.setValue('sam@example.com')
    expect((ok.element as HTMLButtonElement).disabled).toBe(false)
    await w.get('form').trigger('submit')
    expect(w.emitted('confirm')).toHaveLength(1)
    await w.get('dialog').trigger('cancel')
    expect(w.emitted('cancel')).toHaveLength(1)
    w.unmount()
  })
})

describe('ConfirmDialog mounted open', () => {
  it('opens at once', async () => {
    const w = mount(ConfirmDialog, { props: { open: true, title: 't', message: 'm' }, attachTo: document.body })
    await flushPromises()
    expect((w.get('dialog').element as HTMLDialogElement).open).toBe(true)
    w.unmount()
  })
})

describe('isUuid', () => {
  it('accepts an account id with surrounding spaces and refuses anything else', () => {
    expect(isUuid(` ${CO} `)).toBe(true)
    expect(isUuid('rivera@example.com')).toBe(false)
    expect(isUuid(`{${CO}}`)).toBe(false)
  })
})

/** The open dialog of the page (each panel has its own). */
function openDialog(w: ReturnType<typeof mount>) {
  const found = w.findAll('[data-testid="confirm-dialog"]').find((d) => (d.element as HTMLDialogElement).open)
  if (!found) throw new Error('no open dialog')
  return found
}

describe('teacher class screen: roster control', () => {
  let fake: FakeServer
  beforeEach(async () => {
    fake = freshServer()
      .on('POST', '/auth/token', () => ({ status: 200, body: { access_token: 'tok', refresh_token: 'r', token_type: 'bearer', expires_in: 900 } }))
      .on('GET', '/me', () => ({ status: 200, body: TEACHER }))
      .on('GET', `/classes/${CLASS}`, () => ({ status: 200, body: room }))
      .on('GET', `/classes/${CLASS}/assignments`, () => ({ status: 200, body: { items: [], next_cursor: null } }))
      .on('GET', `/classes/${CLASS}/students`, () => ({ status: 200, body: { items: students, next_cursor: null } }))
      .on('GET', '/rubrics', () => ({ status: 200, body: { items: [], next_cursor: null } }))
      .on('GET', `/classes/${CLASS}/teachers`, () => ({ status: 200, body: [{ teacher_id: TEACHER.id, name: TEACHER.name, email: TEACHER.email, owner: true }] }))
    await useAuthStore().login(TEACHER.email, 'violet-Harbor-93!')
  })
  afterEach(() => vi.unstubAllGlobals())

  async function mountView() {
    const router = createRouter({ history: createMemoryHistory(), routes: [{ path: '/:p(.*)*', component: { template: '<p/>' } }] })
    const w = mount(ClassView, { props: { classId: CLASS }, global: { plugins: [router] }, attachTo: document.body })
    await flushPromises()
    return w
  }

  it('removes a student after the confirmation, and not before', async () => {
    fake.on('DELETE', `/classes/${CLASS}/students/s1`, () => ({ status: 204 }))
    const w = await mountView()
    expect(w.findAll('[data-testid="roster-row"]')).toHaveLength(2)
    expect(w.find('img').exists()).toBe(false)
    const remove = w.get('[data-student-id="s1"] [data-testid="roster-remove"]')
    expect(remove.attributes('aria-label')).toBe(`Remove ${HOSTILE} from the class`)
    await remove.trigger('click')
    await flushPromises()
    expect(fake.callsTo('DELETE', `/classes/${CLASS}/students/s1`)).toHaveLength(0)
    await openDialog(w).get('[data-testid="confirm-cancel"]').trigger('click')
    await flushPromises()
    expect(w.findAll('[data-testid="confirm-dialog"]').some((d) => (d.element as HTMLDialogElement).open)).toBe(false)
    await w.get('[data-student-id="s1"] [data-testid="roster-remove"]').trigger('click')
    await openDialog(w).get('form').trigger('submit')
    await flushPromises()
    expect(fake.callsTo('DELETE', `/classes/${CLASS}/students/s1`)).toHaveLength(1)
    expect(w.findAll('[data-testid="roster-row"]').map((r) => r.attributes('data-student-id'))).toEqual(['s2'])
    w.unmount()
  })

  it('rotates the join code and archives the class', async () => {
    fake.on('POST', `/classes/${CLASS}/join-code`, () => ({ status: 200, body: { ...room, join_code: 'NEWC0DE9' } }))
      .on('POST', `/classes/${CLASS}/archive`, () => ({ status: 200, body: { ...room, archived_at: '2026-12-06T19:00:00Z' } }))
    const w = await mountView()
    await w.get('[data-testid="rotate-join-code"]').trigger('click')
    await openDialog(w).get('form').trigger('submit')
    await flushPromises()
    expect(w.get('[data-testid="class-join-code"]').text()).toBe('NEWC0DE9')
    await w.get('[data-testid="class-archive"]').trigger('click')
    await openDialog(w).get('form').trigger('submit')
    await flushPromises()
    expect(w.get('[data-testid="class-archived"]').text()).toBe('archived')
    expect(w.find('[data-testid="class-unarchive"]').exists()).toBe(true)
    expect(w.find('[data-testid="create-assignment-submit"]').exists()).toBe(false)
    w.unmount()
  })

  it('the owner adds a co-teacher by account id and removes them', async () => {
    const co = { teacher_id: CO, name: 'Mr Co', email: 'co@example.com', owner: false }
    fake.on('POST', `/classes/${CLASS}/teachers`, () => ({ status: 201, body: [{ teacher_id: TEACHER.id, name: TEACHER.name, email: TEACHER.email, owner: true }, co] }))
      .on('DELETE', `/classes/${CLASS}/teachers/${CO}`, () => ({ status: 204 }))
    const w = await mountView()
    await w.get('[data-testid="teacher-add-id"]').setValue('rivera@example.com')
    await w.get('[data-testid="teacher-add"]').trigger('submit')
    await flushPromises()
    expect(w.get('[data-testid="teacher-error"]').text()).toContain('account id')
    expect(fake.callsTo('POST', `/classes/${CLASS}/teachers`)).toHaveLength(0)
    await w.get('[data-testid="teacher-add-id"]').setValue(`  ${CO}`)
    await w.get('[data-testid="teacher-add"]').element.closest('form')!.dispatchEvent(new Event('submit'))
    await flushPromises()
    expect(fake.callsTo('POST', `/classes/${CLASS}/teachers`)[0].body).toEqual({ teacher_id: CO })
    expect(w.findAll('[data-testid="teacher-row"]')).toHaveLength(2)
    await w.get(`[data-teacher-id="${CO}"] [data-testid="teacher-remove"]`).trigger('click')
    await openDialog(w).get('form').trigger('submit')
    await flushPromises()
    expect(fake.callsTo('DELETE', `/classes/${CLASS}/teachers/${CO}`)).toHaveLength(1)
    expect(w.findAll('[data-testid="teacher-row"]')).toHaveLength(1)
    w.unmount()
  })
})

import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { flushPromises, mount } from '@vue/test-utils'
import { createPinia, setActivePinia } from 'pinia'
import AccountView from '../src/views/AccountView.vue'
import { useAuthStore } from '../src/stores/auth'
import { FakeServer } from './fakes'

const user = { id: 'u1', email: 'ada@example.com', name: 'Ada', role: 'student', created_at: '2026-12-06T00:00:00Z' }
const exported = { format: 'essaycoach-export/1', account: user, essays: [{ id: 'e1', text: 'My essay.' }] }

describe('account view', () => {
  let fake: FakeServer
  let saved: { href: string; download: string }[]
  let blobs: Blob[]

  beforeEach(async () => {
    localStorage.clear()
    setActivePinia(createPinia())
    fake = new FakeServer()
      .on('POST', '/auth/token', () => ({ status: 200, body: { access_token: 'tok', refresh_token: 'r', token_type: 'bearer', expires_in: 900 } }))
      .on('GET', '/me', () => ({ status: 200, body: user }))
    vi.stubGlobal('fetch', fake.fetch)
    saved = []
    blobs = []
    vi.spyOn(URL, 'createObjectURL').mockImplementation((blob) => {
      blobs.push(blob as Blob)
      return `blob:export-${blobs.length}`
    })
    vi.spyOn(URL, 'revokeObjectURL').mockImplementation(() => {})
    vi.spyOn(HTMLAnchorElement.prototype, 'click').mockImplementation(function (this: HTMLAnchorElement) {
      saved.push({ href: this.href, download: this.download })
    })
    await useAuthStore().login('ada@example.com', 'violet-Harbor-93!')
  })
  afterEach(() => {
    vi.restoreAllMocks()
    vi.unstubAllGlobals()
  })

  it('downloads the signed-in user\'s data as a JSON file', async () => {
    fake.on('GET', '/me/export', () => ({ status: 200, body: exported }))
    const w = mount(AccountView)
    expect(w.get('[data-testid="account-email"]').text()).toBe('ada@example.com')
    await w.get('[data-testid="account-export"]').trigger('click')
    await flushPromises()
    const [call] = fake.callsTo('GET', '/me/export')
    expect(call.auth).toBe('Bearer tok')
    expect(saved).toHaveLength(1)
    expect(saved[0].download).toMatch(/^essaycoach-export-\d{4}-\d{2}-\d{2}\.json$/)
    expect(JSON.parse(await blobs[0].text())).toEqual(exported)
    expect(w.find('[data-testid="account-error"]').exists()).toBe(false)
    w.unmount()
  })

  it('shows the problem detail when the server refuses, and saves nothing', async () => {
    fake.on('GET', '/me/export', () => ({ status: 429, body: { detail: 'too many exports; try again later', code: 'rate_limited' } }))
    const w = mount(AccountView)
    await w.get('[data-testid="account-export"]').trigger('click')
    await flushPromises()
    expect(w.get('[data-testid="account-error"]').text()).toBe('too many exports; try again later')
    expect(saved).toHaveLength(0)
    expect((w.get('[data-testid="account-export"]').element as HTMLButtonElement).disabled).toBe(false)
    w.unmount()
  })
})

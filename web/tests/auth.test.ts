import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { createPinia, setActivePinia } from 'pinia'
import { STORAGE_KEY, useAuthStore } from '../src/stores/auth'
import { FakeServer } from './fakes'

const user = { id: 'u1', email: 'a@example.com', name: 'Ada', role: 'student', created_at: '2026-12-06T00:00:00Z' }

function server(): FakeServer {
  let n = 0
  const s = new FakeServer()
  s.on('POST', '/auth/token', () => ({ status: 200, body: { access_token: 'a0', refresh_token: 'r0', token_type: 'bearer', expires_in: 900 } }))
  s.on('GET', '/me', () => ({ status: 200, body: user }))
  s.on('POST', '/auth/refresh', (call) => {
    const spent = (call.body as { refresh_token: string }).refresh_token
    if (spent !== `r${n}`) return { status: 401, body: { detail: 'refresh token reused', code: 'token_reused' } }
    n += 1
    return { status: 200, body: { access_token: `a${n}`, refresh_token: `r${n}`, token_type: 'bearer', expires_in: 900 } }
  })
  s.on('POST', '/auth/logout', () => ({ status: 204 }))
  return s
}

describe('auth store', () => {
  let fake: FakeServer
  beforeEach(() => {
    vi.useFakeTimers()
    localStorage.clear()
    setActivePinia(createPinia())
    fake = server()
    vi.stubGlobal('fetch', fake.fetch)
  })
  afterEach(() => {
    vi.useRealTimers()
    vi.unstubAllGlobals()
  })

  it('refreshes the access token a minute before its 15-minute expiry, and again after that', async () => {
    const auth = useAuthStore()
    await auth.login('a@example.com', 'secret-password')
    expect(auth.signedIn).toBe(true)
    await vi.advanceTimersByTimeAsync(839_000)
    expect(fake.callsTo('POST', '/auth/refresh')).toHaveLength(0)
    await vi.advanceTimersByTimeAsync(2_000)
    expect(fake.callsTo('POST', '/auth/refresh')).toHaveLength(1)
    expect(auth.access).toBe('a1')
    await vi.advanceTimersByTimeAsync(840_000)
    expect(fake.callsTo('POST', '/auth/refresh')).toHaveLength(2)
    expect(fake.callsTo('POST', '/auth/refresh')[1].body).toEqual({ refresh_token: 'r1' })
  })

  it('spends a single-use refresh token once when several callers refresh together', async () => {
    const auth = useAuthStore()
    await auth.login('a@example.com', 'secret-password')
    const results = await Promise.all([auth.refresh(), auth.refresh(), auth.refresh()])
    expect(results).toEqual([true, true, true])
    expect(fake.callsTo('POST', '/auth/refresh')).toHaveLength(1)
    expect(auth.signedIn).toBe(true)
  })

  it('adopts a pair another tab already rotated instead of spending the old token again', async () => {
    const auth = useAuthStore()
    await auth.login('a@example.com', 'secret-password')
    // Another tab refreshed: shared storage now holds r1, this tab still holds r0.
    await fetch('/api/v1/auth/refresh', { method: 'POST', body: JSON.stringify({ refresh_token: 'r0' }) })
    const stored = JSON.parse(localStorage.getItem(STORAGE_KEY)!)
    localStorage.setItem(STORAGE_KEY, JSON.stringify({ ...stored, access: 'a1', refresh: 'r1', accessExpiresAt: Date.now() + 900_000 }))
    expect(await auth.refresh()).toBe(true)
    expect(auth.refreshToken).toBe('r1')
    expect(fake.callsTo('POST', '/auth/refresh')).toHaveLength(1)
  })

  it('retries a request once with a refreshed token after a 401', async () => {
    const auth = useAuthStore()
    await auth.login('a@example.com', 'secret-password')
    let first = true
    fake.on('GET', '/classes', (call) => {
      if (first) { first = false; return { status: 401, body: { detail: 'expired' } } }
      return { status: 200, body: { items: [], next_cursor: null, auth: call.auth } }
    })
    const { api } = await import('../src/api/http')
    const page = await api<{ auth: string }>('GET', '/classes')
    expect(page.auth).toBe('Bearer a1')
  })

  it('ends the session when the refresh is refused, and says so on the sign-in page', async () => {
    const auth = useAuthStore()
    await auth.login('a@example.com', 'secret-password')
    fake.on('POST', '/auth/refresh', () => ({ status: 401, body: { detail: 'revoked' } }))
    expect(await auth.refresh()).toBe(false)
    expect(auth.signedIn).toBe(false)
    expect(auth.expired).toBe(true)
    expect(localStorage.getItem(STORAGE_KEY)).toBeNull()
  })

  it('signs out by revoking the refresh token on the server', async () => {
    const auth = useAuthStore()
    await auth.login('a@example.com', 'secret-password')
    await auth.logout()
    expect(fake.callsTo('POST', '/auth/logout')[0].body).toEqual({ refresh_token: 'r0' })
    expect(fake.callsTo('POST', '/auth/logout')[0].auth).toBe('Bearer a0')
    expect(auth.signedIn).toBe(false)
    expect(auth.expired).toBe(false)
  })
})

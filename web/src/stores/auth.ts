/**
 * Who is signed in, and their tokens. The access token (15 min) is refreshed a minute before it
 * expires; refresh tokens are single use, so refreshes are serialised: one in flight per tab, and
 * across tabs a Web Lock plus a re-read of the shared storage (a tab that finds the pair already
 * rotated by another tab adopts it instead of spending the old one a second time, which would
 * revoke the whole family).
 */
import { defineStore } from 'pinia'
import { computed, ref } from 'vue'
import { api, ApiError, setTokenSource } from '../api/http'
import type { Role, TokenPair, User } from '../api/types'

export const STORAGE_KEY = 'essaycoach.auth'
/** Refresh this long before the access token expires. */
export const REFRESH_MARGIN_MS = 60_000

export interface Stored { access: string; accessExpiresAt: number; refresh: string; user: User | null }

/** The session kept in local storage (by an earlier page load or another tab), if any. */
export function readStored(): Stored | null {
  try {
    const raw = localStorage.getItem(STORAGE_KEY)
    return raw ? (JSON.parse(raw) as Stored) : null
  } catch {
    return null
  }
}

async function exclusive<T>(task: () => Promise<T>): Promise<T> {
  const locks = (globalThis.navigator as Navigator | undefined)?.locks
  if (locks?.request) return locks.request('essaycoach-refresh', task) as Promise<T>
  return task()
}

export const useAuthStore = defineStore('auth', () => {
  const user = ref<User | null>(null)
  const access = ref<string | null>(null)
  const accessExpiresAt = ref(0)
  const refreshToken = ref<string | null>(null)
  /** True after the session ran out (refresh refused): the sign-in page says so. */
  const expired = ref(false)
  let timer: ReturnType<typeof setTimeout> | null = null
  let inflight: Promise<boolean> | null = null

  const signedIn = computed(() => user.value !== null && access.value !== null)
  const role = computed<Role | null>(() => user.value?.role ?? null)

  function persist(): void {
    if (access.value && refreshToken.value) {
      const stored: Stored = { access: access.value, accessExpiresAt: accessExpiresAt.value,
        refresh: refreshToken.value, user: user.value }
      localStorage.setItem(STORAGE_KEY, JSON.stringify(stored))
    } else {
      localStorage.removeItem(STORAGE_KEY)
    }
  }

  function schedule(): void {
    if (timer) clearTimeout(timer)
    timer = null
    if (!refreshToken.value) return
    const wait = Math.max(0, accessExpiresAt.value - Date.now() - REFRESH_MARGIN_MS)
    timer = setTimeout(() => { void refresh() }, wait)
  }

  function adopt(pair: TokenPair): void {
    access.value = pair.access_token
    refreshToken.value = pair.refresh_token
    accessExpiresAt.value = Date.now() + pair.expires_in * 1000
    expired.value = false
    persist()
    schedule()
  }

  function clear(): void {
    if (timer) clearTimeout(timer)
    timer = null
    access.value = null
    refreshToken.value = null
    accessExpiresAt.value = 0
    user.value = null
    persist()
  }

  /** Load a session kept by an earlier page load (or another tab). */
  async function restore(): Promise<void> {
    const stored = readStored()
    if (!stored) return
    access.value = stored.access
    refreshToken.value = stored.refresh
    accessExpiresAt.value = stored.accessExpiresAt
    user.value = stored.user
    if (stored.accessExpiresAt - Date.now() < REFRESH_MARGIN_MS && !(await refresh())) return
    schedule()
    try {
      user.value = await api<User>('GET', '/me')
      persist()
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) clear()
    }
  }

  async function login(email: string, password: string): Promise<void> {
    const pair = await api<TokenPair>('POST', '/auth/token', { email, password }, { anonymous: true })
    adopt(pair)
    user.value = await api<User>('GET', '/me')
    persist()
  }

  async function register(name: string, email: string, password: string, role: 'student' | 'teacher'): Promise<void> {
    await api<User>('POST', '/auth/register', { name, email, password, role }, { anonymous: true })
    await login(email, password)
  }

  async function spend(): Promise<boolean> {
    const stored = readStored()
    // Another tab rotated the pair since we read it: use theirs, do not spend ours again.
    if (stored && stored.refresh !== refreshToken.value && stored.accessExpiresAt - Date.now() > REFRESH_MARGIN_MS) {
      access.value = stored.access
      refreshToken.value = stored.refresh
      accessExpiresAt.value = stored.accessExpiresAt
      schedule()
      return true
    }
    const token = stored?.refresh ?? refreshToken.value
    if (!token) return false
    try {
      adopt(await api<TokenPair>('POST', '/auth/refresh', { refresh_token: token }, { anonymous: true }))
      return true
    } catch (err) {
      if (err instanceof ApiError && err.status === 0) {
        // Offline: try again shortly; the session is not over.
        if (timer) clearTimeout(timer)
        timer = setTimeout(() => { void refresh() }, 5_000)
        return false
      }
      expire()
      return false
    }
  }

  /** Rotate the token pair; concurrent callers share one request. */
  function refresh(): Promise<boolean> {
    if (!inflight) {
      inflight = exclusive(spend).finally(() => { inflight = null })
    }
    return inflight
  }

  /** The session is over (refresh refused): back to sign-in; editors keep their unsaved text. */
  function expire(): void {
    const had = user.value !== null
    clear()
    if (had) expired.value = true
  }

  async function logout(): Promise<void> {
    const token = refreshToken.value
    try {
      if (token) await api('POST', '/auth/logout', { refresh_token: token })
    } catch {
      // signing out locally matters more than telling the server
    } finally {
      expired.value = false
      clear()
    }
  }

  async function accessToken(): Promise<string | null> {
    if (access.value && accessExpiresAt.value - Date.now() < 10_000 && refreshToken.value) await refresh()
    return access.value
  }

  setTokenSource({
    accessToken,
    unauthorized: async () => (refreshToken.value ? refresh() : false),
  })

  if (typeof window !== 'undefined') {
    window.addEventListener('storage', (event) => {
      if (event.key !== STORAGE_KEY) return
      const stored = readStored()
      if (stored) {
        access.value = stored.access
        refreshToken.value = stored.refresh
        accessExpiresAt.value = stored.accessExpiresAt
        user.value = stored.user ?? user.value
        schedule()
      } else if (user.value) {
        expire() // signed out in another tab: this one goes to sign-in keeping its page and text
      }
    })
  }

  return { user, access, accessExpiresAt, refreshToken, expired, signedIn, role,
    restore, login, register, refresh, logout, expire, accessToken }
})

/** The REST client: JSON in and out, bearer token, problem+json errors, one retry after a refresh. */

export const API_PREFIX = '/api/v1'

/** An error answer from the API (application/problem+json), or a network failure (status 0). */
export class ApiError extends Error {
  readonly status: number
  readonly code: string
  readonly detail: string

  constructor(status: number, code: string, detail: string) {
    super(detail)
    this.name = 'ApiError'
    this.status = status
    this.code = code
    this.detail = detail
  }
}

/** How the client gets a token and what it does when the server says the token is no good. */
export interface TokenSource {
  /** A fresh enough access token, or null when signed out. */
  accessToken(): Promise<string | null>
  /** The server answered 401: refresh once; true when the request should be retried. */
  unauthorized(): Promise<boolean>
}

let tokens: TokenSource | null = null

export function setTokenSource(source: TokenSource | null): void {
  tokens = source
}

async function problem(res: Response): Promise<ApiError> {
  let code = `http_${res.status}`
  let detail = res.statusText || `request failed (${res.status})`
  try {
    const body = await res.json()
    if (body && typeof body === 'object') {
      if (typeof body.code === 'string') code = body.code
      if (typeof body.detail === 'string') detail = body.detail
      else if (Array.isArray(body.detail)) detail = body.detail.map((d: { msg?: string }) => d.msg ?? '').join('; ')
      else if (typeof body.title === 'string') detail = body.title
    }
  } catch {
    // not JSON: keep the status text
  }
  return new ApiError(res.status, code, detail)
}

export interface RequestOptions {
  /** Send no Authorization header (sign-in, refresh). */
  anonymous?: boolean
  headers?: Record<string, string>
}

async function send(method: string, path: string, body: unknown, opts: RequestOptions): Promise<Response> {
  const headers: Record<string, string> = { Accept: 'application/json', ...opts.headers }
  if (body !== undefined) headers['Content-Type'] = 'application/json'
  if (!opts.anonymous && tokens) {
    const token = await tokens.accessToken()
    if (token) headers.Authorization = `Bearer ${token}`
  }
  try {
    return await fetch(API_PREFIX + path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    })
  } catch {
    throw new ApiError(0, 'network', 'The server cannot be reached. Check your connection.')
  }
}

async function respond(method: string, path: string, body: unknown, opts: RequestOptions): Promise<Response> {
  let res = await send(method, path, body, opts)
  if (res.status === 401 && !opts.anonymous && tokens && (await tokens.unauthorized())) {
    res = await send(method, path, body, opts)
  }
  if (!res.ok) throw await problem(res)
  return res
}

/** A JSON request; resolves with the parsed body (undefined for 204). */
export async function api<T>(method: string, path: string, body?: unknown, opts: RequestOptions = {}): Promise<T> {
  const res = await respond(method, path, body, opts)
  if (res.status === 204) return undefined as T
  return (await res.json()) as T
}

/** A download (e.g. a class export) as a Blob, with the bearer token. */
export async function apiBlob(path: string): Promise<Blob> {
  const res = await respond('GET', path, undefined, { headers: { Accept: '*/*' } })
  return res.blob()
}

/** Hand-written fakes: a fetch that answers by route, and a WebSocket the test drives. */
import { vi } from 'vitest'
import { createPinia, setActivePinia } from 'pinia'
import type { SocketLike } from '../src/realtime/ticketSocket'

export interface Call { method: string; path: string; body: unknown; auth: string | null }
type Route = (call: Call) => { status: number; body?: unknown } | Promise<{ status: number; body?: unknown }>

export class FakeServer {
  calls: Call[] = []
  routes = new Map<string, Route>()

  on(method: string, path: string, route: Route): this {
    this.routes.set(`${method} ${path}`, route)
    return this
  }

  callsTo(method: string, path: string): Call[] {
    return this.calls.filter((c) => c.method === method && c.path === path)
  }

  fetch = async (input: RequestInfo | URL, init: RequestInit = {}): Promise<Response> => {
    const url = new URL(String(input), 'http://app.test')
    const path = url.pathname.replace(/^\/api\/v1/, '') + url.search
    const headers = (init.headers ?? {}) as Record<string, string>
    const call: Call = { method: init.method ?? 'GET', path, body: init.body ? JSON.parse(String(init.body)) : undefined,
      auth: headers.Authorization ?? null }
    this.calls.push(call)
    const route = this.routes.get(`${call.method} ${url.pathname.replace(/^\/api\/v1/, '')}`)
    if (!route) return new Response(JSON.stringify({ detail: 'no route', code: 'not_found' }), { status: 404 })
    const { status, body } = await route(call)
    return new Response(status === 204 ? null : JSON.stringify(body ?? {}), {
      status, headers: { 'Content-Type': status >= 400 ? 'application/problem+json' : 'application/json' },
    })
  }
}

export class FakeSocket implements SocketLike {
  static instances: FakeSocket[] = []
  readyState = 0
  binaryType: BinaryType = 'blob'
  onopen: ((e: Event) => void) | null = null
  onmessage: ((e: MessageEvent) => void) | null = null
  onclose: ((e: CloseEvent) => void) | null = null
  onerror: ((e: Event) => void) | null = null
  sent: (string | Uint8Array)[] = []
  readonly OPEN = 1

  constructor(readonly url: string) {
    FakeSocket.instances.push(this)
  }

  static last(): FakeSocket {
    return FakeSocket.instances[FakeSocket.instances.length - 1]
  }

  send(data: string | ArrayBufferLike | ArrayBufferView): void {
    if (typeof data === 'string') this.sent.push(data)
    else if (ArrayBuffer.isView(data)) this.sent.push(new Uint8Array(data.buffer, data.byteOffset, data.byteLength).slice())
    else this.sent.push(new Uint8Array(data).slice())
  }

  close(code = 1000): void {
    if (this.readyState === 3) return
    this.readyState = 3
    this.onclose?.({ code, reason: '', wasClean: true } as CloseEvent)
  }

  // --- driven by the test ---
  open(): void {
    this.readyState = 1
    this.onopen?.(new Event('open'))
  }

  receive(data: string | Uint8Array): void {
    const payload = typeof data === 'string' ? data : data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength)
    this.onmessage?.({ data: payload } as MessageEvent)
  }

  drop(code = 1006): void {
    this.readyState = 3
    this.onclose?.({ code, reason: '', wasClean: false } as CloseEvent)
  }
}

export const flush = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 0))

/** A fresh app state for a view test: empty storage, a new Pinia, and `fetch` answered by a FakeServer
 * (undo with `vi.unstubAllGlobals()`). */
export function freshServer(): FakeServer {
  localStorage.clear()
  setActivePinia(createPinia())
  const fake = new FakeServer()
  vi.stubGlobal('fetch', fake.fetch)
  return fake
}

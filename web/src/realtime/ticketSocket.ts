/**
 * A WebSocket look-alike that first fetches a single-use socket ticket, then opens the real socket
 * on `url?ticket=...`. Handed to y-websocket as its `WebSocketPolyfill` and used by our own
 * reconnecting sockets, so every (re)connect spends a fresh ticket (they are single use, 60 s).
 */

export type TicketFn = () => Promise<string>

type Handler<E> = ((event: E) => void) | null

export interface SocketLike {
  readonly readyState: number
  binaryType: BinaryType
  onopen: Handler<Event>
  onmessage: Handler<MessageEvent>
  onclose: Handler<CloseEvent>
  onerror: Handler<Event>
  send(data: string | ArrayBufferLike | ArrayBufferView): void
  close(code?: number, reason?: string): void
}

export type SocketClass = new (url: string, protocols?: string | string[]) => SocketLike

/** Close code reported when no ticket could be had (signed out, offline): transient, so retried. */
export const NO_TICKET_CODE = 1006

export function ticketSocketClass(ticket: TicketFn, Real: SocketClass = WebSocket as unknown as SocketClass): SocketClass {
  return class TicketSocket implements SocketLike {
    static readonly CONNECTING = 0
    static readonly OPEN = 1
    static readonly CLOSING = 2
    static readonly CLOSED = 3
    readonly CONNECTING = 0
    readonly OPEN = 1
    readonly CLOSING = 2
    readonly CLOSED = 3
    onopen: Handler<Event> = null
    onmessage: Handler<MessageEvent> = null
    onclose: Handler<CloseEvent> = null
    onerror: Handler<Event> = null
    binaryType: BinaryType = 'arraybuffer'
    private inner: SocketLike | null = null
    private closed = false

    constructor(url: string, protocols?: string | string[]) {
      ticket().then((t) => {
        if (this.closed) return
        const sep = url.includes('?') ? '&' : '?'
        const ws = new Real(`${url}${sep}ticket=${encodeURIComponent(t)}`, protocols)
        ws.binaryType = this.binaryType
        ws.onopen = (e) => this.onopen?.(e)
        ws.onmessage = (e) => this.onmessage?.(e)
        ws.onerror = (e) => this.onerror?.(e)
        ws.onclose = (e) => { this.closed = true; this.onclose?.(e) }
        this.inner = ws
      }, () => {
        if (this.closed) return
        this.closed = true
        this.onclose?.({ code: NO_TICKET_CODE, reason: 'no ticket', wasClean: false } as CloseEvent)
      })
    }

    get readyState(): number {
      if (this.inner) return this.inner.readyState
      return this.closed ? 3 : 0
    }

    send(data: string | ArrayBufferLike | ArrayBufferView): void {
      this.inner?.send(data)
    }

    close(code?: number, reason?: string): void {
      if (this.inner) this.inner.close(code, reason)
      else if (!this.closed) {
        this.closed = true
        queueMicrotask(() => this.onclose?.({ code: code ?? 1000, reason: reason ?? '', wasClean: true } as CloseEvent))
      }
    }
  }
}

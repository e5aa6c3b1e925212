/**
 * One logical socket that reconnects with backoff (a fresh ticket each time, via TicketSocket) until
 * stopped. Used by the events, class-live and class-docs sockets; the doc socket uses y-websocket's
 * own loop with the same TicketSocket.
 */
import { backoffDelay } from './backoff'
import type { SocketClass, SocketLike } from './ticketSocket'

export type SocketStatus = 'connecting' | 'open' | 'offline' | 'stopped'

export interface ReconnectingOptions {
  url: string
  Socket: SocketClass
  /** Called on every open: send subscriptions, resume requests. */
  onOpen?: (send: (data: string | Uint8Array) => void) => void
  onMessage: (data: string | Uint8Array) => void
  onStatus?: (status: SocketStatus) => void
  /** Close codes after which reconnecting cannot help (4403 wrong role, 4404 no such thing). */
  fatal?: (code: number) => boolean
  delay?: (attempt: number) => number
}

export class ReconnectingSocket {
  private ws: SocketLike | null = null
  private attempt = 0
  private timer: ReturnType<typeof setTimeout> | null = null
  private stopped = false
  status: SocketStatus = 'connecting'
  lastCloseCode: number | null = null

  constructor(private readonly opts: ReconnectingOptions) {
    this.connect()
  }

  private setStatus(status: SocketStatus): void {
    this.status = status
    this.opts.onStatus?.(status)
  }

  private connect(): void {
    if (this.stopped) return
    this.setStatus('connecting')
    const ws = new this.opts.Socket(this.opts.url)
    ws.binaryType = 'arraybuffer'
    this.ws = ws
    ws.onopen = () => {
      if (this.ws !== ws) return
      this.attempt = 0
      this.setStatus('open')
      this.opts.onOpen?.((data) => this.send(data))
    }
    ws.onmessage = (event) => {
      if (this.ws !== ws) return
      const data = event.data
      this.opts.onMessage(typeof data === 'string' ? data : new Uint8Array(data as ArrayBuffer))
    }
    ws.onclose = (event) => {
      if (this.ws !== ws) return
      this.ws = null
      this.lastCloseCode = event.code
      if (this.stopped) return
      if (this.opts.fatal?.(event.code)) {
        this.setStatus('stopped')
        return
      }
      this.setStatus('offline')
      const wait = (this.opts.delay ?? backoffDelay)(this.attempt++)
      this.timer = setTimeout(() => this.connect(), wait)
    }
  }

  send(data: string | Uint8Array): boolean {
    if (!this.ws || this.ws.readyState !== 1) return false
    this.ws.send(data)
    return true
  }

  /** Drop the current connection and reconnect now (e.g. the browser came back online). */
  kick(): void {
    if (this.timer) { clearTimeout(this.timer); this.timer = null; this.connect() }
  }

  stop(): void {
    this.stopped = true
    if (this.timer) clearTimeout(this.timer)
    const ws = this.ws
    this.ws = null
    ws?.close(1000, 'done')
    this.setStatus('stopped')
  }
}

/** 4400-4499 are the server's deliberate refusals (README "Live sockets"): reconnecting cannot fix them. */
export const isFatalClose = (code: number): boolean => code >= 4400 && code < 4500

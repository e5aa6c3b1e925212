import { api } from './http'

/** A single-use, 60 s socket ticket: fetched anew before every (re)connect. */
export async function fetchTicket(): Promise<string> {
  const body = await api<{ ticket: string }>('POST', '/auth/ws-ticket')
  return body.ticket
}

/** ws(s)://host/ws/... for a path, on the page's own origin. */
export function socketUrl(path: string): string {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:'
  return `${proto}//${location.host}${path}`
}

/**
 * One open essay: its Y.Doc bound to `/ws/essays/{id}/doc` through the npm y-websocket provider,
 * the durable-ack indicator, and the events socket (feedback, comments, submissions).
 *
 * Sessions are kept by essay id while a view holds them, and past that while they hold edits the
 * server has not acknowledged: when the session expires and the app goes to sign-in, the doc keeps
 * its text in memory (and in localStorage, for a reload), and the provider reconnects with a fresh
 * ticket as soon as the user is signed in again, which syncs everything typed meanwhile.
 */
import { ref, shallowRef, watch, type Ref } from 'vue'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import * as decoding from 'lib0/decoding'
import { api } from '../api/http'
import { fetchTicket, socketUrl } from '../api/tickets'
import type { Comment, FeedbackItem, Page } from '../api/types'
import { countWords } from '../lib/format'
import { AckTracker, MESSAGE_ACK, toBytes, type SaveState } from '../realtime/ack'
import { EssayEventState, type EssayEvent } from '../realtime/essayEvents'
import { isFatalClose, ReconnectingSocket, type SocketStatus } from '../realtime/reconnecting'
import { ticketSocketClass, type SocketClass, type TicketFn } from '../realtime/ticketSocket'
import { useAuthStore } from './auth'
import { onSignOut } from './signOut'

export const BACKUP_PREFIX = 'essaycoach.unsaved.'

export interface EssaySession {
  id: string
  doc: Y.Doc
  text: Y.Text
  provider: WebsocketProvider
  tracker: AckTracker
  saveState: Ref<SaveState>
  feedback: Ref<FeedbackItem[]>
  comments: Ref<Comment[]>
  wordCount: Ref<number>
  eventsStatus: Ref<SocketStatus>
  submission: Ref<EssayEvent | null>
  /** Set when the server refused the document for good (4403, 4404). */
  refused: Ref<string | null>
  /** The last `deadline` event (a teacher changed the student's extension), if any. */
  deadline: Ref<EssayEvent | null>
  refetch(): Promise<void>
  /** Replace `[from, to)` with `insert` in one transaction (one undo step, one update). */
  replace(from: number, to: number, insert: string): void
}

interface Entry { session: EssaySession; holders: number; destroy: () => void; keep: () => void }
const sessions = new Map<string, Entry>()

export interface SessionOptions {
  /** A reader's session (a teacher's review): never restores or writes a local backup. */
  readOnly?: boolean
  ticket?: TicketFn
  Socket?: SocketClass
  serverUrl?: string
}

/** A ticket once someone is signed in: a socket opened while signed out waits instead of failing. */
async function ticketWhenSignedIn(): Promise<string> {
  const auth = useAuthStore()
  if (!auth.signedIn) {
    await new Promise<void>((resolve) => {
      const stop = watch(() => auth.signedIn, (now) => { if (now) { stop(); resolve() } })
    })
  }
  return fetchTicket()
}

function encodeBase64(bytes: Uint8Array): string {
  let s = ''
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000))
  return btoa(s)
}

function decodeBase64(text: string): Uint8Array {
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0))
}

function create(id: string, opts: SessionOptions): Entry {
  const ticket = opts.ticket ?? ticketWhenSignedIn
  const doc = new Y.Doc()
  const text = doc.getText('content')
  const tracker = new AckTracker()
  const backupKey = BACKUP_PREFIX + id

  // Text typed before a reload that the server never acknowledged: merged back in (a CRDT update
  // from this browser's own history, so applying it twice changes nothing).
  const backup = opts.readOnly ? null : localStorage.getItem(backupKey)
  if (backup) {
    try {
      Y.applyUpdate(doc, decodeBase64(backup), 'backup')
      tracker.localEdit(false)
    } catch {
      localStorage.removeItem(backupKey)
    }
  }

  const Base = ticketSocketClass(ticket, opts.Socket) as unknown as new (url: string, p?: string | string[]) => {
    send(data: string | ArrayBufferLike | ArrayBufferView): void
  }
  // Count what the provider sends on each connection: the server's [100][n] refers to that count.
  class CountingSocket extends Base {
    send(data: string | ArrayBufferLike | ArrayBufferView): void {
      super.send(data)
      const bytes = toBytes(data)
      if (bytes) tracker.sentFrame(bytes)
    }
  }

  const provider = new WebsocketProvider(opts.serverUrl ?? socketUrl(`/ws/essays/${id}`), 'doc', doc, {
    WebSocketPolyfill: CountingSocket as unknown as typeof WebSocket,
    disableBc: true,
    maxBackoffTime: 10_000,
    // A periodic sync step 1 is answered by the server, which keeps the provider's
    // no-message watchdog (30 s) from dropping a quiet but healthy connection.
    resyncInterval: 10_000,
  })
  provider.messageHandlers[MESSAGE_ACK] = (_encoder, decoder: decoding.Decoder) => {
    tracker.ack(decoding.readVarUint(decoder))
  }
  provider.on('status', ({ status }) => {
    if (status === 'connected') tracker.opened()
  })
  // Every close, including a connection that never opened (no ticket, server down).
  provider.on('connection-close', () => tracker.closed())

  const saveState = ref<SaveState>(tracker.state)
  const refused = ref<string | null>(null)
  provider.on('closed', (event) => {
    // The server's reason when a teacher removed the student from the essay's class (roster.py).
    if (event.code === 4404 && event.reason === 'the essay left the class') {
      refused.value = opts.readOnly ? 'The student was removed from the class: you can no longer see this essay.'
        : 'You were removed from this essay\'s class: it is now your private essay and your teacher no longer sees it. '
          + 'Your text is kept; reload the page to keep writing.'
      return
    }
    refused.value = event.code === 4404 ? 'This essay does not exist or you may not open it.'
      : event.code === 4403 ? 'You may read this essay but not change it.' : `Connection refused (${event.code}).`
  })

  let backupTimer: ReturnType<typeof setTimeout> | null = null
  const writeBackup = (): void => {
    backupTimer = null
    if (tracker.dirty && !opts.readOnly) {
      try { localStorage.setItem(backupKey, encodeBase64(Y.encodeStateAsUpdate(doc))) } catch { /* storage full */ }
    }
  }
  doc.on('update', (_update: Uint8Array, origin: unknown) => {
    if (origin === provider) return
    const ws = provider.ws
    tracker.localEdit(provider.wsconnected && ws !== null && ws.readyState === 1)
    if (!backupTimer) backupTimer = setTimeout(writeBackup, 500)
  })

  // Counted at most every 250 ms: a long essay is not re-split on every keystroke.
  const wordCount = ref(countWords(text.toString()))
  let countTimer: ReturnType<typeof setTimeout> | null = null
  text.observe(() => {
    countTimer ??= setTimeout(() => { countTimer = null; wordCount.value = countWords(text.toString()) }, 250)
  })

  const feedback = shallowRef<FeedbackItem[]>([])
  const comments = shallowRef<Comment[]>([])
  const submission = shallowRef<EssayEvent | null>(null)
  const deadline = shallowRef<EssayEvent | null>(null)
  const eventsStatus = ref<SocketStatus>('connecting')

  async function refetch(): Promise<void> {
    const [fb, cm] = await Promise.all([
      api<{ items: FeedbackItem[] }>('GET', `/essays/${id}/feedback`),
      api<Page<Comment>>('GET', `/essays/${id}/comments`),
    ])
    state.replace(fb.items)
    comments.value = cm.items
  }

  const state = new EssayEventState({
    feedback: (items) => { feedback.value = items },
    comment: (c) => { comments.value = [...comments.value.filter((x) => x.id !== c.id), c] },
    submission: (e) => {
      if (!submission.value || (e.seq ?? 0) >= (submission.value.seq ?? 0)) submission.value = e
    },
    refetch: () => { void refetch().catch(() => undefined) },
    deadline: (e) => {
      deadline.value = e
      if (opts.readOnly) return
      // The doc socket's write window was fixed when it opened: reopen it so the new close
      // applies (Yjs resyncs by state vector, nothing typed is lost).
      if (e.deadline_status !== 'closed') refused.value = null
      provider.disconnect()
      provider.connect()
    },
  })

  const events = new ReconnectingSocket({
    url: `${opts.serverUrl ?? socketUrl(`/ws/essays/${id}`)}/events`,
    Socket: ticketSocketClass(ticket, opts.Socket),
    onOpen: (send) => { send(state.resumeMessage()) },
    onMessage: (data) => { if (typeof data === 'string') state.handle(data) },
    onStatus: (s) => { eventsStatus.value = s },
    fatal: isFatalClose,
  })

  const session: EssaySession = {
    id, doc, text, provider, tracker, saveState, feedback, comments, wordCount, eventsStatus, submission, refused, deadline,
    refetch,
    replace(from, to, insert) {
      doc.transact(() => {
        if (to > from) text.delete(from, to - from)
        if (insert) text.insert(from, insert)
      })
    },
  }

  // The browser knows it lost the network before a socket does: show "offline" at once, and
  // reconnect (fresh tickets) as soon as it is back instead of waiting out the backoff.
  const onOffline = (): void => { provider.disconnect() }
  const onOnline = (): void => {
    if (!refused.value) provider.connect()
    events.kick()
  }
  window.addEventListener('offline', onOffline)
  window.addEventListener('online', onOnline)

  const entry: Entry = {
    session,
    holders: 0,
    keep: writeBackup,
    destroy: () => {
      window.removeEventListener('online', onOnline)
      window.removeEventListener('offline', onOffline)
      if (backupTimer) clearTimeout(backupTimer)
      if (countTimer) clearTimeout(countTimer)
      events.stop()
      provider.destroy()
      doc.destroy()
      sessions.delete(id)
    },
  }
  tracker.onChange((s) => {
    saveState.value = s
    if (s === 'saved') {
      localStorage.removeItem(backupKey)
      if (entry.holders === 0) entry.destroy()
    }
  })
  return entry
}

/** Open (or share) the session of an essay; pair with `releaseEssaySession`. */
export function openEssaySession(id: string, opts: SessionOptions = {}): EssaySession {
  let entry = sessions.get(id)
  if (!entry) {
    entry = create(id, opts)
    sessions.set(id, entry)
  }
  entry.holders += 1
  return entry.session
}

/** A view let go: the session ends now unless it still has edits to deliver. */
export function releaseEssaySession(session: EssaySession): void {
  const entry = sessions.get(session.id)
  if (!entry) return
  entry.holders = Math.max(0, entry.holders - 1)
  if (entry.holders === 0 && !session.tracker.dirty) entry.destroy()
}

/** Signing out: keep unsaved text in local storage only, and drop every document from memory. */
export function closeAllEssaySessions(): void {
  for (const entry of [...sessions.values()]) {
    entry.keep()
    entry.destroy()
  }
}

onSignOut(closeAllEssaySessions)

export function openSessionCount(): number {
  return sessions.size
}

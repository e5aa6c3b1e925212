import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { createPinia, setActivePinia } from 'pinia'
import * as Y from 'yjs'
import * as encoding from 'lib0/encoding'
import * as syncProtocol from 'y-protocols/sync'
import { AckTracker } from '../src/realtime/ack'
import { useAuthStore } from '../src/stores/auth'
import { BACKUP_PREFIX, openEssaySession, releaseEssaySession } from '../src/stores/essaySession'
import { FakeServer, FakeSocket, flush } from './fakes'

const step1 = (doc: Y.Doc): Uint8Array => {
  const e = encoding.createEncoder()
  encoding.writeVarUint(e, 0)
  syncProtocol.writeSyncStep1(e, doc)
  return encoding.toUint8Array(e)
}
const ackFrame = (n: number): Uint8Array => {
  const e = encoding.createEncoder()
  encoding.writeVarUint(e, 100)
  encoding.writeVarUint(e, n)
  return encoding.toUint8Array(e)
}
const STEP2 = Uint8Array.of(0, 1, 0)
const UPDATE = Uint8Array.of(0, 2, 0)
const AWARENESS = Uint8Array.of(1, 0)

describe('AckTracker', () => {
  it('is saved only once the server acknowledged the message carrying the newest edit', () => {
    const t = new AckTracker()
    expect(t.state).toBe('saving') // connecting
    t.opened()
    t.sentFrame(STEP2)
    expect(t.state).toBe('saved') // nothing of ours was pending
    t.sentFrame(UPDATE)
    t.localEdit(true)
    t.sentFrame(AWARENESS) // not counted by the server
    t.sentFrame(UPDATE)
    expect(t.state).toBe('saving')
    t.ack(2)
    expect(t.state).toBe('saving')
    t.ack(3)
    expect(t.state).toBe('saved')
  })

  it('carries edits made offline, or sent but never acknowledged, to the next connection', () => {
    const t = new AckTracker()
    t.opened()
    t.sentFrame(STEP2)
    t.sentFrame(UPDATE)
    t.closed() // dropped before the ack
    expect(t.state).toBe('offline')
    t.localEdit(false)
    t.opened()
    expect(t.state).toBe('saving')
    t.sentFrame(STEP2) // message 1 of the new connection carries it all
    t.ack(1)
    expect(t.state).toBe('saved')
    expect(t.dirty).toBe(false)
  })
})

describe('essay session over y-websocket', () => {
  let fake: FakeServer
  let tickets = 0
  const ticket = async (): Promise<string> => `t${++tickets}`

  beforeEach(() => {
    localStorage.clear()
    setActivePinia(createPinia())
    FakeSocket.instances = []
    tickets = 0
    fake = new FakeServer()
      .on('GET', '/essays/e1/feedback', () => ({ status: 200, body: { items: [], doc_seq: 0 } }))
      .on('GET', '/essays/e1/comments', () => ({ status: 200, body: { items: [], next_cursor: null } }))
    vi.stubGlobal('fetch', fake.fetch)
  })
  afterEach(() => vi.unstubAllGlobals())

  const docSockets = () => FakeSocket.instances.filter((s) => s.url.includes('/doc?'))

  it('shows saving until [100][n] covers the typed update, then saved', async () => {
    const s = openEssaySession('e1', { ticket, Socket: FakeSocket, serverUrl: 'ws://app.test/ws/essays/e1' })
    await flush()
    const ws = docSockets()[0]
    expect(ws.url).toBe('ws://app.test/ws/essays/e1/doc?ticket=t1')
    ws.open()
    ws.receive(step1(new Y.Doc())) // the client answers with step 2: message 1
    expect(s.saveState.value).toBe('saved')
    s.text.insert(0, 'Hello')
    expect(s.saveState.value).toBe('saving')
    ws.receive(ackFrame(1))
    expect(s.saveState.value).toBe('saving')
    ws.receive(ackFrame(2))
    expect(s.saveState.value).toBe('saved')
    releaseEssaySession(s)
  })

  it('reconnects with a fresh ticket and nothing typed offline is lost', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] })
    try {
      const s = openEssaySession('e1', { ticket, Socket: FakeSocket, serverUrl: 'ws://app.test/ws/essays/e1' })
      await vi.advanceTimersByTimeAsync(0)
      const first = docSockets()[0]
      first.open()
      first.drop(1012)
      expect(s.saveState.value).toBe('offline')
      s.text.insert(0, 'typed while offline')
      expect(localStorage.getItem(BACKUP_PREFIX + 'e1')).toBeNull()
      await vi.advanceTimersByTimeAsync(600)
      expect(localStorage.getItem(BACKUP_PREFIX + 'e1')).not.toBeNull() // survives a reload too
      await vi.advanceTimersByTimeAsync(15_000)
      const second = docSockets()[1]
      expect(second.url).toMatch(/ticket=t\d+$/)
      expect(second.url).not.toBe(first.url)
      second.open()
      expect(s.saveState.value).toBe('saving')
      const server = new Y.Doc()
      second.receive(step1(server))
      // The step 2 answer carries the offline text to the server.
      const step2 = second.sent.find((f) => typeof f !== 'string' && f[0] === 0 && f[1] === 1) as Uint8Array
      const decoder = (await import('lib0/decoding')).createDecoder(step2)
      ;(await import('lib0/decoding')).readVarUint(decoder)
      syncProtocol.readSyncMessage(decoder, encoding.createEncoder(), server, null)
      expect(server.getText('content').toString()).toBe('typed while offline')
      second.receive(ackFrame(1))
      expect(s.saveState.value).toBe('saved')
      expect(localStorage.getItem(BACKUP_PREFIX + 'e1')).toBeNull()
      releaseEssaySession(s)
    } finally {
      vi.useRealTimers()
    }
  })

  it('says offline when the first connection cannot be made', async () => {
    const s = openEssaySession('e3', { ticket: async () => { throw new Error('offline') }, Socket: FakeSocket,
      serverUrl: 'ws://app.test/ws/essays/e3' })
    expect(s.saveState.value).toBe('saving')
    await flush()
    await flush()
    expect(s.saveState.value).toBe('offline')
    releaseEssaySession(s)
  })

  it('shows offline as soon as the browser loses the network and reconnects when it is back', async () => {
    const s = openEssaySession('e2', { ticket, Socket: FakeSocket, serverUrl: 'ws://app.test/ws/essays/e2' })
    await flush()
    docSockets()[0].open()
    expect(s.saveState.value).toBe('saved')
    window.dispatchEvent(new Event('offline'))
    expect(s.saveState.value).toBe('offline')
    window.dispatchEvent(new Event('online'))
    await flush()
    expect(docSockets()).toHaveLength(2)
    docSockets()[1].open()
    expect(s.saveState.value).toBe('saved')
    releaseEssaySession(s)
  })

  it('waits for a signed-in user before spending a ticket, then syncs (an ended session resumes after sign-in)', async () => {
    fake.on('POST', '/auth/token', () => ({ status: 200, body: { access_token: 'a', refresh_token: 'r', token_type: 'bearer', expires_in: 900 } }))
      .on('GET', '/me', () => ({ status: 200, body: { id: 'u', email: 'a@b.c', name: 'Ada', role: 'student', created_at: '' } }))
      .on('POST', '/auth/ws-ticket', () => ({ status: 200, body: { ticket: `fresh${fake.callsTo('POST', '/auth/ws-ticket').length}`, expires_in: 60 } }))
    const s = openEssaySession('e4', { Socket: FakeSocket, serverUrl: 'ws://app.test/ws/essays/e4' })
    s.text.insert(0, 'typed while signed out')
    await flush()
    expect(fake.callsTo('POST', '/auth/ws-ticket')).toHaveLength(0)
    expect(docSockets()).toHaveLength(0)
    await useAuthStore().login('a@b.c', 'pw')
    await flush()
    await flush()
    expect(docSockets()).toHaveLength(1)
    expect(docSockets()[0].url).toMatch(/\/doc\?ticket=fresh\d$/)
    expect(fake.callsTo('POST', '/auth/ws-ticket')[0].auth).toBe('Bearer a')
    docSockets()[0].open()
    docSockets()[0].receive(step1(new Y.Doc()))
    docSockets()[0].receive(ackFrame(1))
    expect(s.saveState.value).toBe('saved')
    releaseEssaySession(s)
  })

  it('keeps a session with unacknowledged text alive after its view lets go', async () => {
    const s = openEssaySession('e1', { ticket, Socket: FakeSocket, serverUrl: 'ws://app.test/ws/essays/e1' })
    await flush()
    s.text.insert(0, 'unsaved')
    releaseEssaySession(s)
    const again = openEssaySession('e1', { ticket, Socket: FakeSocket, serverUrl: 'ws://app.test/ws/essays/e1' })
    expect(again).toBe(s)
    expect(again.text.toString()).toBe('unsaved')
    releaseEssaySession(again)
  })
})

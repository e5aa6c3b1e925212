import { beforeEach, describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import * as encoding from 'lib0/encoding'
import * as syncProtocol from 'y-protocols/sync'
import { openClassLive } from '../src/stores/classLive'
import { FakeSocket, flush } from './fakes'

const frame = () => new Promise((resolve) => setTimeout(resolve, 80))
const row = (id: string, extra: object) => JSON.stringify({ type: 'student', student_id: id, essay_id: `e-${id}`, name: '',
  title: 't', word_count: 0, last_active_at: null, excerpt: '', feedback_counts: {}, flags: [], typing_seconds: 0, ...extra })

describe('live class view store', () => {
  beforeEach(() => { FakeSocket.instances = [] })

  it('applies a burst of rows once per frame, newest wins, names kept', async () => {
    const live = openClassLive('c1', { ticket: async () => 'tk', Socket: FakeSocket })
    await flush()
    const ws = FakeSocket.last()
    expect(ws.url).toMatch(/\/ws\/classes\/c1\/live\?ticket=tk$/)
    ws.open()
    ws.receive(row('s1', { name: 'Ada', word_count: 1 }))
    ws.receive(row('s1', { word_count: 2 }))
    ws.receive(row('s1', { word_count: 3, flags: ['large_paste'] }))
    expect(live.rows.size).toBe(0) // not before the next frame
    await frame()
    expect(live.rows.get('s1')).toMatchObject({ name: 'Ada', word_count: 3, flags: ['large_paste'] })
    live.stop()
  })

  it('shows the whole class text over one more socket, following every student essay', async () => {
    const live = openClassLive('c1', { ticket: async () => 'tk', Socket: FakeSocket })
    await flush()
    FakeSocket.last().open()
    FakeSocket.last().receive(row('s1', { name: 'Ada' }))
    FakeSocket.last().receive(row('s2', { name: 'Bo' }))
    await frame()
    await live.setDocs(true) // Yjs and the docs socket are loaded on first use
    await flush()
    expect(FakeSocket.instances).toHaveLength(2)
    const docs = FakeSocket.last()
    expect(docs.url).toMatch(/\/ws\/classes\/c1\/docs\?ticket=tk$/)
    docs.open()
    expect(docs.sent).toHaveLength(2)
    const student = new Y.Doc()
    student.getText('content').insert(0, 'Hello class')
    const e = encoding.createEncoder()
    encoding.writeVarString(e, 'e-s2')
    encoding.writeVarUint(e, 0)
    syncProtocol.writeSyncStep2(e, student)
    docs.receive(encoding.toUint8Array(e))
    await frame()
    expect(live.textRef('e-s2').value).toBe('Hello class')
    live.stop()
  })

  it('drops a removed student at once, including a row still waiting for the next frame', async () => {
    const live = openClassLive('c1', { ticket: async () => 'tk', Socket: FakeSocket })
    await flush()
    const ws = FakeSocket.last()
    ws.open()
    ws.receive(row('s1', { name: 'Ada' }))
    ws.receive(row('s2', { name: 'Bo' }))
    await frame()
    ws.receive(row('s1', { word_count: 5 })) // pending when the removal arrives
    ws.receive(JSON.stringify({ type: 'student_removed', class_id: 'c1', student_id: 's1' }))
    expect([...live.rows.keys()]).toEqual(['s2']) // not waiting for a frame
    await frame()
    expect([...live.rows.keys()]).toEqual(['s2'])
    live.stop()
  })

  it('says so when the server ends the view for good (a removed co-teacher: 4404)', async () => {
    const live = openClassLive('c1', { ticket: async () => 'tk', Socket: FakeSocket })
    await flush()
    FakeSocket.last().open()
    FakeSocket.last().drop(1006) // a network drop: it reconnects, nothing to say
    expect([live.status.value, live.refusedCode.value]).toEqual(['offline', null])
    live.stop()
    expect(live.refusedCode.value).toBe(null) // stopped by us: not a refusal
    const removed = openClassLive('c1', { ticket: async () => 'tk', Socket: FakeSocket })
    await flush()
    FakeSocket.last().open()
    FakeSocket.last().drop(4404)
    expect([removed.status.value, removed.refusedCode.value]).toEqual(['stopped', 4404])
    removed.stop()
  })
})

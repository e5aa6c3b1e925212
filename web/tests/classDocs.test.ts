import { beforeEach, describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import * as encoding from 'lib0/encoding'
import * as decoding from 'lib0/decoding'
import * as syncProtocol from 'y-protocols/sync'
import { ClassDocs, followedDoc } from '../src/realtime/classDocs'
import { ticketSocketClass } from '../src/realtime/ticketSocket'
import { FakeSocket, flush } from './fakes'

function framed(id: string, write: (e: encoding.Encoder) => void): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeVarString(e, id)
  write(e)
  return encoding.toUint8Array(e)
}

describe('whole-class text over one docs socket', () => {
  beforeEach(() => { FakeSocket.instances = [] })

  it('follows each essay with [id][sync step 1] on one socket and shows the text the server sends', async () => {
    const texts = new Map<string, string>()
    const docs = new ClassDocs('ws://app.test/ws/classes/c1/docs', ticketSocketClass(async () => 'tk', FakeSocket), {
      text: (id) => texts.set(id, docs.textOf(id)), denied: () => undefined,
    })
    docs.follow('e1')
    docs.follow('e2')
    await flush()
    expect(FakeSocket.instances).toHaveLength(1)
    const ws = FakeSocket.last()
    expect(ws.url).toBe('ws://app.test/ws/classes/c1/docs?ticket=tk')
    ws.open()
    const followed = ws.sent.map((f) => decoding.readVarString(decoding.createDecoder(f as Uint8Array)))
    expect(followed).toEqual(['e1', 'e2'])
    const first = decoding.createDecoder(ws.sent[0] as Uint8Array)
    decoding.readVarString(first)
    expect([decoding.readVarUint(first), decoding.readVarUint(first)]).toEqual([0, 0]) // sync, step 1

    const student = new Y.Doc()
    student.getText('content').insert(0, '<script>alert(1)</script> hello')
    ws.receive(framed('e1', (e) => { encoding.writeVarUint(e, 0); syncProtocol.writeSyncStep2(e, student) }))
    expect(texts.get('e1')).toBe('<script>alert(1)</script> hello')
    expect(ws.sent).toHaveLength(2) // read-only: nothing written back
    docs.stop()
  })

  it('keeps each followed essay in a doc named by the essay id, not by a random UUID', () => {
    expect(followedDoc('e1').guid).toBe('e1')
  })

  it('stops following an essay the server refuses, and the socket stays', async () => {
    const denied: string[] = []
    const docs = new ClassDocs('ws://x/docs', ticketSocketClass(async () => 'tk', FakeSocket), {
      text: () => undefined, denied: (id) => denied.push(id),
    })
    docs.follow('bad')
    await flush()
    FakeSocket.last().open()
    FakeSocket.last().receive(framed('bad', (e) => { encoding.writeVarUint(e, 2); encoding.writeVarUint(e, 0); encoding.writeVarString(e, 'no such essay in this class') }))
    expect(denied).toEqual(['bad'])
    const unwatch = decoding.createDecoder(FakeSocket.last().sent[1] as Uint8Array)
    expect(decoding.readVarString(unwatch)).toBe('bad')
    expect(decoding.readVarUint(unwatch)).toBe(101)
    docs.stop()
  })
})

import { beforeEach, describe, expect, it, vi } from 'vitest'
import * as Y from 'yjs'
import * as encoding from 'lib0/encoding'
import * as syncProtocol from 'y-protocols/sync'
import { nextTick, ref } from 'vue'
import { applyPendingRows, openClassLive, revealedCount, UPDATES_PER_FRAME } from '../src/stores/classLive'
import type { LiveRow } from '../src/api/types'
import { FakeSocket, flush } from './fakes'

// nextTask as in the app, or held until the test releases it (`held.hold`).
const held = vi.hoisted(() => ({ hold: false, release: [] as (() => void)[] }))
vi.mock('../src/lib/nextTask', () => ({
  nextTask: () => new Promise<void>((resolve) => (held.hold ? held.release.push(resolve) : setTimeout(resolve, 0))),
}))

// Each use of the whole-class text's chunk (Yjs and the docs socket) once imported, counted.
const imported = vi.hoisted(() => ({ classDocs: 0 }))
vi.mock('../src/realtime/classDocs', async (importOriginal) => {
  const real = await importOriginal<typeof import('../src/realtime/classDocs')>()
  return { ...real, get ClassDocs() { imported.classDocs += 1; return real.ClassDocs } }
})

const frame = () => new Promise((resolve) => setTimeout(resolve, 80))
const row = (id: string, extra: object) => JSON.stringify({ type: 'student', student_id: id, essay_id: `e-${id}`, name: '',
  title: 't', word_count: 0, last_active_at: null, excerpt: '', feedback_counts: {}, flags: [], typing_seconds: 0, ...extra })

/** Runs `body` with animation frames held in a list it steps by hand, and an open live socket. */
async function withHeldFrames(body: (live: ReturnType<typeof openClassLive>, frames: FrameRequestCallback[]) => Promise<void>) {
  const frames: FrameRequestCallback[] = []
  vi.stubGlobal('requestAnimationFrame', (cb: FrameRequestCallback) => frames.push(cb))
  try {
    const live = openClassLive('c1', { ticket: async () => 'tk', Socket: FakeSocket })
    await flush()
    FakeSocket.last().open()
    await body(live, frames)
    live.stop()
  } finally {
    vi.unstubAllGlobals()
  }
}

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

  it('adds at most a frame\'s share of new students per frame, updates of shown ones all at once', () => {
    const live = (id: string, words = 0) => JSON.parse(row(id, { name: id, word_count: words })) as LiveRow
    const rows = new Map<string, LiveRow>([['s0', live('s0')]])
    const pending = new Map<string, LiveRow>()
    for (let i = 1; i <= 5; i++) pending.set(`s${i}`, live(`s${i}`))
    pending.set('s0', live('s0', 7)) // arrives last, still applied in the first frame
    expect(applyPendingRows(pending, rows, 2)).toBe(true)
    expect([...rows.keys()]).toEqual(['s0', 's1', 's2'])
    expect(rows.get('s0')?.word_count).toBe(7)
    pending.set('s1', live('s1', 3)) // an update of a student shown in the last frame
    expect(applyPendingRows(pending, rows, 2)).toBe(true)
    expect([...rows.keys()]).toEqual(['s0', 's1', 's2', 's3', 's4'])
    expect(rows.get('s1')?.word_count).toBe(3)
    expect(applyPendingRows(pending, rows, 2)).toBe(false)
    expect([...rows.keys()]).toEqual(['s0', 's1', 's2', 's3', 's4', 's5'])
    expect(pending.size).toBe(0)
  })

  it('shows a burst of new students one per frame, all of them in the end', () =>
    withHeldFrames(async (live, frames) => {
      for (let i = 0; i < 25; i++) FakeSocket.last().receive(row(`s${i}`, { name: `S${i}` }))
      const sizes: number[] = []
      while (frames.length) {
        frames.shift()!(0)
        sizes.push(live.rows.size)
      }
      expect(sizes).toEqual(Array.from({ length: 25 }, (_, i) => i + 1))
    }))

  it('applies at most a frame\'s share of updates of shown students, the rest in the next frames, newest wins', () => {
    const live = (id: string, words = 0) => JSON.parse(row(id, { name: id, word_count: words })) as LiveRow
    const rows = new Map<string, LiveRow>()
    for (let i = 0; i < 5; i++) rows.set(`s${i}`, live(`s${i}`))
    const pending = new Map<string, LiveRow>()
    for (let i = 0; i < 5; i++) pending.set(`s${i}`, live(`s${i}`, 10 + i))
    pending.set('s5', live('s5')) // a new student: its own share
    expect(applyPendingRows(pending, rows, 1, 2)).toBe(true)
    expect([...rows.values()].map((r) => r.word_count)).toEqual([10, 11, 0, 0, 0, 0])
    pending.set('s2', live('s2', 42)) // a newer row of one still waiting
    expect(applyPendingRows(pending, rows, 1, 2)).toBe(true)
    expect(applyPendingRows(pending, rows, 1, 2)).toBe(false)
    expect([...rows.values()].map((r) => r.word_count)).toEqual([10, 11, 42, 13, 14, 0])
  })

  it('a burst of every student\'s row is shown over a few frames, each student\'s newest', () =>
    withHeldFrames(async (live, frames) => {
      for (let i = 0; i < 20; i++) FakeSocket.last().receive(row(`s${i}`, { name: `S${i}` }))
      while (frames.length) frames.shift()!(0)
      expect(live.rows.size).toBe(20)
      for (let i = 0; i < 20; i++) FakeSocket.last().receive(row(`s${i}`, { word_count: 1 }))
      for (let i = 0; i < 20; i++) FakeSocket.last().receive(row(`s${i}`, { word_count: 2 }))
      const counts: number[] = []
      while (frames.length) {
        frames.shift()!(0)
        counts.push([...live.rows.values()].filter((r) => r.word_count === 2).length)
      }
      expect(counts).toEqual([UPDATES_PER_FRAME, 2 * UPDATES_PER_FRAME, 20])
      expect([...live.rows.values()].every((r) => r.name.startsWith('S'))).toBe(true)
    }))

  it('applies at most a frame\'s share of whole-class text changes a frame, the newest text of each', () =>
    withHeldFrames(async (live, frames) => {
      for (let i = 0; i < 20; i++) FakeSocket.last().receive(row(`s${i}`, { name: `S${i}` }))
      while (frames.length) frames.shift()!(0)
      await live.setDocs(true)
      await flush()
      const docs = FakeSocket.last()
      docs.open()
      const texts = Array.from({ length: 20 }, () => new Y.Doc())
      const send = (i: number, words: string) => {
        const before = Y.encodeStateVector(texts[i])
        texts[i].getText('content').insert(texts[i].getText('content').length, words)
        const e = encoding.createEncoder()
        encoding.writeVarString(e, `e-s${i}`)
        encoding.writeVarUint(e, 0)
        syncProtocol.writeUpdate(e, Y.encodeStateAsUpdate(texts[i], before))
        docs.receive(encoding.toUint8Array(e))
      }
      for (let i = 0; i < 20; i++) send(i, 'Hello')
      for (let i = 0; i < 20; i++) send(i, ' class')
      const shown: number[] = []
      while (frames.length) {
        frames.shift()!(0)
        shown.push(Array.from({ length: 20 }, (_, i) => live.textRef(`e-s${i}`).value).filter((t) => t === 'Hello class').length)
      }
      expect(shown).toEqual([UPDATES_PER_FRAME, 2 * UPDATES_PER_FRAME, 20])
    }))

  it('opens the live socket in a task after the one that set the view up; not at all if stopped before', async () => {
    held.hold = true
    try {
      const live = openClassLive('c1', { ticket: async () => 'tk', Socket: FakeSocket })
      await flush()
      expect(FakeSocket.instances).toHaveLength(0)
      held.release.shift()!()
      await flush()
      expect(FakeSocket.instances).toHaveLength(1)
      expect(FakeSocket.last().url).toMatch(/\/ws\/classes\/c1\/live\?ticket=tk$/)
      live.stop()
      const left = openClassLive('c2', { ticket: async () => 'tk', Socket: FakeSocket })
      left.stop() // the view unmounted before the socket's task
      held.release.shift()!()
      await flush()
      expect(FakeSocket.instances).toHaveLength(1)
    } finally {
      held.hold = false
      held.release = []
    }
  })

  it('reveals the whole-class text blocks a few per frame once on, all in the end, none when off', async () => {
    const frames: FrameRequestCallback[] = []
    vi.stubGlobal('requestAnimationFrame', (cb: FrameRequestCallback) => frames.push(cb))
    try {
      const on = ref(false)
      const total = ref(12)
      const shown = revealedCount(() => total.value, () => on.value, 5)
      expect(shown.value).toBe(0)
      on.value = true
      await nextTick()
      expect(shown.value).toBe(0) // not in the task that turned it on
      const sizes: number[] = []
      while (frames.length) {
        frames.shift()!(0)
        sizes.push(shown.value)
      }
      expect(sizes).toEqual([5, 10, 12])
      total.value = 14 // a student starts an essay
      await nextTick()
      frames.shift()!(0)
      expect(shown.value).toBe(14)
      on.value = false
      await nextTick()
      expect(shown.value).toBe(0)
      expect(frames).toHaveLength(0)
    } finally {
      vi.unstubAllGlobals()
    }
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

  it('follows a student whose row is still waiting for its frame when the whole-class text is turned on', () =>
    withHeldFrames(async (live) => {
      FakeSocket.last().receive(row('s1', { name: 'Ada' })) // no frame yet: the row waits
      await live.setDocs(true)
      await flush()
      const docs = FakeSocket.last()
      docs.open()
      expect(docs.sent).toHaveLength(1) // e-s1 is followed although its card is not shown yet
    }))

  it('requests Yjs\'s chunk a task after the click, and makes the docs socket and follows the essays in a task after the one that ran it', () =>
    withHeldFrames(async (live) => {
      FakeSocket.last().receive(row('s1', { name: 'Ada' }))
      const before = imported.classDocs
      held.hold = true
      try {
        const on = live.setDocs(true)
        expect(live.docsOn.value).toBe(true) // the button, at once
        await vi.waitUntil(() => held.release.length > 0)
        await flush()
        expect(imported.classDocs).toBe(before) // not in the click's task
        held.release.shift()!()
        await vi.waitUntil(() => held.release.length > 0) // the chunk has run
        await flush()
        expect(imported.classDocs).toBe(before + 1)
        expect(FakeSocket.instances).toHaveLength(1) // the live socket only
        held.release.shift()!()
        await on
        await flush()
        expect(FakeSocket.instances).toHaveLength(2)
        FakeSocket.last().open()
        expect(FakeSocket.last().sent).toHaveLength(1)
      } finally {
        held.hold = false
        held.release = []
      }
    }))

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

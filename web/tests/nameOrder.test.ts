import { afterEach, describe, expect, it, vi } from 'vitest'
import { compareNamesFast, plainName } from '../src/lib/nameOrder'
import type { LiveRow } from '../src/api/types'
import { FakeSocket, flush } from './fakes'

const root = new Intl.Collator('en')
const sign = (n: number) => Math.sign(n)

/** A small seeded generator (the same strings every run). */
function* strings(count: number, alphabet: string, seed = 7): Generator<string> {
  let x = seed
  const next = () => (x = (x * 1103515245 + 12345) % 2 ** 31) / 2 ** 31
  for (let i = 0; i < count; i++) {
    const len = Math.floor(next() * 7)
    let s = ''
    for (let j = 0; j < len; j++) s += alphabet[Math.floor(next() * alphabet.length)]
    yield s
  }
}

/** Count the collators made from now on (a stand-in for Intl.Collator that makes real ones). */
function countCollators(): { count: number } {
  const Real = Intl.Collator
  const made = { count: 0 }
  function Collator(...args: ConstructorParameters<typeof Intl.Collator>): Intl.Collator {
    made.count += 1
    return new Real(...args)
  }
  vi.stubGlobal('Intl', { ...Intl, Collator })
  return made
}

describe('name order without a collator', () => {
  afterEach(() => vi.unstubAllGlobals())

  it('orders every pair of printable ASCII characters as the root collator does', () => {
    const chars = Array.from({ length: 95 }, (_, i) => String.fromCharCode(32 + i))
    for (const a of chars) for (const b of chars) expect([a, b, sign(compareNamesFast(a, b, 'en')!)]).toEqual([a, b, sign(root.compare(a, b))])
  })

  it('orders names and random ASCII strings as the root collator does (case, spaces, punctuation, digits, prefixes)', () => {
    const names = ['Ada', 'ada', 'ADA', 'Ada Lovelace', 'Ada-Marie', "O'Brien", 'Obrien', 'O Brien', 'Student 01', 'Student 1',
      'Student 10', 'Student 02', 'de la Cruz', 'Dean', 'van Dijk', 'Van Dijk', 'Zoe', 'zoe', 'Zoë'.slice(0, 2), '', 'A.J.', 'AJ']
    const pool = [...names, ...strings(400, "aAbBzZ -'._09~"), ...strings(200, ' !"#$%&\'()*+,-./:;<=>?@[\\]^_`{|}~aZ5')]
    expect(new Set(pool).size).toBeGreaterThan(400)
    for (const a of pool) for (const b of pool) {
      const fast = compareNamesFast(a, b, 'en')
      if (sign(fast!) !== sign(root.compare(a, b))) expect([a, b, fast]).toEqual([a, b, root.compare(a, b)])
    }
    expect(names.slice().sort((a, b) => compareNamesFast(a, b, 'en')!)).toEqual(names.slice().sort(root.compare))
  })

  it('leaves to the collator a name that is not plain ASCII, and a language that collates ASCII its own way', () => {
    expect(plainName('Zoë')).toBe(false)
    expect(compareNamesFast('Zoë', 'Zoe', 'en')).toBeNull()
    expect(compareNamesFast('Ada', 'Łucja', 'en')).toBeNull()
    expect(compareNamesFast('Aase', 'Bo', 'da')).toBeNull() // Danish: "aa" is "å", after "z"
    expect(compareNamesFast('Ada', 'Bo', 'lt')).toBeNull()
    expect(compareNamesFast('Ada', 'Bo', 'en')).toBeLessThan(0)
  })

  it('the live store makes the collator in a task of its own once a name needs it, never for plain names', async () => {
    vi.resetModules()
    const made = countCollators()
    const frames: FrameRequestCallback[] = []
    vi.stubGlobal('requestAnimationFrame', (cb: FrameRequestCallback) => frames.push(cb))
    const { openClassLive } = await import('../src/stores/classLive')
    const live = openClassLive('c1', { ticket: async () => 'tk', Socket: FakeSocket })
    await flush()
    await flush()
    const ws = FakeSocket.last()
    ws.open()
    const row = (id: string, name: string) => JSON.stringify({ type: 'student', student_id: id, essay_id: null, name,
      word_count: 0, last_active_at: null, excerpt: '', feedback_counts: {}, flags: [], typing_seconds: 0 })
    ws.receive(row('s1', 'Bo'))
    ws.receive(row('s2', 'Ada'))
    await flush()
    while (frames.length) frames.shift()!(0)
    expect(made.count).toBe(0)
    ws.receive(row('s3', 'Zoë'))
    expect(made.count).toBe(0) // not in the message's task
    await flush()
    expect(made.count).toBe(1) // in a task before the frame that sorts the new card in
    while (frames.length) frames.shift()!(0)
    expect(live.rows.size).toBe(3)
    expect(made.count).toBe(1)
    live.stop()
  })

  it('the live class view sorts plain names without making a collator, and makes one for other names', async () => {
    vi.resetModules()
    const made = countCollators()
    const { arrangeRows } = await import('../src/stores/classLive')
    const row = (name: string) => ({ student_id: name, name, word_count: 0, last_active_at: null }) as unknown as LiveRow
    const names = (rows: LiveRow[]) => arrangeRows(rows, 'name', '').map((r) => r.name)
    expect(names([row('bea'), row('Al'), row('al'), row('Cy')])).toEqual(['al', 'Al', 'bea', 'Cy'])
    expect(made.count).toBe(0)
    expect(names([row('Zoë'), row('Zoe'), row('Åsa'), row('Al')])).toEqual(['Al', 'Åsa', 'Zoe', 'Zoë'])
    expect(made.count).toBe(1)
  })
})

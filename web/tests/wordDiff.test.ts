import { describe, expect, it } from 'vitest'
import { wordDiff } from '../src/lib/wordDiff'

describe('revision word diff', () => {
  it('marks inserted and deleted words and keeps the rest', () => {
    expect(wordDiff('I beleive it is good.', 'I believe it is very good.')).toEqual([
      { kind: 'same', text: 'I ' },
      { kind: 'del', text: 'beleive' },
      { kind: 'add', text: 'believe' },
      { kind: 'same', text: ' it is' },
      { kind: 'add', text: ' very' },
      { kind: 'same', text: ' good.' },
    ])
  })

  it('rebuilds both texts from its parts', () => {
    const before = 'one two three\nfour five'
    const after = 'zero one three\nfour six five seven'
    const parts = wordDiff(before, after)
    expect(parts.filter((p) => p.kind !== 'add').map((p) => p.text).join('')).toBe(before)
    expect(parts.filter((p) => p.kind !== 'del').map((p) => p.text).join('')).toBe(after)
  })
})

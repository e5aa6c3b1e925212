import { describe, expect, it } from 'vitest'
import { EditorState } from '@codemirror/state'
import { marksField, setMarks, spanOf } from '../src/components/feedbackMarks'
import { firstParagraph, locate, toCodePointIndex } from '../src/lib/feedbackMap'

const item = (start: number, end: number, quote: string) => ({ id: 'f1', kind: 'spelling', start, end, quote })

describe('feedback offset mapping', () => {
  it('keeps the offsets while the text there still equals the quote', () => {
    expect(locate('I beleive it.', item(2, 9, 'beleive'))).toEqual({ from: 2, to: 9 })
  })

  it('follows the quote when text was typed before it after the analysis', () => {
    expect(locate('Yes, I beleive it.', item(2, 9, 'beleive'))).toEqual({ from: 7, to: 14 })
  })

  it('picks the occurrence nearest to the old offset', () => {
    const text = 'teh cat and teh dog and teh end'
    expect(locate(text, item(12, 15, 'teh'))).toEqual({ from: 12, to: 15 })
    expect(locate('xx ' + text, item(12, 15, 'teh'))).toEqual({ from: 15, to: 18 })
  })

  it('drops an item whose quoted text is gone', () => {
    expect(locate('I believe it.', item(2, 9, 'beleive'))).toBeNull()
  })

  it('maps server code-point offsets past an emoji to the editor text by quote', () => {
    // Python counts 😀 as 1, the editor (UTF-16) as 2.
    expect(locate('😀 teh', item(2, 5, 'teh'))).toEqual({ from: 3, to: 6 })
    expect(toCodePointIndex('😀 teh', 3)).toBe(2)
  })

  it('moves marks with later edits and drops a mark whose text was edited', () => {
    let state = EditorState.create({ doc: 'I beleive it.', extensions: [marksField] })
    state = state.update({ effects: setMarks.of([item(2, 9, 'beleive')]) }).state
    expect(spanOf(state, 'f1')).toEqual({ from: 2, to: 9 })
    state = state.update({ changes: { from: 0, insert: 'Yes, ' } }).state
    expect(spanOf(state, 'f1')).toEqual({ from: 7, to: 14 })
    state = state.update({ changes: { from: 9, to: 11, insert: 'li' } }).state // beleive -> believe
    expect(spanOf(state, 'f1')).toBeNull()
  })

  it('comments without a selection cover the first paragraph', () => {
    expect(firstParagraph('\n  First one.  \nSecond.')).toEqual({ from: 3, to: 13 })
    expect(firstParagraph('   ')).toBeNull()
  })
})

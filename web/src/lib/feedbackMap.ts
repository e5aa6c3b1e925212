/**
 * Placing feedback on the text the student sees now.
 *
 * An item's `start`/`end` refer to the text at the event's `doc_seq`, which may be older than the
 * editor's text (the student kept typing) and count code points where the editor counts UTF-16
 * units. So we trust the item's `quote`: the range is kept when the text there still equals the
 * quote, otherwise we take the occurrence of the quote nearest to the old start, and drop the mark
 * when the quote is gone. Once placed, marks move with later edits (CodeMirror maps them through
 * each change) and a mark whose text was edited is dropped until the server's next feedback.
 */

export interface Quoted { id: string; start: number; end: number; quote: string }
export interface Span { from: number; to: number }

export function locate(text: string, item: Quoted): Span | null {
  const { start, end, quote } = item
  if (!quote) return null
  if (start >= 0 && end <= text.length && text.slice(start, end) === quote) return { from: start, to: end }
  let best = -1
  let bestDistance = Infinity
  for (let i = text.indexOf(quote); i !== -1; i = text.indexOf(quote, i + 1)) {
    const distance = Math.abs(i - start)
    if (distance < bestDistance) {
      best = i
      bestDistance = distance
    } else if (i > start) {
      break // occurrences only get further away from here
    }
  }
  return best < 0 ? null : { from: best, to: best + quote.length }
}

/** Move a placed span through an edit (`mapPos` from the editor) and keep it only if its text is intact. */
export function remap(span: Span, quote: string, text: string, mapPos: (pos: number, assoc: number) => number): Span | null {
  const from = mapPos(span.from, 1)
  const to = mapPos(span.to, -1)
  if (to <= from || text.slice(from, to) !== quote) return null
  return { from, to }
}

/** A UTF-16 index (the editor's) as a code point index (the server's Python string offsets). */
export function toCodePointIndex(text: string, index: number): number {
  let n = 0
  for (let i = 0; i < index && i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) i++
    n++
  }
  return n
}

/** The range a comment with no selection is about: the first non-empty paragraph. */
export function firstParagraph(text: string): Span | null {
  const match = /\S[^\n]*/.exec(text)
  if (!match) return null
  const from = match.index
  return { from, to: from + match[0].trimEnd().length }
}

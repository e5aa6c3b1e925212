/** CodeMirror extension drawing feedback and comments as underlines (`fb-mark fb-<kind>`). */
import { StateEffect, StateField, type EditorState, type Extension } from '@codemirror/state'
import { Decoration, EditorView, type DecorationSet } from '@codemirror/view'
import { locate, remap, type Span } from '../lib/feedbackMap'

export interface Markable { id: string; kind: string; start: number; end: number; quote: string }
export interface Placed { item: Markable; span: Span }

/** Replace the whole set of marks (items are placed against the editor's current text). */
export const setMarks = StateEffect.define<Markable[]>()

function place(text: string, items: Markable[]): Placed[] {
  const out: Placed[] = []
  for (const item of items) {
    const span = locate(text, item)
    if (span) out.push({ item, span })
  }
  return out.sort((a, b) => a.span.from - b.span.from || a.span.to - b.span.to)
}

export const marksField = StateField.define<Placed[]>({
  create: () => [],
  update(placed, tr) {
    let next = placed
    if (tr.docChanged) {
      const text = tr.newDoc.toString()
      next = []
      for (const p of placed) {
        const span = remap(p.span, p.item.quote, text, (pos, assoc) => tr.changes.mapPos(pos, assoc))
        if (span) next.push({ item: p.item, span })
      }
    }
    for (const effect of tr.effects) {
      if (effect.is(setMarks)) next = place(tr.newDoc.toString(), effect.value)
    }
    return next
  },
  provide: (field) => EditorView.decorations.from(field, (placed): DecorationSet => {
    return Decoration.set(placed.map((p) => Decoration.mark({
      class: `fb-mark fb-${p.item.kind.replace(/[^a-z]/g, '')}`,
      attributes: { 'data-feedback-id': p.item.id },
    }).range(p.span.from, p.span.to)), true)
  }),
})

/** Where an item is now, or null when its text is gone or edited. */
export function spanOf(state: EditorState, id: string): Span | null {
  return state.field(marksField, false)?.find((p) => p.item.id === id)?.span ?? null
}

export const feedbackMarks: Extension = marksField

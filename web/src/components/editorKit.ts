/**
 * Everything CodeMirror: the editor's modules (CodeMirror 6, y-codemirror.next, the feedback marks)
 * and how EssayEditor builds one. A chunk of its own, loaded through `loadEditorKit()`: its
 * evaluation (~40% of the essay session chunk's) is then a task of its own, not part of the task
 * that runs the editor view's chunk.
 */
import { EditorState } from '@codemirror/state'
import { EditorView, keymap, placeholder } from '@codemirror/view'
import { defaultKeymap } from '@codemirror/commands'
import { yCollab, yUndoManagerKeymap } from 'y-codemirror.next'
import * as Y from 'yjs'
import type { Awareness } from 'y-protocols/awareness'
import { feedbackMarks, setMarks, spanOf, type Markable } from './feedbackMarks'

export { EditorView, setMarks, spanOf }

export interface EditorOptions {
  text: Y.Text
  awareness: Awareness
  marks: Markable[]
  readOnly?: boolean
  label: string
  placeholder?: string
}

const editorTheme = EditorView.theme({
  '&': { minHeight: '18rem', border: '1px solid #767f8a', borderRadius: '4px', background: '#fff', fontSize: '1.05rem' },
  '.cm-content': { padding: '0.75rem', fontFamily: 'Georgia, "Times New Roman", serif', lineHeight: '1.7', caretColor: '#1b1f24' },
  '&.cm-focused': { outline: '3px solid #f2a900', outlineOffset: '2px' },
  '.cm-placeholder': { color: '#5f6670' },
})

/**
 * CodeMirror bound to `text` (an undo manager of its own unless read-only), not yet in the page:
 * the caller puts `view.dom` in the document (`attachEditor`), in a later task if it likes (the
 * build and the first layout of the editor were one ~30 ms-of-CPU task together).
 */
export function buildEditor(opts: EditorOptions): EditorView {
  const undoManager = opts.readOnly ? undefined : new Y.UndoManager(opts.text)
  const state = EditorState.create({
    doc: opts.text.toString(),
    extensions: [
      keymap.of([...yUndoManagerKeymap, ...defaultKeymap]),
      EditorView.lineWrapping,
      EditorState.readOnly.of(!!opts.readOnly),
      EditorView.contentAttributes.of({
        'aria-label': opts.label, 'aria-multiline': 'true', role: 'textbox',
        ...(opts.readOnly ? { 'aria-readonly': 'true' } : {}),
      }),
      placeholder(opts.placeholder ?? ''),
      yCollab(opts.text, opts.awareness, { undoManager: undoManager ?? false }),
      feedbackMarks,
      editorTheme,
    ],
  })
  // The first marks go into the state before the view exists: no second update of a new view.
  return new EditorView({ state: state.update({ effects: setMarks.of(opts.marks) }).state })
}

/** Put a view made by `buildEditor` in `parent`, and have it measure itself there. */
export function attachEditor(view: EditorView, parent: HTMLElement): void {
  parent.appendChild(view.dom)
  view.requestMeasure()
}

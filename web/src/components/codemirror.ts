/**
 * Everything CodeMirror for EssayEditor, in its own chunk: the editor screen renders (title, save
 * state, feedback panel) and its sockets start while this loads, and CodeMirror's code is compiled
 * and run in a task of its own instead of in the screen's one long start-up task.
 */
import { EditorState } from '@codemirror/state'
import { EditorView, keymap, placeholder as placeholderExt } from '@codemirror/view'
import { defaultKeymap } from '@codemirror/commands'
import { yCollab, yUndoManagerKeymap } from 'y-codemirror.next'
import * as Y from 'yjs'
import type { Awareness } from 'y-protocols/awareness'
import { feedbackMarks, setMarks, spanOf, type Markable } from './feedbackMarks'

export { setMarks, spanOf }
export type { EditorView }

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

export function createEditor(parent: HTMLElement, opts: EditorOptions): EditorView {
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
      placeholderExt(opts.placeholder ?? ''),
      yCollab(opts.text, opts.awareness, { undoManager: undoManager ?? false }),
      feedbackMarks,
      editorTheme,
    ],
  })
  const view = new EditorView({ state, parent })
  view.dispatch({ effects: setMarks.of(opts.marks) })
  return view
}

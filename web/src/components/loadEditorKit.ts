/**
 * The editor's CodeMirror chunk (editorKit.ts), fetched once. The editor and review routes start it
 * with their own chunk (router/index.ts), so it downloads alongside them and runs in a task of its
 * own; EssayEditor waits for it. A failed load is forgotten, so the next call tries again.
 */
export type EditorKit = typeof import('./editorKit')

let pending: Promise<EditorKit> | null = null

export function loadEditorKit(): Promise<EditorKit> {
  pending ??= import('./editorKit').catch((err: unknown) => { pending = null; throw err })
  return pending
}

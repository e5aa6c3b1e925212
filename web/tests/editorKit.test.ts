import { afterEach, describe, expect, it, vi } from 'vitest'
import { mount } from '@vue/test-utils'
import * as Y from 'yjs'
import { Awareness } from 'y-protocols/awareness'

// CodeMirror's chunk (editorKit.ts) through a loader the test controls: it fails until told not to.
const kit = vi.hoisted(() => ({ fail: true, calls: 0 }))
vi.mock('../src/components/loadEditorKit', async () => {
  const real = await import('../src/components/editorKit')
  return {
    loadEditorKit: () => {
      kit.calls += 1
      return kit.fail ? Promise.reject(new Error('chunk gone after a deploy')) : Promise.resolve(real)
    },
  }
})

const { default: EssayEditor } = await import('../src/components/EssayEditor.vue')
const { routes } = await import('../src/router')

describe('the editor kit: CodeMirror in a chunk of its own', () => {
  afterEach(() => {
    document.body.innerHTML = ''
    kit.fail = true
    kit.calls = 0
  })

  it('an editor whose CodeMirror chunk cannot load says so, keeps no half editor, and Retry builds it', async () => {
    const doc = new Y.Doc()
    const text = doc.getText('content')
    text.insert(0, 'Kept text')
    const w = mount(EssayEditor, { props: { text, awareness: new Awareness(doc), marks: [], label: 'Your essay' },
      attachTo: document.body })
    await vi.waitFor(() => expect(w.find('[data-testid="editor-load-error"]').exists()).toBe(true))
    expect(w.get('[role="alert"]').text()).toContain("Couldn't load the editor")
    expect(w.vm.ready()).toBe(false)
    expect(w.emitted('ready')).toBeUndefined()
    expect(w.find('.cm-content').exists()).toBe(false)

    kit.fail = false
    await w.get('[data-testid="editor-retry"]').trigger('click')
    await vi.waitFor(() => expect(w.vm.ready()).toBe(true))
    expect(w.emitted('ready')).toHaveLength(1)
    expect(w.find('[data-testid="editor-load-error"]').exists()).toBe(false)
    expect(w.get('.cm-content').text()).toBe('Kept text')
    w.unmount()
  })

  it('the editor and review routes start CodeMirror\'s chunk with their own, other routes do not', async () => {
    kit.fail = false
    const preload = (name: string) => (routes.find((r) => r.name === name)?.component as { preload: () => Promise<unknown> }).preload()
    const task = () => new Promise<void>((resolve) => setTimeout(resolve, 0))
    await preload('classes')
    await task()
    expect(kit.calls).toBe(0)
    const editor = preload('editor')
    expect(kit.calls).toBe(0) // not in the task that requests the screen's chunk: the next one
    await task()
    expect(kit.calls).toBe(1)
    await editor
    await preload('review')
    await task()
    expect(kit.calls).toBe(2)
  })
})

import { afterEach, describe, expect, it, vi } from 'vitest'
import { mount } from '@vue/test-utils'
import { defineComponent, h } from 'vue'
import { asyncPanel, chunkLoadFailed, prefetchWhenIdle, reportChunkErrors } from '../src/lib/asyncPanel'

// A panel in a chunk of its own that may be gone (a deploy removed it) or unreachable (offline).
const Revisions = defineComponent({
  props: { essayId: { type: String, required: true } },
  setup: (props) => () => h('p', { 'data-testid': 'revisions' }, `revisions of ${props.essayId}`),
})
const gone = () => new TypeError('Failed to fetch dynamically imported module: /assets/HistoryPanel-abc.js')
const flush = () => new Promise<void>((resolve) => setTimeout(resolve, 0))

describe('async panels: loading, error, retry, prefetch', () => {
  afterEach(() => {
    document.body.innerHTML = ''
    vi.restoreAllMocks()
  })

  it('says it is loading, then shows the panel with its props', async () => {
    let resolve!: (m: { default: typeof Revisions }) => void
    const loader = vi.fn(() => new Promise<{ default: typeof Revisions }>((r) => { resolve = r }))
    const Panel = asyncPanel(loader, 'revisions', { delayMs: 0 })
    const w = mount(Panel, { props: { essayId: 'e1' }, attachTo: document.body })
    await flush()
    expect(w.get('[role="status"]').text()).toBe('Loading revisions…')
    resolve({ default: Revisions })
    await vi.waitFor(() => expect(w.find('[data-testid="revisions"]').exists()).toBe(true))
    expect(w.get('[data-testid="revisions"]').text()).toBe('revisions of e1')
    expect(w.find('[role="status"]').exists()).toBe(false)
    w.unmount()
  })

  it('retries a failed chunk with backoff, then shows an alert whose Retry loads it again', async () => {
    vi.spyOn(console, 'error').mockImplementation(() => undefined)
    let online = false
    const loader = vi.fn(async () => {
      if (!online) throw gone()
      return { default: Revisions }
    })
    const Panel = asyncPanel(loader, 'revisions', { retries: 2, backoffMs: 10, delayMs: 0 })
    const w = mount(Panel, { props: { essayId: 'e1' }, attachTo: document.body })
    // The first try and two automatic retries (10 ms, then 20 ms later), then the error state.
    await vi.waitFor(() => expect(w.find('[role="alert"]').exists()).toBe(true), { timeout: 2000 })
    expect(loader).toHaveBeenCalledTimes(3)
    expect(w.get('[role="alert"]').text()).toContain("Couldn't load revisions: check your connection.")
    const retry = w.get('[role="alert"] button')
    expect(retry.text()).toBe('Retry loading revisions')
    // Still offline: Retry really fetches again (not Vue's cached failure), and fails again.
    await retry.trigger('click')
    await vi.waitFor(() => expect(loader).toHaveBeenCalledTimes(6), { timeout: 2000 })
    await vi.waitFor(() => expect(w.find('[role="alert"]').exists()).toBe(true), { timeout: 2000 })
    online = true
    await w.get('[role="alert"] button').trigger('click')
    await vi.waitFor(() => expect(w.find('[data-testid="revisions"]').exists()).toBe(true), { timeout: 2000 })
    expect(w.find('[role="alert"]').exists()).toBe(false)
    expect(loader).toHaveBeenCalledTimes(7)
    w.unmount()
  })

  it('a prefetched chunk is fetched once and shown from it; a failed prefetch is tried again on show', async () => {
    const loader = vi.fn(async () => ({ default: Revisions }))
    const Panel = asyncPanel(loader, 'revisions')
    await Panel.prefetch()
    await Panel.prefetch()
    expect(loader).toHaveBeenCalledTimes(1)
    const w = mount(Panel, { props: { essayId: 'e2' }, attachTo: document.body })
    await vi.waitFor(() => expect(w.find('[data-testid="revisions"]').exists()).toBe(true))
    expect(loader).toHaveBeenCalledTimes(1)
    w.unmount()

    let online = false
    const flaky = vi.fn(async () => {
      if (!online) throw gone()
      return { default: Revisions }
    })
    const Flaky = asyncPanel(flaky, 'revisions')
    await expect(Flaky.prefetch()).resolves.toBeUndefined() // swallowed
    online = true
    const v = mount(Flaky, { props: { essayId: 'e3' }, attachTo: document.body })
    await vi.waitFor(() => expect(v.find('[data-testid="revisions"]').exists()).toBe(true))
    expect(flaky).toHaveBeenCalledTimes(2)
    v.unmount()
  })

  it("reports Vite's preload error (a removed chunk) instead of failing silently", () => {
    vi.spyOn(console, 'warn').mockImplementation(() => undefined)
    const target = new EventTarget()
    reportChunkErrors(target as unknown as Window)
    expect(chunkLoadFailed.value).toBe(false)
    const event = Object.assign(new Event('vite:preloadError', { cancelable: true }), { payload: gone() })
    target.dispatchEvent(event)
    expect(chunkLoadFailed.value).toBe(true)
    expect(event.defaultPrevented).toBe(false) // the import still fails: the panel shows its own error
    expect(console.warn).toHaveBeenCalled()
  })
})

describe('prefetchWhenIdle', () => {
  it('prefetches every panel once the browser is idle, and not after it is cancelled', async () => {
    const calls: Array<() => void> = []
    vi.stubGlobal('requestIdleCallback', (cb: () => void) => { calls.push(cb); return calls.length })
    vi.stubGlobal('cancelIdleCallback', (id: number) => { calls[id - 1] = () => undefined })
    const a = vi.fn(async () => ({ default: defineComponent({ render: () => null }) }))
    const b = vi.fn(async () => ({ default: defineComponent({ render: () => null }) }))
    prefetchWhenIdle([asyncPanel(a, 'a'), asyncPanel(b, 'b')])
    expect(a).not.toHaveBeenCalled()
    calls[0]()
    expect(a).toHaveBeenCalledTimes(1)
    expect(b).toHaveBeenCalledTimes(1)
    const c = vi.fn(async () => ({ default: defineComponent({ render: () => null }) }))
    const cancel = prefetchWhenIdle([asyncPanel(c, 'c')])
    cancel()
    calls[1]()
    expect(c).not.toHaveBeenCalled()
    vi.unstubAllGlobals()
  })
})

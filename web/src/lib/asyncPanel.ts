/**
 * Panels in chunks of their own (defineAsyncComponent), with the states a chunk that cannot load
 * needs: assets are content-hashed and a deploy removes the old ones, so an editor left open across
 * a deploy, or offline, may ask for a chunk that is gone. While loading: a `role="status"` line;
 * after a few automatic retries with backoff: a `role="alert"` line with a Retry button that loads
 * again (Vue keeps a failed loader's promise for the life of the component definition, so Retry
 * mounts a fresh definition over a loader that forgets failures).
 */
import { defineAsyncComponent, defineComponent, h, inject, provide, ref, shallowRef, type Component, type InjectionKey } from 'vue'

type Loader = () => Promise<{ default: Component }>

export interface AsyncPanelOptions {
  /** Automatic retries after a failed load, before the error state shows. */
  retries?: number
  /** The first retry's wait; each next one waits twice as long. */
  backoffMs?: number
  /** Show the loading state only when loading takes longer than this (no flash on a cached chunk). */
  delayMs?: number
}

export type AsyncPanel = Component & { prefetch: () => Promise<void> }

const retryKey: InjectionKey<() => void> = Symbol('async-panel-retry')

/** `what`: the panel's name in messages, lower case ("revisions", "scores"). */
export function asyncPanel(loader: Loader, what: string, options: AsyncPanelOptions = {}): AsyncPanel {
  const { retries = 3, backoffMs = 1000, delayMs = 200 } = options
  // One fetch shared by the prefetch and every mount; a failure is forgotten so the next load tries again.
  let pending: Promise<Component> | null = null
  const load = (): Promise<Component> =>
    (pending ??= loader().then((module) => module.default, (err: unknown) => { pending = null; throw err }))

  const Loading = defineComponent({
    name: 'AsyncPanelLoading',
    setup: () => () => h('p', { class: 'muted', role: 'status', 'data-testid': 'panel-loading' }, `Loading ${what}…`),
  })
  const Failed = defineComponent({
    name: 'AsyncPanelError',
    setup() {
      const retry = inject(retryKey, () => undefined)
      return () => h('div', { class: 'error', role: 'alert', 'data-testid': 'panel-error' }, [
        h('span', `Couldn't load ${what}: check your connection. `),
        h('button', { type: 'button', class: 'btn secondary', 'data-testid': 'panel-retry', onClick: retry },
          ['Retry', h('span', { class: 'sr-only' }, ` loading ${what}`)]),
      ])
    },
  })
  const definition = () => defineAsyncComponent({
    loader: load,
    loadingComponent: Loading,
    errorComponent: Failed,
    delay: delayMs,
    onError(_error, retry, fail, attempts) {
      // After the last retry Vue reports the error (console) and shows the error state.
      if (attempts > retries) fail()
      else setTimeout(retry, backoffMs * 2 ** (attempts - 1))
    },
  })

  const Panel = defineComponent({
    name: 'AsyncPanel',
    inheritAttrs: false,
    setup(_, { attrs, slots }) {
      const inner = shallowRef(definition())
      provide(retryKey, () => { inner.value = definition() })
      return () => h(inner.value, attrs, slots)
    },
  })
  return Object.assign(Panel, { prefetch: () => load().then(() => undefined, () => undefined) })
}

/** Fetch the panels' chunks once the browser is idle (or after a short wait), before they are shown. */
export function prefetchWhenIdle(panels: AsyncPanel[]): () => void {
  const run = () => { for (const panel of panels) void panel.prefetch() }
  const idle = (globalThis as { requestIdleCallback?: (cb: () => void, o?: { timeout: number }) => number }).requestIdleCallback
  if (typeof idle === 'function') {
    const id = idle(run, { timeout: 3000 })
    return () => (globalThis as unknown as { cancelIdleCallback?: (id: number) => void }).cancelIdleCallback?.(id)
  }
  const id = setTimeout(run, 500)
  return () => clearTimeout(id)
}

/**
 * A chunk or its preloaded dependencies failed (Vite's `vite:preloadError`, e.g. a deploy removed
 * them): say so instead of failing silently. The error still reaches the import's caller (its own
 * error state); the app shows `chunkLoadFailed` as a notice offering a reload.
 */
export const chunkLoadFailed = ref(false)

export function reportChunkErrors(target: Pick<Window, 'addEventListener'> = window): void {
  target.addEventListener('vite:preloadError', (event) => {
    chunkLoadFailed.value = true
    console.warn('A part of the app could not load (a new version deployed, or offline):',
      (event as Event & { payload?: unknown }).payload)
  })
}

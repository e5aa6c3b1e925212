/** Cursor paging for `{items, next_cursor}` lists: Next follows the cursor, Previous goes back
 * through the cursors already seen (the API pages forward only). */
import { computed, ref, shallowRef } from 'vue'
import type { Page } from '../api/types'
import { errorText } from '../lib/format'

export function usePager<T>(fetchPage: (cursor: string | null) => Promise<Page<T>>) {
  const items = shallowRef<T[]>([])
  /** cursors[i] fetched page i (null: the first page). */
  const cursors = ref<(string | null)[]>([null])
  const index = ref(0)
  const nextCursor = ref<string | null>(null)
  const busy = ref(false)
  const error = ref('')
  let generation = 0

  async function show(at: number): Promise<void> {
    const mine = ++generation // a newer request (a new search) wins over a slower older one
    busy.value = true
    error.value = ''
    try {
      const page = await fetchPage(cursors.value[at])
      if (mine !== generation) return
      items.value = page.items
      nextCursor.value = page.next_cursor
      index.value = at
    } catch (err) {
      if (mine === generation) error.value = errorText(err)
    } finally {
      if (mine === generation) busy.value = false
    }
  }

  /** From the first page again (after a new search or filter). */
  const reset = (): Promise<void> => { cursors.value = [null]; return show(0) }
  /** The current page again (after a change to one of its rows). */
  const reload = (): Promise<void> => show(index.value)
  async function next(): Promise<void> {
    if (!nextCursor.value) return
    cursors.value = [...cursors.value.slice(0, index.value + 1), nextCursor.value]
    await show(index.value + 1)
  }
  const prev = (): Promise<void> => (index.value > 0 ? show(index.value - 1) : Promise.resolve())

  return {
    items, busy, error, reset, reload, next, prev,
    page: computed(() => index.value + 1),
    hasNext: computed(() => nextCursor.value !== null),
    hasPrev: computed(() => index.value > 0),
    /** Replace one loaded row (after an action answered with its new state). */
    patch(match: (item: T) => boolean, update: T): void {
      items.value = items.value.map((x) => (match(x) ? update : x))
    },
  }
}

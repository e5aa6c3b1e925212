/** The teacher's live class view: one row per student from `/ws/classes/{id}/live`. */
import { computed, ref, shallowReactive, shallowRef, watch, type Ref, type ShallowRef } from 'vue'
import { socketUrl } from '../api/tickets'
import { fetchTicket } from '../api/tickets'
import type { LiveRow, StudentRemoved } from '../api/types'
import { compareNamesFast } from '../lib/nameOrder'
import { nextTask } from '../lib/nextTask'
import type { ClassDocs } from '../realtime/classDocs'
import { isFatalClose, ReconnectingSocket, type SocketStatus } from '../realtime/reconnecting'
import { ticketSocketClass, type SocketClass, type TicketFn } from '../realtime/ticketSocket'

export type SortKey = 'name' | 'words' | 'activity'

// One collator for every sort (what `localeCompare` with no locale does, without building one per
// call). Made only for names that need it (lib/nameOrder.ts orders plain ASCII names the same way
// without one), and then in a task of its own: the first ICU collator of a tab costs 7-25 ms of
// main thread on the bench machine, a long task on a busy core (web/README.md).
let collator: Intl.Collator | undefined
const nameCollator = (): Intl.Collator => (collator ??= new Intl.Collator())
const compareNames = (a: string, b: string): number => compareNamesFast(a, b) ?? nameCollator().compare(a, b)
/** Make the collator in a task of its own (not in a frame's) when a name will need it. */
let collatorQueued = false
function collatorFor(name: string): void {
  if (collator || collatorQueued || compareNamesFast(name, '') !== null) return
  collatorQueued = true
  setTimeout(nameCollator, 0)
}

/** Sort and filter rows (pure, for the view and the tests). */
export function arrangeRows(rows: LiveRow[], sort: SortKey, filter: string): LiveRow[] {
  const needle = filter.trim().toLowerCase()
  const kept = needle ? rows.filter((r) => (r.name ?? '').toLowerCase().includes(needle)) : [...rows]
  const active = (r: LiveRow) => (r.last_active_at ? Date.parse(r.last_active_at) : 0)
  const byName = (a: LiveRow, b: LiveRow) => compareNames(a.name ?? '', b.name ?? '')
  if (sort === 'words') kept.sort((a, b) => b.word_count - a.word_count || byName(a, b))
  else if (sort === 'activity') kept.sort((a, b) => active(b) - active(a) || byName(a, b))
  else kept.sort(byName)
  return kept
}

/**
 * New students' cards added per frame. A class's rows all arrive when the view opens, and mounting
 * 30 cards in one task was the page's longest task (~45 ms of main thread on the 2-core bench
 * machine, web/README.md). Frames of 10 cards still took 13-26 ms of CPU, the largest start-up
 * tasks once the app's start was split; frames of 5 about half; frames of 3 took 5-11 ms of CPU,
 * 30-75 ms of wall time with the browser on one core shared with other work. One card a frame
 * (30 cards in 30 frames, ~0.5 s) keeps each frame at a few ms.
 * Updates to cards already shown are never held back.
 */
export const NEW_ROWS_PER_FRAME = 1

/**
 * Updates of shown cards, and changed whole-class texts, applied per frame. The server sends each
 * essay's row about once a second, so a class's 30 rows tend to arrive together: patching 30
 * cards (and their texts) in one frame made the view's largest frames while a class types (9-11
 * ms of CPU, once a second). At most 8 of each a frame spreads them over a few frames (~70 ms);
 * the newest version of a row or a text is the one applied.
 */
export const UPDATES_PER_FRAME = 8

/**
 * Move pending rows into `rows`: at most `updateLimit` updates of students already shown, and at
 * most `limit` students not shown yet (each in arrival order). Returns whether rows are left for
 * another frame.
 */
export function applyPendingRows(pending: Map<string, LiveRow>, rows: Map<string, LiveRow>, limit: number,
  updateLimit = Infinity): boolean {
  let added = 0
  let updated = 0
  for (const [id, row] of pending) {
    if (!rows.has(id)) {
      if (added >= limit) continue
      added += 1
    } else {
      if (updated >= updateLimit) continue
      updated += 1
    }
    rows.set(id, row)
    pending.delete(id)
  }
  return pending.size > 0
}

/** The next animation frame while the page is shown; a timer when it is hidden (no frames come). */
function nextFrame(fn: () => void, hiddenDelayMs: number): void {
  if (typeof requestAnimationFrame === 'function' && document.visibilityState === 'visible') requestAnimationFrame(fn)
  else setTimeout(fn, hiddenDelayMs)
}

/**
 * How many of `total()` items to show while `on()`: `perFrame` more each frame until all are shown,
 * 0 while off. The whole-class text's 30 blocks mounted in the task of the click that turned it on
 * took 13-20 ms of CPU (web/README.md); a few per frame keep each frame small, as for the cards.
 */
export function revealedCount(total: () => number, on: () => boolean, perFrame = NEW_ROWS_PER_FRAME): Ref<number> {
  const shown = ref(0)
  let scheduled = false
  const step = (): void => {
    scheduled = false
    if (!on()) return
    shown.value = Math.min(total(), shown.value + perFrame)
    if (shown.value < total()) schedule()
  }
  const schedule = (): void => {
    if (scheduled) return
    scheduled = true
    nextFrame(step, 50)
  }
  watch([total, on], ([n, isOn]) => {
    if (!isOn) shown.value = 0
    else if (shown.value < n) schedule()
  }, { immediate: true })
  return shown
}

export interface ClassLive {
  rows: Map<string, LiveRow>
  status: Ref<SocketStatus>
  /** Why the server ended the view for good: 4404 (not, or no longer, a teacher of the class), 4403, 4401. */
  refusedCode: Ref<number | null>
  /** One ref per essay's live text: only that essay's view re-renders when it changes. */
  textRef(essayId: string): ShallowRef<string>
  docsOn: Ref<boolean>
  /** Whole-class text on or off; resolves once the docs socket is set up (or torn down). */
  setDocs(on: boolean): Promise<void>
  stop(): void
}

export function openClassLive(classId: string, opts: { ticket?: TicketFn; Socket?: SocketClass } = {}): ClassLive {
  const Socket = ticketSocketClass(opts.ticket ?? fetchTicket, opts.Socket)
  const rows = shallowReactive(new Map<string, LiveRow>())
  const texts = new Map<string, ShallowRef<string>>()
  const textRef = (id: string): ShallowRef<string> => {
    let r = texts.get(id)
    if (!r) texts.set(id, (r = shallowRef('')))
    return r
  }

  // With a class typing, rows and text changes arrive many times a second: apply them once per
  // frame, so the page renders at most once per frame whatever the message rate, and a few a
  // frame (a class's first rows: NEW_ROWS_PER_FRAME; later ones and texts: UPDATES_PER_FRAME).
  const pendingRows = new Map<string, LiveRow>()
  const pendingTexts = new Set<string>()
  let scheduled = false
  const flush = (): void => {
    scheduled = false
    const more = applyPendingRows(pendingRows, rows, NEW_ROWS_PER_FRAME, UPDATES_PER_FRAME)
    let applied = 0
    for (const id of pendingTexts) {
      if (applied++ >= UPDATES_PER_FRAME) break
      if (docs) textRef(id).value = docs.textOf(id)
      pendingTexts.delete(id)
    }
    if (more || pendingTexts.size) schedule()
  }
  const schedule = (): void => {
    if (scheduled) return
    scheduled = true
    nextFrame(flush, 50)
  }
  const status = ref<SocketStatus>('connecting')
  const refusedCode = ref<number | null>(null)
  const docsOn = ref(false)
  let docs: ClassDocs | null = null
  let stopped = false

  // The socket (its ticket's fetch) a task after the view's first render, not in the same task.
  let live: ReconnectingSocket | null = null
  const connect = (): void => {
    if (stopped) return
    const socket: ReconnectingSocket = live = new ReconnectingSocket({
      url: socketUrl(`/ws/classes/${classId}/live`), Socket, fatal: isFatalClose,
      onStatus: (s) => {
        status.value = s
        if (s === 'stopped' && !stopped) refusedCode.value = socket.lastCloseCode
      },
      onMessage: (data) => {
        if (typeof data !== 'string') return
        let msg: LiveRow | StudentRemoved | { type: string }
        try { msg = JSON.parse(data) } catch { return }
        if (msg.type === 'student_removed') {
          // The teacher (or a co-teacher) removed the student: their card leaves at once, and a row
          // of theirs still waiting for the next frame is dropped with it.
          const id = (msg as StudentRemoved).student_id
          pendingRows.delete(id)
          const essayId = rows.get(id)?.essay_id
          rows.delete(id)
          if (essayId) { docs?.unfollow(essayId); textRef(essayId).value = '' }
          return
        }
        if (msg.type !== 'student') return
        const row = msg as LiveRow
        const before = pendingRows.get(row.student_id) ?? rows.get(row.student_id)
        // Keep the name we have if a row comes without one.
        pendingRows.set(row.student_id, { ...before, ...row, name: row.name || before?.name || '' })
        if (row.name) collatorFor(row.name)
        schedule()
        if (docs && row.essay_id) docs.follow(row.essay_id)
      },
    })
  }
  void nextTask().then(connect)

  // The whole-class text (Yjs, the docs socket) is loaded only when a teacher turns it on: the
  // cards alone start without evaluating Yjs.
  async function setDocs(on: boolean): Promise<void> {
    docsOn.value = on
    if (on && !docs) {
      // The click's task only turns the button on: Yjs's chunk is requested in the next one (its
      // <link>s and the click's re-render in one task were 13.9 ms of CPU, 50.3 ms of wall).
      await nextTask()
      if (!docsOn.value || docs || stopped) return
      const { ClassDocs } = await import('../realtime/classDocs')
      // Yjs's chunk ran in this task: the socket and the 30 docs are made in the next one.
      await nextTask()
      if (!docsOn.value || docs || stopped) return // turned off (or on twice) while loading
      docs = new ClassDocs(socketUrl(`/ws/classes/${classId}/docs`), Socket, {
        text: (id) => { pendingTexts.add(id); schedule() },
        denied: () => undefined,
      })
      // Shown cards and rows still waiting for their frame (their arrival found no docs socket).
      for (const row of [...rows.values(), ...pendingRows.values()]) if (row.essay_id) docs.follow(row.essay_id)
    } else if (!on && docs) {
      docs.stop()
      docs = null
      for (const r of texts.values()) r.value = ''
      pendingTexts.clear()
    }
  }

  return {
    rows, status, refusedCode, textRef, docsOn, setDocs,
    stop: () => { stopped = true; live?.stop(); docs?.stop(); docs = null },
  }
}

export const sortedRows = (live: ClassLive, sort: Ref<SortKey>, filter: Ref<string>) =>
  computed(() => arrangeRows([...live.rows.values()], sort.value, filter.value))

/** The teacher's live class view: one row per student from `/ws/classes/{id}/live`. */
import { computed, ref, shallowReactive, type Ref } from 'vue'
import { socketUrl } from '../api/tickets'
import { fetchTicket } from '../api/tickets'
import type { LiveRow } from '../api/types'
import { ClassDocs } from '../realtime/classDocs'
import { isFatalClose, ReconnectingSocket, type SocketStatus } from '../realtime/reconnecting'
import { ticketSocketClass, type SocketClass, type TicketFn } from '../realtime/ticketSocket'

export type SortKey = 'name' | 'words' | 'activity'

/** Sort and filter rows (pure, for the view and the tests). */
export function arrangeRows(rows: LiveRow[], sort: SortKey, filter: string): LiveRow[] {
  const needle = filter.trim().toLowerCase()
  const kept = needle ? rows.filter((r) => (r.name ?? '').toLowerCase().includes(needle)) : [...rows]
  const active = (r: LiveRow) => (r.last_active_at ? Date.parse(r.last_active_at) : 0)
  const byName = (a: LiveRow, b: LiveRow) => (a.name ?? '').localeCompare(b.name ?? '')
  if (sort === 'words') kept.sort((a, b) => b.word_count - a.word_count || byName(a, b))
  else if (sort === 'activity') kept.sort((a, b) => active(b) - active(a) || byName(a, b))
  else kept.sort(byName)
  return kept
}

export interface ClassLive {
  rows: Map<string, LiveRow>
  status: Ref<SocketStatus>
  texts: Map<string, string>
  docsOn: Ref<boolean>
  setDocs(on: boolean): void
  stop(): void
}

export function openClassLive(classId: string, opts: { ticket?: TicketFn; Socket?: SocketClass } = {}): ClassLive {
  const Socket = ticketSocketClass(opts.ticket ?? fetchTicket, opts.Socket)
  const rows = shallowReactive(new Map<string, LiveRow>())
  const texts = shallowReactive(new Map<string, string>())
  const status = ref<SocketStatus>('connecting')
  const docsOn = ref(false)
  let docs: ClassDocs | null = null

  const live = new ReconnectingSocket({
    url: socketUrl(`/ws/classes/${classId}/live`), Socket, fatal: isFatalClose,
    onStatus: (s) => { status.value = s },
    onMessage: (data) => {
      if (typeof data !== 'string') return
      let msg: LiveRow | { type: string }
      try { msg = JSON.parse(data) } catch { return }
      if (msg.type !== 'student') return
      const row = msg as LiveRow
      const before = rows.get(row.student_id)
      // Class rows carry no name after the first: keep the one we have.
      rows.set(row.student_id, { ...before, ...row, name: row.name || before?.name || '' })
      if (docs && row.essay_id) docs.follow(row.essay_id)
    },
  })

  function setDocs(on: boolean): void {
    docsOn.value = on
    if (on && !docs) {
      docs = new ClassDocs(socketUrl(`/ws/classes/${classId}/docs`), Socket, {
        text: (id, text) => { texts.set(id, text) },
        denied: () => undefined,
      })
      for (const row of rows.values()) if (row.essay_id) docs.follow(row.essay_id)
    } else if (!on && docs) {
      docs.stop()
      docs = null
      texts.clear()
    }
  }

  return {
    rows, status, texts, docsOn, setDocs,
    stop: () => { live.stop(); docs?.stop(); docs = null },
  }
}

export const sortedRows = (live: ClassLive, sort: Ref<SortKey>, filter: Ref<string>) =>
  computed(() => arrangeRows([...live.rows.values()], sort.value, filter.value))

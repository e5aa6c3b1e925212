/** Follow one submission: poll GET /submissions/{id} until the job finishes, then on demand. */
import { onScopeDispose, shallowRef } from 'vue'
import { api } from '../api/http'
import type { Submission } from '../api/types'

export const POLL_MS = 1_500

export function useSubmissionPoll() {
  const submission = shallowRef<Submission | null>(null)
  let id: string | null = null
  let timer: ReturnType<typeof setTimeout> | null = null

  async function refresh(): Promise<void> {
    if (!id) return
    if (timer) clearTimeout(timer)
    timer = null
    try {
      submission.value = await api<Submission>('GET', `/submissions/${id}`)
    } catch {
      // keep the last one shown; try again below
    }
    const status = submission.value?.status
    if (status === 'queued' || status === 'running' || !status) timer = setTimeout(() => { void refresh() }, POLL_MS)
  }

  async function follow(submissionId: string): Promise<void> {
    id = submissionId
    await refresh()
  }

  function stop(): void {
    if (timer) clearTimeout(timer)
    timer = null
    id = null
  }

  onScopeDispose(stop)
  return { submission, follow, refresh, stop }
}

import { api } from './http'
import type { Page, Submission } from './types'

/** The newest submission of an essay, or null. Uses GET /essays/{id}/submissions (e2e branch);
 * on a server without it, the caller's own submissions filtered by essay. */
export async function latestSubmissionId(essayId: string): Promise<string | null> {
  let items: Submission[]
  try {
    items = (await api<Page<Submission>>('GET', `/essays/${essayId}/submissions?limit=100`)).items
  } catch {
    items = (await api<Page<Submission>>('GET', '/submissions?limit=100')).items.filter((s) => s.essay_id === essayId)
  }
  return items.length ? items[items.length - 1].id : null
}

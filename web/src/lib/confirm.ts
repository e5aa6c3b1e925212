/** State for one ConfirmDialog: ask with a question and the action to run once confirmed. */
import { reactive } from 'vue'
import { useAction } from './action'

export interface Question {
  title: string
  message: string
  confirmLabel?: string
  requireText?: string
}

export interface ConfirmState extends Required<Question> {
  open: boolean
  busy: boolean
  error: string
}

export function useConfirm() {
  // Busy and the failure's text are an action's (lib/action.ts); the state shows them to the dialog.
  const { busy, error, run } = useAction()
  const state: ConfirmState = reactive({
    open: false, busy, error, title: '', message: '', confirmLabel: 'Confirm', requireText: '',
  })
  let action: (() => Promise<unknown>) | null = null

  /** Open the dialog; `run` happens only on confirm. */
  function ask(question: Question, run: () => Promise<unknown>): void {
    Object.assign(state, { confirmLabel: 'Confirm', requireText: '', ...question, open: true, busy: false, error: '' })
    action = run
  }

  /** Run the action; the dialog closes on success and stays open showing the error on failure. */
  async function confirm(): Promise<boolean> {
    const task = action
    if (!task || busy.value) return false
    const done = await run(async () => { await task(); return true })
    if (!done) return false
    state.open = false
    action = null
    return true
  }

  function cancel(): void {
    if (busy.value) return
    state.open = false
    action = null
  }

  return { state, ask, confirm, cancel }
}

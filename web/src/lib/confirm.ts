/** State for one ConfirmDialog: ask with a question and the action to run once confirmed. */
import { reactive } from 'vue'
import { errorText } from './format'

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
  const state = reactive<ConfirmState>({
    open: false, busy: false, error: '', title: '', message: '', confirmLabel: 'Confirm', requireText: '',
  })
  let action: (() => Promise<unknown>) | null = null

  /** Open the dialog; `run` happens only on confirm. */
  function ask(question: Question, run: () => Promise<unknown>): void {
    Object.assign(state, { confirmLabel: 'Confirm', requireText: '', ...question, open: true, busy: false, error: '' })
    action = run
  }

  /** Run the action; the dialog closes on success and stays open showing the error on failure. */
  async function confirm(): Promise<boolean> {
    if (!action || state.busy) return false
    state.busy = true
    state.error = ''
    try {
      await action()
      state.open = false
      action = null
      return true
    } catch (err) {
      state.error = errorText(err)
      return false
    } finally {
      state.busy = false
    }
  }

  function cancel(): void {
    if (state.busy) return
    state.open = false
    action = null
  }

  return { state, ask, confirm, cancel }
}

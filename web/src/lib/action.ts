import { ref } from 'vue'
import { errorText } from './format'

/** A form's submit: clears the last error, marks busy, and shows a failure as text. */
export function useAction() {
  const error = ref('')
  const busy = ref(false)

  async function run<T>(task: () => Promise<T>): Promise<T | undefined> {
    error.value = ''
    busy.value = true
    try {
      return await task()
    } catch (err) {
      error.value = errorText(err)
      return undefined
    } finally {
      busy.value = false
    }
  }

  return { error, busy, run }
}

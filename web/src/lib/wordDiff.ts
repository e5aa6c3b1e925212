/**
 * A word-level diff for the revision view (the server's unified diff is by line, and essays are
 * often one long line per paragraph). Common prefix and suffix are trimmed first; the middle gets
 * an LCS when it is small enough, otherwise it shows as one deletion and one insertion.
 */

export interface DiffPart { kind: 'same' | 'add' | 'del'; text: string }

const MAX_CELLS = 4_000_000

function tokens(text: string): string[] {
  return text.match(/\s+|[^\s]+/g) ?? []
}

function push(out: DiffPart[], kind: DiffPart['kind'], text: string): void {
  if (!text) return
  const last = out[out.length - 1]
  if (last && last.kind === kind) last.text += text
  else out.push({ kind, text })
}

export function wordDiff(before: string, after: string): DiffPart[] {
  const a = tokens(before)
  const b = tokens(after)
  let start = 0
  while (start < a.length && start < b.length && a[start] === b[start]) start++
  let endA = a.length
  let endB = b.length
  while (endA > start && endB > start && a[endA - 1] === b[endB - 1]) { endA--; endB-- }
  const out: DiffPart[] = []
  push(out, 'same', a.slice(0, start).join(''))
  const midA = a.slice(start, endA)
  const midB = b.slice(start, endB)
  if (midA.length * midB.length > MAX_CELLS) {
    push(out, 'del', midA.join(''))
    push(out, 'add', midB.join(''))
  } else {
    // lengths[i][j]: LCS of midA[i:] and midB[j:]
    const n = midA.length
    const m = midB.length
    const lengths = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1))
    for (let i = n - 1; i >= 0; i--) {
      for (let j = m - 1; j >= 0; j--) {
        lengths[i][j] = midA[i] === midB[j] ? lengths[i + 1][j + 1] + 1 : Math.max(lengths[i + 1][j], lengths[i][j + 1])
      }
    }
    let i = 0
    let j = 0
    while (i < n && j < m) {
      if (midA[i] === midB[j]) { push(out, 'same', midA[i]); i++; j++ }
      else if (lengths[i + 1][j] >= lengths[i][j + 1]) { push(out, 'del', midA[i]); i++ }
      else { push(out, 'add', midB[j]); j++ }
    }
    while (i < n) push(out, 'del', midA[i++])
    while (j < m) push(out, 'add', midB[j++])
  }
  push(out, 'same', a.slice(endA).join(''))
  return out
}

/**
 * Student names in the order of the browser's collator (`new Intl.Collator()`), without making one
 * while every name is plain ASCII and the browser's language collates ASCII as Unicode's root
 * collation does: the first collator of a tab costs 7-25 ms of main thread (V8 builds its set of
 * locales and ICU loads the collation data), a long task on a busy core (web/README.md). Any other
 * name, or another language (Danish sorts "aa" as "å", Lithuanian "y" after "i", ...), is left to
 * the collator.
 */

// The root collation's primary order of printable ASCII (what `Intl.Collator('en', { sensitivity:
// 'base' })` sorts them into): spaces, punctuation, symbols, digits, letters. A letter's two cases
// share a weight; at the tertiary level the lower case comes first.
const ORDER = ' _-,;:!?.\'"()[]{}@*/\\&#%`^+<=>|~$0123456789abcdefghijklmnopqrstuvwxyz'
const PRIMARY = new Uint8Array(128)
for (let i = 0; i < ORDER.length; i++) {
  PRIMARY[ORDER.charCodeAt(i)] = i + 1
  const upper = ORDER[i].toUpperCase()
  if (upper !== ORDER[i]) PRIMARY[upper.charCodeAt(0)] = i + 1
}
const PLAIN = /^[\x20-\x7e]*$/
// Languages whose default collation orders ASCII as the root collation does.
const ROOT_ASCII = new Set(['en', 'de', 'fr', 'it', 'pt', 'nl', 'es'])

/** The browser's language (what `new Intl.Collator()` uses), without making an Intl object. */
export function browserLanguage(): string {
  const nav = (globalThis as { navigator?: { language?: string } }).navigator
  return (nav?.language ?? '').toLowerCase().split('-')[0]
}

/** Whether `name` is one the fast order handles (printable ASCII only). */
export const plainName = (name: string): boolean => PLAIN.test(name)

/**
 * `a` against `b` as the collator of `language` orders them (< 0, 0, > 0), or null when the
 * collator must decide (a name that is not plain ASCII, a language that tailors ASCII).
 */
export function compareNamesFast(a: string, b: string, language = browserLanguage()): number | null {
  if (!ROOT_ASCII.has(language) || !PLAIN.test(a) || !PLAIN.test(b)) return null
  const n = Math.min(a.length, b.length)
  for (let i = 0; i < n; i++) {
    const d = PRIMARY[a.charCodeAt(i)] - PRIMARY[b.charCodeAt(i)]
    if (d) return d
  }
  if (a.length !== b.length) return a.length - b.length
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i)
    const y = b.charCodeAt(i)
    if (x !== y) return x > y ? -1 : 1 // same letter, other case: the lower case (the larger code) first
  }
  return 0
}

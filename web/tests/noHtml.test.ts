import { readdirSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name)
    return statSync(path).isDirectory() ? files(path) : [path]
  })
}

describe('hostile text policy', () => {
  it('no template or script renders strings as HTML', () => {
    const offenders = files(join(__dirname, '..', 'src'))
      .filter((f) => /\.(vue|ts)$/.test(f))
      .filter((f) => /v-html|innerHTML|insertAdjacentHTML|outerHTML/.test(readFileSync(f, 'utf8')))
    expect(offenders).toEqual([])
  })
})

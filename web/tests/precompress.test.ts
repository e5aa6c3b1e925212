// @vitest-environment node
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { brotliCompressSync, brotliDecompressSync, constants, gunzipSync } from 'node:zlib'
import { MAX_BYTES, MIN_BYTES, precompress, precompressPlugin } from '../precompress'
import config from '../vite.config'

const text = (bytes: number) => Buffer.from('const essay = "text";\n'.repeat(Math.ceil(bytes / 21)).slice(0, bytes))

describe('precompress (the build writes .br and .gz the Gateway sends as they are)', () => {
  let dir: string
  beforeEach(() => { dir = mkdtempSync(join(tmpdir(), 'precompress-')) })
  afterEach(() => { rmSync(dir, { recursive: true, force: true }) })

  it('compresses every text file the Gateway compresses, in subfolders too: brotli 11 and gzip', async () => {
    mkdirSync(join(dir, 'assets'))
    const files = { 'index.html': text(600), 'assets/index-Ab12.js': text(40_000), 'assets/index-Cd34.CSS': text(MIN_BYTES),
      'assets/logo.svg': text(300) }
    for (const [name, data] of Object.entries(files)) writeFileSync(join(dir, name), data)
    const done = await precompress(dir)
    expect(done.map((p) => p.slice(dir.length + 1)).sort()).toEqual(Object.keys(files).sort())
    for (const [name, data] of Object.entries(files)) {
      const br = readFileSync(join(dir, `${name}.br`))
      expect(brotliDecompressSync(br)).toEqual(data)
      expect(br).toEqual(brotliCompressSync(data, { params: { [constants.BROTLI_PARAM_QUALITY]: 11 } }))
      expect(gunzipSync(readFileSync(join(dir, `${name}.gz`)))).toEqual(data)
      // The Gateway ignores a sibling older than its file.
      expect(statSync(join(dir, `${name}.br`)).mtimeMs).toBeGreaterThanOrEqual(statSync(join(dir, name)).mtimeMs)
    }
  })

  it('leaves what the Gateway sends as it is: small files, images and fonts, files over its limit', async () => {
    writeFileSync(join(dir, 'tiny.js'), text(MIN_BYTES - 1))
    writeFileSync(join(dir, 'photo.png'), text(5_000))
    writeFileSync(join(dir, 'font.woff2'), text(5_000))
    writeFileSync(join(dir, 'huge.js'), text(MAX_BYTES + 1))
    expect(await precompress(dir)).toEqual([])
    expect(readdirSync(dir).sort()).toEqual(['font.woff2', 'huge.js', 'photo.png', 'tiny.js'])
  })

  it('runs at the end of `vite build` only', () => {
    const plugin = precompressPlugin()
    expect(plugin.apply).toBe('build')
    expect(config.plugins?.flat().map((p) => (p && typeof p === 'object' && 'name' in p ? p.name : null)))
      .toContain(plugin.name)
  })
})

import { readdir, readFile, stat, writeFile } from 'node:fs/promises'
import { extname, join, resolve } from 'node:path'
import { promisify } from 'node:util'
import { brotliCompress, constants, gzip } from 'node:zlib'
import type { Plugin } from 'vite'

/**
 * The files the Gateway sends compressed (serve_app/web.py: COMPRESSIBLE, MIN_COMPRESS_BYTES,
 * MAX_CACHED_FILE_BYTES). It sends a `name.br` / `name.gz` beside such a file as it is, and
 * compresses any other on its first request; smaller or other files it sends as they are, so a
 * sibling of theirs would never be read.
 */
export const COMPRESSIBLE = new Set(['.html', '.js', '.mjs', '.css', '.json', '.map', '.svg', '.webmanifest',
  '.txt', '.wasm', '.xml', '.ico'])
export const MIN_BYTES = 256
export const MAX_BYTES = 8 * 1024 * 1024

const brotli = promisify(brotliCompress)
const gzipped = promisify(gzip)

async function* files(dir: string): AsyncGenerator<string> {
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) yield* files(path)
    else if (entry.isFile()) yield path
  }
}

/**
 * Write `name.br` (brotli 11) and `name.gz` (gzip 9) beside every file under `dir` the Gateway
 * would compress; returns those files' paths. Brotli 11 is too slow for the Gateway to do on a
 * request (1.5 s for a 600 KB bundle, it uses 9) but costs the build about that once.
 */
export async function precompress(dir: string): Promise<string[]> {
  const chosen: string[] = []
  for await (const path of files(dir)) {
    if (!COMPRESSIBLE.has(extname(path).toLowerCase())) continue
    const { size } = await stat(path)
    if (size >= MIN_BYTES && size <= MAX_BYTES) chosen.push(path)
  }
  // In parallel: zlib's async calls run on libuv's thread pool.
  await Promise.all(chosen.map(async (path) => {
    const data = await readFile(path)
    const [br, gz] = await Promise.all([
      brotli(data, { params: { [constants.BROTLI_PARAM_QUALITY]: 11 } }),
      gzipped(data, { level: 9 }),
    ])
    // Written after the file, so their mtime is not older: the Gateway ignores a stale sibling.
    await Promise.all([writeFile(`${path}.br`, br), writeFile(`${path}.gz`, gz)])
  }))
  return chosen
}

/** `vite build` precompresses its output folder once everything is written (index.html included). */
export function precompressPlugin(): Plugin {
  let outDir = ''
  let log: (message: string) => void = () => {}
  return {
    name: 'essaycoach-precompress',
    apply: 'build',
    configResolved(config) {
      outDir = resolve(config.root, config.build.outDir)
      log = (message) => config.logger.info(message)
    },
    async closeBundle() {
      const done = await precompress(outDir)
      log(`precompressed ${done.length} files (.br, .gz) in ${outDir}`)
    },
  }
}

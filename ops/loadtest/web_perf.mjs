// Lighthouse on the web app's screens, in Debian's Chromium (driven by ops/loadtest/web_perf.py).
//
//   node ops/loadtest/web_perf.mjs config.json
//
// config: {base, chromium, out_dir, preset: "mobile"|"desktop", screens: [{name, path, login?: {email, password}}]}
// A screen with `login` is audited signed in: the app's own sign-in form is filled first (the
// selectors of the web contract), and Lighthouse keeps the browser's storage (disableStorageReset).
// Prints one JSON object: per screen the category scores, the scripts loaded and key metrics.
import fs from 'node:fs'
import path from 'node:path'
import puppeteer from 'puppeteer-core'
import lighthouse, { desktopConfig } from 'lighthouse'

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'))
const base = config.base.replace(/\/$/, '')

async function fill(page, testId, value) {
  const selector = `input[data-testid="${testId}"], textarea[data-testid="${testId}"], [data-testid="${testId}"] input`
  await page.locator(selector).fill(value)
  const got = await page.$eval(selector, (el) => el.value)
  if (got !== value) throw new Error(`${testId} holds ${JSON.stringify(got)} after fill`)
}

async function signIn(page, login) {
  const errors = []
  page.on('pageerror', (e) => errors.push(String(e)))
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()) })
  page.on('request', (r) => { if (r.url().endsWith('/auth/token')) errors.push(`token request: ${r.postData()}`) })
  // One retry: a sign-in once answered 401 with the right credentials in this harness (not seen
  // in the Playwright e2e runs); the diagnostics go to stderr either way.
  for (let attempt = 1; ; attempt++) {
    await page.goto(`${base}/login`, { waitUntil: 'networkidle0' })
    await fill(page, 'login-email', login.email)
    await fill(page, 'login-password', login.password)
    await page.click('[data-testid="login-submit"]')
    try {
      await page.waitForFunction(() => location.pathname.startsWith('/classes'), { timeout: 30000 })
      return
    } catch (err) {
      const text = await page.evaluate(() => document.body.innerText)
      const why = `sign-in as ${login.email} did not reach /classes (at ${page.url()}): ${errors.join('; ')}\n${text.slice(0, 600)}`
      if (attempt >= 2) throw new Error(why)
      process.stderr.write(`retrying: ${why}\n`)
      errors.length = 0
    }
  }
}

const browser = await puppeteer.launch({
  executablePath: config.chromium,
  headless: true,
  args: ['--no-sandbox', '--disable-dev-shm-usage'],
})
const results = []
try {
  for (const screen of config.screens) {
    const context = await browser.createBrowserContext() // its own storage: one person per screen
    const page = await context.newPage()
    if (screen.login) await signIn(page, screen.login)
    const flags = {
      output: ['html', 'json'],
      logLevel: 'error',
      disableStorageReset: Boolean(screen.login),
      onlyCategories: ['performance', 'accessibility', 'best-practices'],
    }
    const runner = await lighthouse(`${base}${screen.path}`, flags,
      config.preset === 'desktop' ? desktopConfig : undefined, page)
    const [html, json] = runner.report
    fs.writeFileSync(path.join(config.out_dir, `${screen.name}.html`), html)
    fs.writeFileSync(path.join(config.out_dir, `${screen.name}.json`), json)
    // The trace Lighthouse simulated from, for web/bench/trace_long_tasks.py (which task, which script).
    fs.writeFileSync(path.join(config.out_dir, `${screen.name}.trace.json`), JSON.stringify(runner.artifacts.Trace))
    const lhr = runner.lhr
    const requests = lhr.audits['network-requests']?.details?.items ?? []
    results.push({
      name: screen.name,
      path: screen.path,
      final_url: lhr.finalDisplayedUrl,
      runtime_error: lhr.runtimeError?.message ?? null,
      scores: Object.fromEntries(Object.entries(lhr.categories).map(([k, c]) => [k, c.score])),
      metrics: Object.fromEntries(['first-contentful-paint', 'largest-contentful-paint', 'total-blocking-time',
        'cumulative-layout-shift', 'interactive'].map((id) => [id, lhr.audits[id]?.numericValue ?? null])),
      failed_a11y: Object.values(lhr.audits)
        .filter((a) => lhr.categories.accessibility?.auditRefs.some((r) => r.id === a.id) && a.score === 0)
        .map((a) => a.id),
      scripts: requests.filter((r) => r.resourceType === 'Script')
        .map((r) => ({ url: r.url, transfer_bytes: r.transferSize, resource_bytes: r.resourceSize })),
    })
    await context.close()
  }
} finally {
  await browser.close()
}
process.stdout.write(JSON.stringify({ results }))

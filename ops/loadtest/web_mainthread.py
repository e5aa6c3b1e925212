"""Main-thread work of the web app, two builds compared in the same conditions (a benchmark).

Lighthouse's total blocking time on this shared machine mostly measures the other work on it. This
counts what the page itself makes the main thread do instead, for two builds of web/ (A and B, e.g.
before and after a change) served by ONE service (`essaycoach run --dev`, as `make run` starts it):
every request for the app's files is answered from the build under test (Playwright request
routing), the API and sockets are the service's. Runs alternate A, B, A, B... so both see the same
machine. In Debian's Chromium with the CPU throttled (CDP `Emulation.setCPUThrottlingRate`, 4x by
default, as Lighthouse's mobile preset), per run:

* ``editor``: a cold load of the student's editor on a 4-paragraph essay, until the text is shown
  and the network idle, plus 1 s;
* ``live``: a cold load of the teacher's live class view with the whole-class text on, then
  ``--seconds`` with ``--typists`` students typing (ops/loadtest/yclient.py, 5 chars/s each).

For each: Chromium's own counters (``Performance.getMetrics``: TaskDuration, ScriptDuration,
LayoutDuration + RecalcStyleDuration, in ms of main-thread time) and the long tasks (> 50 ms,
PerformanceObserver) with their total blocking time (the sum of each one's excess over 50 ms).

    .venv/bin/python -m ops.loadtest.web_mainthread --a var/dist-before --b web/dist --runs 4

Prints a JSON summary (median, min and max per build and measure); timings still move with the
machine's load, so read the spread, and repeat.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import mimetypes
import os
import random
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from playwright.async_api import BrowserContext, Page, Route, async_playwright

from ops.loadtest import procs
from ops.loadtest.run import EssayCoachTarget, log
from ops.loadtest.web_perf import ESSAY
from ops.loadtest.yclient import YClient

ROOT = Path(__file__).resolve().parent.parent.parent
CHROMIUM = os.environ.get("CHROME_PATH", "/usr/bin/chromium")
WORDS = "the students write about their summer and the teacher reads along while feedback arrives".split()

OBSERVE_JS = """() => {
  window.__long = []
  new PerformanceObserver((l) => { for (const e of l.getEntries()) window.__long.push(e.duration) })
    .observe({ type: 'longtask', buffered: true })
}"""


def serve_dist(dist: Path):  # type: ignore[no-untyped-def]
    """A route handler answering the app's files (and the SPA fallback) from `dist`."""
    async def handle(route: Route) -> None:
        path = urlparse(route.request.url).path
        if path.startswith(("/api/", "/ws/")):
            await route.continue_()
            return
        file = dist / path.lstrip("/")
        if not file.is_file():
            file = dist / "index.html"
        mime = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        await route.fulfill(status=200, body=file.read_bytes(), content_type=mime)
    return handle


async def counters(page: Page, cdp: Any) -> dict[str, float]:
    metrics = {m["name"]: m["value"] for m in (await cdp.send("Performance.getMetrics"))["metrics"]}
    long = await page.evaluate("window.__long || []")
    return {
        "task_ms": metrics["TaskDuration"] * 1000,
        "script_ms": metrics["ScriptDuration"] * 1000,
        "layout_style_ms": (metrics["LayoutDuration"] + metrics["RecalcStyleDuration"]) * 1000,
        "long_tasks": len(long),
        "tbt_ms": sum(max(0.0, d - 50) for d in long),
        "longest_ms": max(long, default=0.0),
    }


async def open_page(context: BrowserContext, dist: Path, throttle: float) -> tuple[Page, Any]:
    page = await context.new_page()
    await page.route("**/*", serve_dist(dist))
    await page.add_init_script(OBSERVE_JS)
    cdp = await context.new_cdp_session(page)
    await cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
    await cdp.send("Emulation.setCPUThrottlingRate", {"rate": throttle})
    await cdp.send("Performance.enable")
    return page, cdp


async def typist(yc: YClient, stop: asyncio.Event, rng: random.Random) -> None:
    while not stop.is_set():
        word = rng.choice(WORDS) + (" " if rng.random() > 0.1 else ".\n")
        for ch in word:
            yc.type(ch)
            await asyncio.sleep(0.2)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", type=Path, required=True, help="a built web/dist (e.g. before a change)")
    parser.add_argument("--b", type=Path, default=ROOT / "web" / "dist")
    parser.add_argument("--runs", type=int, default=3, help="runs per build and screen")
    parser.add_argument("--throttle", type=float, default=4)
    parser.add_argument("--typists", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=8)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    results: dict[str, dict[str, list[dict[str, float]]]] = {"A": {"editor": [], "live": []},
                                                             "B": {"editor": [], "live": []}}
    with tempfile.TemporaryDirectory(prefix="web-main-") as tmp:
        extra = {"ESSAYCOACH_WEB_DIST": str(args.b.resolve()),
                 "RAY_SERVE_HAPROXY_METRICS_PORT": str(procs.free_port())}
        target = EssayCoachTarget(Path(tmp), extra_env=extra)
        typing: list[asyncio.Task[None]] = []
        clients: list[YClient] = []
        stop = asyncio.Event()
        try:
            await target.start()
            run, password = secrets.token_hex(3), "Wm-" + secrets.token_urlsafe(12)
            teacher_email = f"teacher-{run}@webmain.example"
            teacher = await target.account(teacher_email, "Ms Main", "teacher", password)
            cls = await target.api("POST", "/classes", teacher, {"name": "Main-thread class"})
            task = await target.api("POST", f"/classes/{cls['id']}/assignments", teacher, {"title": "Choice"})
            essays, emails = [], []
            for i in range(args.typists):
                email = f"s{i}-{run}@webmain.example"
                token = await target.account(email, f"Student {i + 1:02d}", "student", password)
                await target.api("POST", "/classes/join", token, {"join_code": cls["join_code"]})
                essay = await target.api("POST", "/essays", token, {"title": "Choice", "assignment_id": task["id"],
                                                                    "text": "\n".join([ESSAY] * 2)})
                tickets = await target.api("POST", "/auth/ws-ticket", token)
                clients.append(await YClient(f"ws://127.0.0.1:{target.port}/ws/essays/{essay['id']}/doc"
                                             f"?ticket={tickets['ticket']}").connect())
                essays.append(essay["id"])
                emails.append(email)
            base = f"http://127.0.0.1:{target.port}"
            async with async_playwright() as p:
                browser = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                states = {}
                for who, email in (("student", emails[0]), ("teacher", teacher_email)):
                    ctx = await browser.new_context()
                    page = await ctx.new_page()
                    await page.goto(f"{base}/login")
                    await page.get_by_test_id("login-email").fill(email)
                    await page.get_by_test_id("login-password").fill(password)
                    await page.get_by_test_id("login-submit").click()
                    await page.wait_for_url("**/classes")
                    states[who] = await ctx.storage_state()
                    await ctx.close()
                rng = random.Random(12)
                typing = [asyncio.create_task(typist(yc, stop, random.Random(rng.random()))) for yc in clients]
                for i in range(args.runs):
                    for name, dist in (("A", args.a), ("B", args.b)) if i % 2 == 0 else (("B", args.b), ("A", args.a)):
                        ctx = await browser.new_context(storage_state=states["student"],
                                                        viewport={"width": 1280, "height": 900})
                        page, cdp = await open_page(ctx, dist.resolve(), args.throttle)
                        await page.goto(f"{base}/essays/{essays[0]}")
                        await page.locator(".cm-content").get_by_text("Critics say", exact=False).first.wait_for()
                        await page.wait_for_load_state("networkidle")
                        await asyncio.sleep(1)
                        results[name]["editor"].append(await counters(page, cdp))
                        await ctx.close()

                        ctx = await browser.new_context(storage_state=states["teacher"],
                                                        viewport={"width": 1280, "height": 900})
                        page, cdp = await open_page(ctx, dist.resolve(), args.throttle)
                        await page.goto(f"{base}/classes/{cls['id']}/live")
                        await page.get_by_test_id("live-card").nth(args.typists - 1).wait_for(timeout=60_000)
                        await page.get_by_test_id("live-docs-toggle").click()
                        await page.get_by_test_id("live-doc-text").nth(args.typists - 1).wait_for(timeout=60_000)
                        await asyncio.sleep(1)
                        before = await counters(page, cdp)
                        await page.evaluate("window.__long = []")
                        await asyncio.sleep(args.seconds)
                        after = await counters(page, cdp)
                        results[name]["live"].append({k: after[k] - before[k] if k.endswith("_ms") and k != "longest_ms"
                                                      else after[k] for k in after})
                        await ctx.close()
                        log(f"run {i + 1} {name}: editor {results[name]['editor'][-1]} live {results[name]['live'][-1]}")
                await browser.close()
        finally:
            stop.set()
            await asyncio.gather(*typing, return_exceptions=True)
            for yc in clients:
                await yc.close()
            await target.close_http()
            target.stop()

    def summary(rows: list[dict[str, float]]) -> dict[str, str]:
        return {k: f"{statistics.median(r[k] for r in rows):.0f} ({min(r[k] for r in rows):.0f}-"
                   f"{max(r[k] for r in rows):.0f})" for k in rows[0]}

    print(json.dumps({
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "a": str(args.a), "b": str(args.b),
        "runs": args.runs, "cpu_throttle": args.throttle, "typists": args.typists, "live_seconds": args.seconds,
        "load_1min_before_after": [round(load_before, 1), round(os.getloadavg()[0], 1)],
        "median_min_max": {n: {s: summary(rows) for s, rows in screens.items()} for n, screens in results.items()},
    }, indent=2))


if __name__ == "__main__":
    asyncio.run(main())

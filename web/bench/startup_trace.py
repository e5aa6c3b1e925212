"""Benchmark: the start-up of the student's editor or the teacher's live class view, traced.

Signs up a teacher and a student with an essay over REST (one class, one assignment; `--students`
more students with a few words each for the live view), opens the route signed in, in a fresh
Debian Chromium per load, with a Chromium performance trace from before navigation until
`--seconds` after the page shows its content, and prints the page's main-thread tasks over
`--over` ms: wall and thread (CPU) time, and whether the task ran the page's code or the
harness's (Playwright's injected scripts, the bench's own `evaluate`). Run it against a server
started as `make run` starts it:

    .venv/bin/python web/bench/startup_trace.py --base http://127.0.0.1:8000 --route editor --loads 3

`web/bench/trace_long_tasks.py TRACE --by cpu` breaks each task down (scripts, functions, layout).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import httpx
from playwright.async_api import async_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent))
from class_view_fps import account  # noqa: E402
from trace_long_tasks import load, page_tasks  # noqa: E402

ESSAY = ("Schools should let students choose some of their classes. Choice builds motivation, and "
         "students who care about a subject work harder at it.\nCritics say teenagers choose the easy "
         "path. Yet with advisers and a few required courses, choice can stay rigorous.")
PAGE_START_JS = "if (location.protocol.startsWith('http')) console.timeStamp('bench-page-start')"


async def world(base: str, students: int) -> dict:
    async with httpx.AsyncClient(base_url=base + "/api/v1", timeout=30) as client:
        teacher = await account(client, "Teacher", "teacher")
        room = (await client.post("/classes", json={"name": "Start-up class"}, headers=teacher["headers"])).json()
        task = (await client.post(f"/classes/{room['id']}/assignments", json={"title": "Choice"},
                                  headers=teacher["headers"])).json()
        people = []
        for i in range(max(1, students)):
            s = await account(client, f"Student {i + 1:02d}", "student")
            (await client.post("/classes/join", json={"join_code": room["join_code"]},
                               headers=s["headers"])).raise_for_status()
            s["essay"] = (await client.post("/essays", json={"title": "Choice", "assignment_id": task["id"],
                                                             "text": ESSAY}, headers=s["headers"])).json()
            people.append(s)
        return {"teacher": teacher, "student": people[0], "class_id": room["id"]}


def stored_session(who: dict) -> str:
    pair = who["pair"]
    stored = {"access": pair["access_token"], "refresh": pair["refresh_token"], "user": who["user"],
              "accessExpiresAt": int(time.time() * 1000) + pair["expires_in"] * 1000}
    return f"localStorage.setItem('essaycoach.auth', {json.dumps(json.dumps(stored))})"


async def one_load(p, args: argparse.Namespace, w: dict, trace: Path) -> None:
    browser = await p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
    try:
        context = await browser.new_context(viewport={"width": 412, "height": 823})
        if args.route == "editor":
            who, path, ready = w["student"], f"/essays/{w['student']['essay']['id']}", ".cm-content"
        else:
            who, path, ready = w["teacher"], f"/classes/{w['class_id']}/live", "[data-testid=live-card]"
        await context.add_init_script(stored_session(who))
        await context.add_init_script(PAGE_START_JS)
        page = await context.new_page()
        await browser.start_tracing(page=page, path=str(trace), screenshots=False)
        await page.goto(args.base + path)
        await page.locator(ready).first.wait_for(timeout=30_000)
        await asyncio.sleep(args.seconds)
        await browser.stop_tracing()
    finally:
        await browser.close()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default="http://127.0.0.1:8000")
    ap.add_argument("--route", choices=("editor", "live"), default="editor")
    ap.add_argument("--students", type=int, default=1, help="students in the class (cards in the live view)")
    ap.add_argument("--loads", type=int, default=1, help="page loads, each in a fresh browser")
    ap.add_argument("--seconds", type=float, default=2.0, help="trace this long after the content shows")
    ap.add_argument("--over", type=float, default=50, help="list tasks over this many ms of wall time")
    ap.add_argument("--trace", type=Path, default=Path("var/web-perf/startup_trace.json"),
                    help="where to save the traces (load N adds -N before the suffix)")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    args = ap.parse_args()
    w = await world(args.base, args.students)
    args.trace.parent.mkdir(parents=True, exist_ok=True)
    runs = []
    async with async_playwright() as p:
        for n in range(1, args.loads + 1):
            trace = args.trace.with_name(f"{args.trace.stem}-{n}{args.trace.suffix}")
            await one_load(p, args, w, trace)
            tasks = page_tasks(load(trace), "bench-page-start")
            page = [t for t in tasks if t["origin"] == "page"]
            harness = [t for t in tasks if t["origin"] == "harness"]
            runs.append({
                "trace": str(trace),
                "page_tasks_over_ms": [t for t in page if t["wall_ms"] > args.over],
                "harness_tasks_over_ms": [t for t in harness if t["wall_ms"] > args.over],
                "page_max_cpu_ms": max((t["cpu_ms"] for t in page), default=0),
                "page_cpu_ms": round(sum(t["cpu_ms"] for t in page), 1),
                "harness_max_cpu_ms": max((t["cpu_ms"] for t in harness), default=0),
            })
    print(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "route": args.route,
                      "students": args.students, "load_average": os.getloadavg()[0], "over_ms": args.over,
                      "runs": runs}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())

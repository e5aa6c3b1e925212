"""Lighthouse on the web app's login, editor and live class view screens (a benchmark, not a test).

Starts the service as `make run` does (`essaycoach run`, the built web/dist), makes a teacher, a
class with an assignment and a student with an essay over REST, then runs Lighthouse 12.2.3
(`ops/loadtest/package.json`, `npm ci` here if missing) in Debian's Chromium on

* `/login` (signed out), `/essays/<id>` (the student's editor, signed in), and
  `/classes/<id>/live` (the teacher's live class view, signed in),

and adds a dated section for the run to ops/loadtest/WEB_PERF.md (scores, metrics, the editor
route's initial JavaScript gzipped), newest first, keeping every earlier run, plus the full
Lighthouse reports under var/web-perf/.

    .venv/bin/python -m ops.loadtest.web_perf                 # mobile preset (Lighthouse's default)
    .venv/bin/python -m ops.loadtest.web_perf --preset desktop
    .venv/bin/python -m ops.loadtest.web_perf --no-report --dist var/dist-before   # another build

Scores move with the machine's load: compare runs made back to back, on an idle machine.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gzip
import json
import os
import secrets
import subprocess
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ops.loadtest import procs
from ops.loadtest.run import EssayCoachTarget, log

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
DIST = ROOT / "web" / "dist"
OUT = ROOT / "var" / "web-perf"
REPORT = HERE / "WEB_PERF.md"
CHROMIUM = os.environ.get("CHROME_PATH", "/usr/bin/chromium")
ESSAY = ("Schools should let students choose some of their classes. Choice builds motivation, and "
         "students who care about a subject work harder at it.\nCritics say teenagers choose the easy "
         "path. Yet with advisers and a few required courses, choice can stay rigorous.")


def ensure_node_modules() -> str:
    package = HERE / "node_modules" / "lighthouse" / "package.json"
    if not package.is_file():
        log("installing Lighthouse: npm ci in ops/loadtest")
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--omit=optional"], cwd=HERE, check=True)
    return str(json.loads(package.read_text())["version"])


def gzipped_js(scripts: list[dict[str, Any]], dist: Path) -> tuple[int, list[tuple[str, int]]]:
    """Gzip size (level 9) of each same-origin script the route loaded, read from the build."""
    sizes = []
    for script in scripts:
        path = dist / urlparse(script["url"]).path.lstrip("/")
        if path.is_file():
            sizes.append((path.name, len(gzip.compress(path.read_bytes(), 9))))
    return sum(size for _, size in sizes), sizes


async def layout(target: EssayCoachTarget) -> dict[str, Any]:
    password = "Wp-" + secrets.token_urlsafe(12)
    run = secrets.token_hex(3)
    teacher_email, student_email = f"teacher-{run}@webperf.example", f"student-{run}@webperf.example"
    teacher = await target.account(teacher_email, "Ms Perf", "teacher", password)
    student = await target.account(student_email, "Sam Perf", "student", password)
    cls = await target.api("POST", "/classes", teacher, {"name": "Perf class"})
    assignment = await target.api("POST", f"/classes/{cls['id']}/assignments", teacher,
                                  {"title": "Choice in school", "prompt": "Should students choose classes?"})
    await target.api("POST", "/classes/join", student, {"join_code": cls["join_code"]})
    essay = await target.api("POST", "/essays", student,
                             {"title": "Choice", "assignment_id": assignment["id"], "text": ESSAY})
    return {"class_id": cls["id"], "essay_id": essay["id"], "password": password,
            "teacher": teacher_email, "student": student_email}


TITLE = "# Web app performance (Lighthouse)"
HEADER = f"""{TITLE}

`.venv/bin/python -m ops.loadtest.web_perf` (ops/loadtest/web_perf.py) adds one section per run
below, newest first; earlier runs stay for comparison. Goals (issue 12): performance >= 90,
accessibility >= 95, initial JS of the editor route <= 250 KB gzipped."""
# Where the writer puts each new run; everything above and below it is kept as it is.
RUNS_MARKER = "<!-- web_perf.py adds each run below this line, newest first; earlier runs stay -->"


def add_run(existing: str | None, section: str) -> str:
    """The report with `section` as its newest run: put right under RUNS_MARKER, the rest of the
    report kept as it was. A report without the marker (written by hand, or by the writer before it
    kept earlier runs) gets the marker under its title and keeps all its text after the new run."""
    section = section.strip("\n") + "\n"
    if not existing or not existing.strip():
        return f"{HEADER}\n\n{RUNS_MARKER}\n\n{section}"
    if RUNS_MARKER in existing:
        head, tail = existing.split(RUNS_MARKER, 1)
        tail = tail.lstrip("\n")
        return f"{head}{RUNS_MARKER}\n\n{section}" + (f"\n{tail}" if tail else "")
    first, _, rest = existing.partition("\n")
    if first.startswith("# "):
        rest = rest.lstrip("\n")
        return f"{first}\n\n{RUNS_MARKER}\n\n{section}\n{rest}"
    return f"{RUNS_MARKER}\n\n{section}\n{existing}"


def write_report(path: Path, section: str) -> None:
    """Add a run's section to the report at `path` (made if missing), keeping earlier runs."""
    existing = path.read_text() if path.is_file() else None
    path.write_text(add_run(existing, section))


def render(version: str, preset: str, results: list[dict[str, Any]], js: dict[str, Any],
           load: tuple[float, float], now: dt.datetime | None = None) -> str:
    """One run's section: a dated heading, how it was run, the scores table, the editor's JS."""
    when = (now or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"## {when}, preset {preset}", "",
        f"`.venv/bin/python -m ops.loadtest.web_perf{' --preset desktop' if preset == 'desktop' else ''}`, "
        f"{when}: Lighthouse {version}, preset {preset}, Chromium at `{CHROMIUM}`, the service as "
        "`make run` starts it, on this machine (2 cores shared with other work: scores move between runs). "
        f"Load average (1 min) before / after: {load[0]:.1f} / {load[1]:.1f} on {os.cpu_count()} cores: "
        "total blocking time, and so the performance score, grow with other work on the machine.",
        "", "| screen | route | performance | accessibility | best practices | FCP ms | LCP ms | TBT ms | CLS |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        s, m = r["scores"], r["metrics"]

        def pct(key: str, s: dict[str, Any] = s) -> str:
            return "-" if s.get(key) is None else str(round(100 * s[key]))

        def ms(key: str, m: dict[str, Any] = m) -> str:
            return "-" if m.get(key) is None else f"{m[key]:.0f}"

        cls = "-" if m.get("cumulative-layout-shift") is None else f"{m['cumulative-layout-shift']:.3f}"
        lines.append(f"| {r['name']} | `{r['path']}` | {pct('performance')} | {pct('accessibility')} | "
                     f"{pct('best-practices')} | {ms('first-contentful-paint')} | {ms('largest-contentful-paint')} | "
                     f"{ms('total-blocking-time')} | {cls} |")
    lines += ["", f"Editor route initial JavaScript: {js['total'] / 1024:.1f} KB gzipped (level 9) over "
              f"{len(js['files'])} files: " + ", ".join(f"{n} {b / 1024:.1f} KB" for n, b in js["files"]) + "."]
    for r in results:
        if r["failed_a11y"] or r["runtime_error"]:
            lines.append(f"- {r['name']}: failed accessibility audits {r['failed_a11y']}"
                         + (f"; runtime error: {r['runtime_error']}" if r["runtime_error"] else ""))
    lines += ["", "Full reports: `var/web-perf/<screen>.html` (not committed).", ""]
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=["mobile", "desktop"], default="mobile")
    parser.add_argument("--no-report", action="store_true", help="print, do not add the run to WEB_PERF.md")
    parser.add_argument("--dist", type=Path, default=DIST, help="the build to serve (default web/dist)")
    args = parser.parse_args()
    dist = args.dist.resolve()
    if not (dist / "index.html").is_file():
        raise SystemExit("web/dist is not built: make web")
    version = ensure_node_modules()
    load_before = os.getloadavg()[0]
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="web-perf-") as tmp:
        extra = {"ESSAYCOACH_WEB_DIST": str(dist),
                 "RAY_SERVE_HAPROXY_METRICS_PORT": str(procs.free_port()),
                 "RAY_SERVE_HAPROXY_STATS_PORT": str(procs.free_port())}
        target = EssayCoachTarget(Path(tmp), extra_env=extra)
        try:
            await target.start()
            world = await layout(target)
            student = {"email": world["student"], "password": world["password"]}
            teacher = {"email": world["teacher"], "password": world["password"]}
            config = {"base": f"http://127.0.0.1:{target.port}", "chromium": CHROMIUM, "out_dir": str(OUT),
                      "preset": args.preset, "screens": [
                          {"name": "login", "path": "/login"},
                          {"name": "editor", "path": f"/essays/{world['essay_id']}", "login": student},
                          {"name": "live-view", "path": f"/classes/{world['class_id']}/live", "login": teacher},
                      ]}
            config_path = Path(tmp) / "config.json"
            config_path.write_text(json.dumps(config))
            log("running Lighthouse on login, editor and live view")
            done = await asyncio.to_thread(
                subprocess.run, ["node", str(HERE / "web_perf.mjs"), str(config_path)], cwd=HERE,
                capture_output=True, text=True, timeout=900, env={**os.environ, "CHROME_PATH": CHROMIUM})
            if done.returncode != 0:
                raise SystemExit(f"lighthouse failed ({done.returncode}):\n{done.stderr[-4000:]}")
            results = json.loads(done.stdout)["results"]
        finally:
            await target.close_http()
            target.stop()
    editor = next(r for r in results if r["name"] == "editor")
    total, files = gzipped_js(editor["scripts"], dist)
    report = render(version, args.preset, results, {"total": total, "files": files},
                    (load_before, os.getloadavg()[0]))
    print(report)
    if not args.no_report:
        write_report(REPORT, report)
        log(f"added the run to {REPORT.relative_to(ROOT)}; full reports in var/web-perf/")


if __name__ == "__main__":
    asyncio.run(main())

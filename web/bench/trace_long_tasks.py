"""Attribute the long tasks of a Chromium performance trace (the one class_view_fps.py saves).

For every task (`RunTask`) over `--over` ms on a renderer main thread (`CrRendererMain`), prints
what ran inside it: the trace events nested in it by self time (FunctionCall, GC, Layout, style,
paint, WebSocketReceive, ...; a FunctionCall names its function and script) and, from the V8
sampling profiler the trace carries, the JavaScript functions by self samples and the heaviest
stacks. Tasks on other threads (the browser process, the compositor) are summed separately:
the page's long-task observer never sees those.

    .venv/bin/python web/bench/trace_long_tasks.py var/web-perf/class_view_trace.json --over 50
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TASK = "RunTask"
# Events worth naming inside a task (the rest are scheduler plumbing).
INTERESTING = {
    "FunctionCall", "EvaluateScript", "v8.compile", "v8.compileModule", "CompileScript", "EventDispatch",
    "TimerFire", "FireAnimationFrame", "WebSocketReceive", "XHRReadyStateChange", "XHRLoad", "RunMicrotasks",
    "MajorGC", "MinorGC", "V8.GC_MARK_COMPACTOR", "V8.GC_SCAVENGER", "V8.GCFinalizeMC", "V8.GCScavenger",
    "BlinkGC.AtomicPhase", "ThreadState::performIdleLazySweep", "Layout", "UpdateLayoutTree",
    "ScheduleStyleRecalculation", "InvalidateLayout", "PrePaint", "Paint", "Layerize", "Commit",
    "HitTest", "ParseHTML", "ParseAuthorStyleSheet", "IntersectionObserverController::computeIntersections",
    "ResourceReceivedData", "ResourceFinish", "AnimationFrame::StyleAndLayout", "AnimationFrame::Render",
}


@dataclass
class Profile:
    """One V8 CPU profile in the trace (a thread's JavaScript samples)."""

    pid: int
    tid: int
    start: float = 0.0
    nodes: dict[int, dict[str, Any]] = field(default_factory=dict)
    samples: list[tuple[float, int]] = field(default_factory=list)  # (ts us, node id)
    _last: float | None = None

    def add_chunk(self, data: dict[str, Any]) -> None:
        prof = data.get("cpuProfile") or {}
        for node in prof.get("nodes") or []:
            self.nodes[node["id"]] = node
        t = self.start if self._last is None else self._last
        for node_id, delta in zip(prof.get("samples") or [], data.get("timeDeltas") or [], strict=False):
            t += delta
            self.samples.append((t, node_id))
        self._last = t

    def frame(self, node_id: int) -> str:
        cf = self.nodes.get(node_id, {}).get("callFrame", {})
        name = cf.get("functionName") or "(anonymous)"
        url = (cf.get("url") or "").rsplit("/", 1)[-1]
        return f"{name} {url}:{cf.get('lineNumber', -1) + 1}:{cf.get('columnNumber', -1) + 1}" if url else name

    def stack(self, node_id: int, depth: int) -> list[str]:
        out: list[str] = []
        current: int | None = node_id
        while current is not None and len(out) < depth:
            out.append(self.frame(current))
            current = self.nodes.get(current, {}).get("parent")
        return out


def load(path: Path) -> list[dict[str, Any]]:
    data = json.loads(path.read_text())
    return data["traceEvents"] if isinstance(data, dict) else data


def profiles(events: list[dict[str, Any]]) -> list[Profile]:
    found: dict[tuple[int, str], Profile] = {}
    for e in events:
        if e.get("name") == "Profile":
            p = found.setdefault((e["pid"], e["id"]), Profile(e["pid"], e["tid"]))
            p.start = float(e.get("args", {}).get("data", {}).get("startTime", e["ts"]))
    for e in events:
        if e.get("name") == "ProfileChunk":
            key = (e["pid"], e["id"])
            if key in found:
                found[key].add_chunk(e.get("args", {}).get("data", {}))
    # Nodes arrive before the chunks that reference their parents: fill in parents from children.
    for p in found.values():
        for node in list(p.nodes.values()):
            for child in node.get("children") or []:
                p.nodes.setdefault(child, {}).setdefault("parent", node["id"])
    return list(found.values())


def page_main_thread(events: list[dict[str, Any]]) -> tuple[int, int] | None:
    """The page's renderer main thread: the busiest of those that logged a `console.timeStamp` (the
    bench marks its phases so), else the busiest of all. Other renderers are traced too (an idle
    about:blank, and Chromium's New Tab page, whose start-up is sometimes busier than the page's)."""
    mains = {(e["pid"], e["tid"]) for e in events
             if e.get("ph") == "M" and e.get("name") == "thread_name" and e["args"]["name"] == "CrRendererMain"}
    marked = {(e["pid"], e["tid"]) for e in events if e.get("name") == "TimeStamp"} & mains
    mains = marked or mains
    busy: Counter[tuple[int, int]] = Counter()
    for e in events:
        if e.get("name") == TASK and (e["pid"], e["tid"]) in mains:
            busy[(e["pid"], e["tid"])] += e.get("dur", 0)
    return busy.most_common(1)[0][0] if busy else None


def window(events: list[dict[str, Any]], start_mark: str, end_mark: str) -> tuple[float, float]:
    """Trace time (us) between two `console.timeStamp` marks (the whole trace if either is missing)."""
    stamps = {e["args"]["data"].get("message"): e["ts"] for e in events
              if e.get("name") == "TimeStamp" and "data" in (e.get("args") or {})}
    return stamps.get(start_mark, float("-inf")), stamps.get(end_mark, float("inf"))


def long_tasks(events: list[dict[str, Any]], over_ms: float, start_mark: str = "",
               end_mark: str = "") -> list[dict[str, float]]:
    """The page's main-thread tasks over `over_ms` of wall time between two marks: wall and thread
    (CPU) ms, and seconds from the start mark. Wall time is what the long-task observer counts; a
    task whose thread time is short waited for a CPU (other processes), not for the page's code."""
    key = page_main_thread(events)
    start, end = window(events, start_mark, end_mark)
    mine = [e for e in events if e.get("name") == TASK and (e["pid"], e["tid"]) == key]
    origin = start if start != float("-inf") else min((e["ts"] for e in mine), default=0.0)
    return [{"wall_ms": round(e["dur"] / 1000, 1), "cpu_ms": round(e.get("tdur", 0) / 1000, 1),
             "at_s": round((e["ts"] - origin) / 1e6, 2)}
            for e in sorted(mine, key=lambda e: e["ts"])
            if e.get("ph") == "X" and start <= e["ts"] < end and e.get("dur", 0) > over_ms * 1000]


SCRIPT_EVENTS = {"EvaluateScript", "FunctionCall", "v8.compile", "v8.compileModule", "v8.evaluateModule", "v8.run",
                 "CompileScript", "v8.produceModuleCache", "v8.produceCache"}


def script_url(e: dict[str, Any]) -> str | None:
    """The script a trace event ran or compiled, or None if it names none (not a script event)."""
    if e.get("name") not in SCRIPT_EVENTS:
        return None
    if e["name"] == "v8.evaluateModule":
        return "(module)"  # a module's evaluation names no URL; only the page runs modules here
    args = e.get("args") or {}
    data = args.get("data") or {}
    return str(data.get("url") or args.get("fileName") or data.get("fileName") or "")


# What a page's own script is named by: a URL it was fetched from, or a module's evaluation.
PAGE_SCRIPT_PREFIXES = ("http:", "https:", "file:", "blob:", "data:")


def origin(scripts: list[str]) -> str:
    """Whose work a task was, from the scripts that ran in it: "harness" when none of them is the
    page's, i.e. every one has no URL or a made-up one (what CDP evaluates: Playwright's injected
    and utility scripts, `page.evaluate`, init scripts; Lighthouse's `_lighthouse-eval.js`,
    Puppeteer's `__puppeteer_evaluation_script__`), "page" otherwise: the page's scripts (fetched
    from a URL; a module's evaluation counts as the page's), or no script at all (style, layout,
    paint, parsing, the page's events)."""
    ours = [s for s in scripts if s == "(module)" or s.startswith(PAGE_SCRIPT_PREFIXES)]
    return "harness" if scripts and not ours else "page"


def page_tasks(events: list[dict[str, Any]], start_mark: str = "", end_mark: str = "") -> list[dict[str, Any]]:
    """Every task on the page's main thread between two marks (the whole trace without them), in
    order: wall and thread (CPU) ms, seconds from the start mark, its `origin` ("page" or
    "harness") and the scripts it ran (a URL's file name; "" for a script without one)."""
    key = page_main_thread(events)
    start, end = window(events, start_mark, end_mark)
    mine = sorted((e for e in events if (e.get("pid"), e.get("tid")) == key and e.get("ph") == "X"),
                  key=lambda e: e["ts"])
    tasks = [e for e in mine if e.get("name") == TASK]
    origin_ts = start if start != float("-inf") else min((e["ts"] for e in tasks), default=0.0)
    out: list[dict[str, Any]] = []
    i = 0
    for task in tasks:
        t0, t1 = task["ts"], task["ts"] + task.get("dur", 0)
        while i < len(mine) and mine[i]["ts"] < t0:
            i += 1
        scripts: list[str] = []
        j = i
        while j < len(mine) and mine[j]["ts"] < t1:
            url = script_url(mine[j])
            if url is not None:
                scripts.append(url)
            j += 1
        if not start <= t0 < end:
            continue
        out.append({"wall_ms": round(task.get("dur", 0) / 1000, 1), "cpu_ms": round(task.get("tdur", 0) / 1000, 1),
                    "at_s": round((t0 - origin_ts) / 1e6, 2), "origin": origin(scripts),
                    "scripts": sorted({u.rsplit("/", 1)[-1] if u.startswith(PAGE_SCRIPT_PREFIXES) else u
                                       for u in scripts})})
    return out


def harness_observed(observed: list[dict[str, float]], traced: list[dict[str, Any]], *, start_s: float = 0.0,
                     at_tolerance_s: float = 0.005, ms_tolerance: float = 3.0) -> list[bool]:
    """For each long task the page's observer saw (`at` in seconds of the page's clock, `ms` wall),
    whether it is one of the harness's tasks in the trace (`page_tasks` with origin "harness"): the
    same start, counted from the trace's start mark (made at `start_s` on the page's clock), and the
    same length, within the tolerances. The observer cannot tell the two apart itself."""
    harness = [t for t in traced if t["origin"] == "harness"]
    return [any(abs(t["at_s"] - (o["at"] - start_s)) <= at_tolerance_s and abs(t["wall_ms"] - o["ms"]) <= ms_tolerance
                for t in harness) for o in observed]


def phases(events: list[dict[str, Any]], marks: list[tuple[str, str]]) -> dict[str, dict[str, float]]:
    """Per phase (a name and the mark it starts at; it ends at the next phase's mark), the page's
    main-thread tasks: how many, their CPU ms in all, the largest by CPU and by wall time, and how
    many were over 50 ms of wall time. Phases whose mark is missing are left out."""
    key = page_main_thread(events)
    stamps = {e["args"]["data"].get("message"): e["ts"] for e in events
              if e.get("name") == "TimeStamp" and "data" in (e.get("args") or {})}
    mine = [e for e in events if e.get("name") == TASK and e.get("ph") == "X" and (e["pid"], e["tid"]) == key]
    bounds = [(name, stamps[mark]) for name, mark in marks if mark in stamps]
    out: dict[str, dict[str, float]] = {}
    for (name, start), (_, end) in zip(bounds, [*bounds[1:], ("", float("inf"))], strict=True):
        tasks = [e for e in mine if start <= e["ts"] < end]
        out[name] = {"tasks": len(tasks), "cpu_ms": round(sum(e.get("tdur", 0) for e in tasks) / 1000, 1),
                     "max_cpu_ms": round(max((e.get("tdur", 0) for e in tasks), default=0) / 1000, 1),
                     "max_wall_ms": round(max((e["dur"] for e in tasks), default=0) / 1000, 1),
                     "over_50_ms_wall": sum(e["dur"] > 50_000 for e in tasks)}
    return out


def describe(e: dict[str, Any]) -> str:
    data = (e.get("args") or {}).get("data") or {}
    if e["name"] == "FunctionCall":
        url = (data.get("url") or "").rsplit("/", 1)[-1]
        return f"FunctionCall {data.get('functionName') or '(anonymous)'} {url}:{data.get('lineNumber', '?')}"
    if e["name"] == "TimerFire":
        return f"TimerFire #{data.get('timerId')}"
    if e["name"] == "EventDispatch":
        return f"EventDispatch {data.get('type')}"
    return str(e["name"])


def summary(inner: list[dict[str, Any]], prof: Profile | None, top: int) -> None:
    """Main-thread time of the whole trace by event (inclusive ms) and JavaScript by self samples."""
    total: Counter[str] = Counter()
    for e in inner:
        if e["name"] in INTERESTING:
            total[describe(e)] += e["dur"] / 1000
    print("   whole trace, inclusive ms by event:")
    for label, ms in total.most_common(top * 2):
        print(f"     {ms:8.1f}  {label}")
    if prof is not None and prof.samples:
        counts = Counter(prof.frame(n) for _, n in prof.samples)
        busy = sum(n for f, n in counts.items() if f not in ("(idle)", "(program)", "(garbage collector)"))
        print(f"   JS self samples ({len(prof.samples)} samples, {busy} in JS):")
        for frame, n in counts.most_common(top * 2):
            print(f"     {n:6d}  {frame}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("trace", type=Path)
    ap.add_argument("--over", type=float, default=50, help="long task threshold, ms")
    ap.add_argument("--top", type=int, default=8, help="lines per breakdown")
    ap.add_argument("--depth", type=int, default=6, help="frames per stack")
    ap.add_argument("--by", choices=("wall", "cpu"), default="wall",
                    help="a task is long by wall time (what the page's long-task observer counts) or by thread time")
    ap.add_argument("--summary", action="store_true", help="also where the whole trace's main-thread time went")
    args = ap.parse_args()
    events = load(args.trace)

    names = {(e["pid"], e["tid"]): e["args"]["name"] for e in events
             if e.get("ph") == "M" and e.get("name") == "thread_name"}
    main_threads = {k for k, v in names.items() if v == "CrRendererMain"}
    by_thread: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        if e.get("ph") == "X" and "dur" in e:
            by_thread[(e["pid"], e["tid"])].append(e)
    profs = {(p.pid, p.tid): p for p in profiles(events)}
    over_us = args.over * 1000

    # Renderer main threads: the one with the most work is the page.
    busiest = sorted(main_threads, key=lambda k: -sum(e["dur"] for e in by_thread[k] if e["name"] == TASK))
    for key in busiest:
        tasks = [e for e in by_thread[key] if e["name"] == TASK]
        if not tasks:
            continue
        span = (max(e["ts"] + e["dur"] for e in tasks) - min(e["ts"] for e in tasks)) / 1e6
        busy = sum(e["dur"] for e in tasks) / 1000
        measure = "tdur" if args.by == "cpu" else "dur"
        longs = sorted((e for e in tasks if e.get(measure, 0) > over_us), key=lambda e: e["ts"])
        print(f"== renderer main pid {key[0]} tid {key[1]}: {len(tasks)} tasks over {span:.1f} s, "
              f"busy {busy:.0f} ms ({busy / 10 / max(span, 1e-9):.0f}%), {len(longs)} over {args.over:g} ms "
              f"of {'thread (CPU)' if args.by == 'cpu' else 'wall'} time")
        durs = sorted((e["dur"] / 1000 for e in tasks), reverse=True)[:5]
        cpu = sorted((e.get("tdur", 0) / 1000 for e in tasks), reverse=True)[:5]
        print("   longest tasks ms, wall:", ", ".join(f"{d:.1f}" for d in durs),
              "| by thread (CPU) time:", ", ".join(f"{d:.1f}" for d in cpu))
        inner = sorted(by_thread[key], key=lambda e: e["ts"])
        prof = profs.get(key)
        if args.summary:
            summary(inner, prof, args.top)
        t0 = min(e["ts"] for e in tasks)
        for task in longs:
            start, end = task["ts"], task["ts"] + task["dur"]
            print(f"-- task at +{(start - t0) / 1e6:.2f} s: {task['dur'] / 1000:.1f} ms "
                  f"(thread time {task.get('tdur', 0) / 1000:.1f} ms: the rest is waiting for a CPU)")
            nested = [e for e in inner if start <= e["ts"] < end and e is not task and e["name"] in INTERESTING]
            total: Counter[str] = Counter()
            count: Counter[str] = Counter()
            for e in nested:
                total[describe(e)] += e["dur"] / 1000
                count[describe(e)] += 1
            for label, ms in total.most_common(args.top):
                print(f"     {ms:7.1f} ms x{count[label]:<4} {label}")
            if prof is None:
                continue
            window = [n for t, n in prof.samples if start <= t < end]
            if not window:
                continue
            print(f"     JS samples in the task: {len(window)}; by self:")
            for node_id, n in Counter(prof.frame(n) for n in window).most_common(args.top):
                print(f"       {n:5d}  {node_id}")
            print("     heaviest stacks (leaf first):")
            for stack, n in Counter(tuple(prof.stack(n, args.depth)) for n in window).most_common(3):
                print(f"       {n:5d}  " + " <- ".join(stack))
    others = [(names.get(k, "?"), e["dur"] / 1000) for k, evs in by_thread.items() if k not in main_threads
              for e in evs if e["name"] == TASK and e["dur"] > over_us]
    if others:
        by_name: dict[str, list[float]] = defaultdict(list)
        for name, ms in others:
            by_name[name].append(ms)
        print(f"== tasks over {args.over:g} ms on other threads (not page long tasks):",
              "; ".join(f"{n}: {len(v)} (max {max(v):.0f} ms)" for n, v in sorted(by_name.items())))


if __name__ == "__main__":
    main()

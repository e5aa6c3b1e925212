"""web/bench/trace_long_tasks.py: whose work each of the page's main-thread tasks was (the page's or
the harness's: Playwright's injected scripts, the bench's evaluate calls), from a trace's events."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def bench_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("trace_long_tasks", ROOT / "web" / "bench" / "trace_long_tasks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


tlt = bench_module()
PAGE = {"pid": 7, "tid": 7}


def task(ts: float, dur: float, cpu: float) -> dict[str, Any]:
    return {**PAGE, "ph": "X", "name": "RunTask", "ts": ts, "dur": dur, "tdur": cpu}


def inner(name: str, ts: float, dur: float, **data: Any) -> dict[str, Any]:
    return {**PAGE, "ph": "X", "name": name, "ts": ts, "dur": dur, "args": {"data": data}}


def trace() -> list[dict[str, Any]]:
    return [
        {**PAGE, "ph": "M", "name": "thread_name", "args": {"name": "CrRendererMain"}},
        task(0, 60_000, 15_000),  # before the page's start mark (the tab's about:blank): left out
        inner("EvaluateScript", 100, 50_000),
        {**PAGE, "ph": "I", "name": "TimeStamp", "ts": 1_000, "args": {"data": {"message": "bench-page-start"}}},
        task(2_000, 30_000, 20_000),  # the entry module's evaluation (its event names no URL)
        inner("v8.compileModule", 2_050, 1_000, url="http://127.0.0.1:8000/assets/index-a1.js"),
        inner("v8.evaluateModule", 2_100, 25_000),
        task(40_000, 61_000, 15_000),  # Playwright's utility script: evaluated over CDP, no URL
        inner("EvaluateScript", 40_100, 58_000),
        task(120_000, 55_000, 9_000),  # style and layout only: the page's
        inner("Layout", 120_100, 40_000),
        task(200_000, 12_000, 8_000),  # a socket message handled by the page's code
        inner("FunctionCall", 200_100, 11_000, url="http://127.0.0.1:8000/assets/ticketSocket-b2.js",
              functionName="onmessage"),
        task(300_000, 20_000, 12_000),  # the bench's evaluate that ran the page's code: counted as the page's
        inner("EvaluateScript", 300_100, 19_000),
        inner("FunctionCall", 300_200, 15_000, url="http://127.0.0.1:8000/assets/index-a1.js", functionName="go"),
        task(400_000, 70_000, 30_000),  # Lighthouse's own script in the page (a made-up sourceURL)
        inner("FunctionCall", 400_100, 69_000, url="_lighthouse-eval.js", functionName=""),
    ]


def test_each_task_after_the_mark_is_the_pages_or_the_harnesss_by_the_scripts_it_ran() -> None:
    tasks = tlt.page_tasks(trace(), "bench-page-start")
    assert [(t["at_s"], t["origin"]) for t in tasks] == [
        (0.0, "page"), (0.04, "harness"), (0.12, "page"), (0.2, "page"), (0.3, "page"), (0.4, "harness")]
    assert tasks[0]["scripts"] == ["(module)", "index-a1.js"]
    assert tasks[1] == {"wall_ms": 61.0, "cpu_ms": 15.0, "at_s": 0.04, "origin": "harness", "scripts": [""]}
    assert tasks[2]["scripts"] == []
    assert tasks[3]["scripts"] == ["ticketSocket-b2.js"]
    assert tasks[4]["scripts"] == ["", "index-a1.js"]
    assert tasks[5]["scripts"] == ["_lighthouse-eval.js"]


def test_the_observers_long_tasks_that_are_the_harnesss_are_found_by_start_and_length() -> None:
    traced = tlt.page_tasks(trace(), "bench-page-start")
    # The page's clock: the mark was made 0.25 s after its time origin.
    observed = [{"ms": 61.4, "at": 0.289}, {"ms": 55.0, "at": 0.369}, {"ms": 61.0, "at": 0.369}]
    assert tlt.harness_observed(observed, traced, start_s=0.25) == [True, False, False]

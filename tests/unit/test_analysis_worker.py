"""The rules-worker process (actors/analysis/worker.py): the same results as in-process analysis,
restart and retry after a crash, in-process fallback, and no child outliving its parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors.analysis.engine import AnalysisEngine
from actors.analysis.local import LocalAnalyzer
from actors.analysis.paragraphs import split_paragraphs
from actors.analysis.worker import RulesWorker, WorkerFailed
from tests.fakes import metric_value as value
from tests.rules_worker import COMMAND

TEXTS = [
    "I beleive teh answer is obvius. Their going to the libary tomorow, and then they goes home.",
    # Cyrillic with English misspellings inside: offsets are code points on both sides.
    "Школа учит нас думать, а дом учит нас жить. I recieve the letter. Учитель читает книгу.\n"
    "Ученик пишет сочинение, and he dont know wich word to use.",
    # Astral characters (two UTF-16 units, one code point), accents, CJK.
    "The café was definately full 😀😀 of naïve studnets. 学生们在写作文. Alot of peple came.\n\n"
    "A second paragraph that repeats repeats a word. It it is very very short.",
    "",
]


@pytest.fixture(scope="module")
def worker() -> Iterator[RulesWorker]:
    w = RulesWorker()
    yield w
    w.close()


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting for a reaper counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_gone(pid: int, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_paragraph_items_are_those_of_in_process_analysis(worker: RulesWorker) -> None:
    local = LocalAnalyzer()
    paragraphs = [p.text for text in TEXTS for p in split_paragraphs(text)]
    dictionary = frozenset({"studnets"})
    assert worker.call_sync("paragraphs", paragraphs, dictionary) == [
        local.analyze_paragraph(text, dictionary=dictionary) for text in paragraphs]


async def test_a_whole_run_in_the_worker_equals_the_run_in_process(worker: RulesWorker) -> None:
    text = "\n".join(TEXTS * 200)  # > offload_chars: the whole run goes to the worker
    edited = text.replace("Школа", "Школа и дом", 1)
    here, there = AnalysisEngine(LocalAnalyzer()), AnalysisEngine(LocalAnalyzer(), worker=worker)
    jobs = worker.jobs
    for old, new in (("", text), (text, edited)):
        expected = await here.analyze_changed(old, new)
        got = await there.analyze_changed(old, new)
        assert got == expected and got.items
    assert worker.jobs == jobs + 2


async def test_a_whole_run_in_the_worker_leaves_its_paragraphs_in_this_processs_cache(worker: RulesWorker) -> None:
    # Paragraphs the (module's) child has not analysed before: it sends back what it computes.
    paragraphs = [p.text for text in TEXTS for p in split_paragraphs(text)]
    text = "\n".join(f"Cached part {i}: {paragraph}" for i in range(100) for paragraph in paragraphs)
    engine = AnalysisEngine(LocalAnalyzer(), worker=worker)
    jobs = worker.jobs
    await engine.analyze_changed("", text)
    assert worker.jobs == jobs + 1
    engine.worker = None  # a later run in this process (with the LLM, or with the worker gone)
    edited = text + "\nA new last paragraph, with a mistaek."
    again = await engine.analyze_changed(text, edited)
    assert again.local_ran == [split_paragraphs(edited)[-1].hash]
    assert again.items == (await AnalysisEngine(LocalAnalyzer()).analyze_changed(text, edited)).items


async def test_big_uncached_paragraphs_go_to_the_worker_small_ones_stay_here(worker: RulesWorker) -> None:
    engine = AnalysisEngine(LocalAnalyzer(), worker=worker, worker_min_chars=1_000)
    reference = AnalysisEngine(LocalAnalyzer())
    jobs = worker.jobs
    small = TEXTS[0]
    assert (await engine.analyze_changed("", small)) == (await reference.analyze_changed("", small))
    assert worker.jobs == jobs  # below worker_min_chars: in this process
    big = "\n".join(f"Part {i}: {text}" for i in range(10) for text in TEXTS[:3])  # 30 distinct paragraphs
    assert (await engine.analyze_changed(small, big)) == (await reference.analyze_changed(small, big))
    assert worker.jobs == jobs + 1


def test_a_crashed_worker_is_restarted_and_the_job_retried_once(tmp_path: Path) -> None:
    w = RulesWorker(command=COMMAND)
    try:
        first = w.call_sync("pid")
        second = w.call_sync("crash_once", str(tmp_path / "crashed"))
        assert second != first and w.restarts == 1
        assert not alive(first)
        assert w.call_sync("paragraphs", [TEXTS[0]], frozenset()) == [LocalAnalyzer().analyze_paragraph(TEXTS[0])]
    finally:
        w.close()


def test_a_worker_killed_between_jobs_is_replaced() -> None:
    w = RulesWorker()
    try:
        first = w.call_sync("pid")
        os.kill(first, signal.SIGKILL)
        assert wait_gone(first)
        assert w.call_sync("pid") not in (None, first)
    finally:
        w.close()


async def test_a_worker_that_keeps_dying_leaves_the_engine_analysing_in_process() -> None:
    broken = RulesWorker(command=[sys.executable, "-c", "import sys; sys.exit(3)"])
    try:
        with pytest.raises(WorkerFailed):
            broken.call_sync("pid")
        text = "\n".join(TEXTS * 200)
        engine = AnalysisEngine(LocalAnalyzer(), worker=broken, worker_min_chars=1)
        reference = AnalysisEngine(LocalAnalyzer())
        restarts, failed = broken.restarts, value("essaycoach_rules_worker_fallbacks_total", {"reason": "worker_failed"})
        assert await engine.analyze_changed("", TEXTS[1]) == await reference.analyze_changed("", TEXTS[1])
        assert await engine.analyze_changed("", text) == await reference.analyze_changed("", text)
        # Each job was tried in a child, restarted once when it died, before it ran here.
        assert broken.restarts == restarts + 4 and broken.jobs == 0
        assert value("essaycoach_rules_worker_fallbacks_total", {"reason": "worker_failed"}) == failed + 2
    finally:
        broken.close()


async def test_a_job_that_raises_in_the_worker_runs_once_in_this_process(caplog: pytest.LogCaptureFixture) -> None:
    """A bug in the worker's side costs the student's feedback time, not the feedback."""
    failing = RulesWorker(command=[*COMMAND, "--failing"])
    try:
        engine = AnalysisEngine(LocalAnalyzer(), worker=failing, worker_min_chars=1)
        reference = AnalysisEngine(LocalAnalyzer())
        errors = value("essaycoach_rules_worker_fallbacks_total", {"reason": "job_error"})
        text = "\n".join(TEXTS * 200)
        assert await engine.analyze_changed("", TEXTS[1]) == await reference.analyze_changed("", TEXTS[1])
        assert await engine.analyze_changed("", text) == await reference.analyze_changed("", text)
        assert failing.jobs == 2 and failing.restarts == 0  # each job answered (with its error), once
        assert value("essaycoach_rules_worker_fallbacks_total", {"reason": "job_error"}) == errors + 2
        logged = [r for r in caplog.records if r.levelname == "ERROR" and "rules worker job failed" in r.message]
        assert len(logged) == 1 and "a bug in the rules worker's job" in logged[0].message  # its traceback once
        again = [r for r in caplog.records if r.levelname == "WARNING" and "job failed again" in r.message]
        assert len(again) == 1 and "Traceback" not in again[0].message
    finally:
        failing.close()


def test_production_workers_run_no_test_hooks(worker: RulesWorker) -> None:
    from actors.analysis.worker import OPS, WorkerJobError

    assert set(OPS) == {"paragraphs", "run", "pid"}
    with pytest.raises(WorkerJobError, match="crash_once"):
        worker.call_sync("crash_once", "/nonexistent/marker")


def test_close_kills_the_worker_and_later_jobs_fail() -> None:
    w = RulesWorker()
    pid = w.call_sync("pid")
    w.close()
    assert wait_gone(pid)
    with pytest.raises(WorkerFailed):
        w.call_sync("pid")


@pytest.mark.parametrize("busy", [False, True], ids=["idle", "mid-job"])
def test_the_worker_does_not_outlive_a_killed_parent(busy: bool) -> None:
    # A parent process that starts a worker, reports its pid, then is SIGKILLed (no clean-up runs).
    script = (
        "import sys, threading\n"
        "from actors.analysis.worker import RulesWorker\n"
        "w = RulesWorker()\n"
        "print(w.call_sync('pid'), flush=True)\n"
        + ("threading.Thread(target=w.call_sync, args=('paragraphs', ['a b c. ' * 200_000], frozenset())).start()\n"
           if busy else "")
        + "sys.stdin.read()\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    assert alive(child)
    parent.kill()
    parent.wait()
    assert wait_gone(child), f"rules worker {child} outlived its parent"

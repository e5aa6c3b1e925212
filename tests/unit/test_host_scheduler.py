"""actors.scheduler.FeedbackScheduler on a fake clock: when tier 1 and the LLM tier run.

No real sleeps: the scheduler's `sleep` moves a fake clock, runs what a test scheduled up to
then (a student typing) and then a tier-1 round, as the host's loop does every
`local_pause_seconds / 2` (or, for `FeedbackScheduler.run`, moves it later than asked: a busy
loop). Times are multiples of 1/64 s, so every sum is exact.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from prometheus_client import REGISTRY

from actors.analysis.engine import AnalysisEngine, AnalysisResult
from actors.analysis.local import LocalAnalyzer
from actors.analysis.paragraphs import changed_paragraphs, split_paragraphs
from actors.analysis.provider import Usage
from actors.broadcast import InMemoryBus
from actors.config import HostConfig
from actors.doc import EssayDoc
from actors.essay import EssayMeta, LiveEssay
from actors.events import EventLog
from actors.scheduler import FeedbackScheduler, repeat
from tests.unit.test_host_decisions import Typist

CFG = HostConfig(local_pause_seconds=0.0625, local_min_interval=0.5, llm_pause_seconds=2.0, llm_settle_seconds=15.0)


class Timeline:
    """A fake clock whose `sleep` moves it, runs the actions scheduled up to then, then a round."""

    def __init__(self, *, late: float = 0.0, cpu_share: float = 0.0, until: float = float("inf")) -> None:
        self.now = 0.0
        self.actions: list[tuple[float, Callable[[], None]]] = []
        self.scheduler: FeedbackScheduler | None = None
        self.late = late  # each sleep wakes this much later than asked (a busy event loop)
        self.until = until  # a sleep past this ends the test's `run()` (as the host's stop does)
        self.cpu_share = cpu_share  # the loop thread's CPU time: this share of the time passed

    def cpu(self) -> float:
        return self.now * self.cpu_share

    def __call__(self) -> float:
        return self.now

    def at(self, when: float, action: Callable[[], None]) -> None:
        self.actions.append((when, action))

    async def sleep(self, seconds: float) -> None:
        if self.now >= self.until:
            raise asyncio.CancelledError
        self.now += seconds + self.late
        for entry in [a for a in self.actions if a[0] <= self.now]:
            self.actions.remove(entry)
            entry[1]()
        if self.scheduler is not None:
            await self.scheduler.round()


class RecordingAnalyzer:
    """Reports the paragraphs that changed since the text it is given as the old one (as the
    engine does) and no items; records each run: (time, LLM tier?, paragraphs the LLM holds)."""

    def __init__(self, clock: Timeline, *, llm: bool) -> None:
        self.clock = clock
        self.llm = llm
        self.runs: list[tuple[float, bool, frozenset[str] | None]] = []
        self.texts: list[str] = []

    @property
    def llm_enabled(self) -> bool:
        return self.llm

    async def analyze_changed(self, old_text: str, new_text: str, **kwargs: Any) -> AnalysisResult:
        run_llm, llm_hold = kwargs["run_llm"], kwargs["llm_hold"]
        self.runs.append((self.clock.now, run_llm, llm_hold if run_llm else None))
        self.texts.append(new_text)
        changed = changed_paragraphs(split_paragraphs(old_text), split_paragraphs(new_text))
        return AnalysisResult(items=[], changed=changed, local_ran=[], llm_sent=[], usage=Usage())

    async def score_rubric(self, text: str, rubric: Any, items: Any = (), **kwargs: Any) -> Any:
        raise AssertionError("not scored here")


def setup(*, llm: bool, clock: Timeline | None = None, config: HostConfig = CFG, rounds_on_sleep: bool = True,
          name: str = "essay-host") -> tuple[Timeline, RecordingAnalyzer, FeedbackScheduler, LiveEssay, Typist]:
    clock = clock or Timeline()
    analyzer = RecordingAnalyzer(clock, llm=llm)

    async def no_usage(essay: LiveEssay, usage: Any) -> None:
        raise AssertionError("the fake spends no tokens")

    scheduler = FeedbackScheduler(analyzer=analyzer, local_analyzer=None, config=config,
                                  events=EventLog(InMemoryBus()), record_usage=no_usage, clock=clock,
                                  sleep=clock.sleep, cpu_clock=clock.cpu, name=name)
    if rounds_on_sleep:
        clock.scheduler = scheduler
    meta = EssayMeta(essay_id=uuid.uuid4(), owner_id=uuid.uuid4(), class_id=None, title="t")
    essay = LiveEssay(meta=meta, doc=EssayDoc(), seq=0, watermark=0)
    return clock, analyzer, scheduler, essay, Typist(essay)


async def test_tier1_runs_at_the_pause_and_at_most_once_per_interval_while_typing_goes_on() -> None:
    clock, analyzer, scheduler, essay, typist = setup(llm=False)
    words = [f"w{i} " for i in range(16)]  # one every 1/8 s for 2 s: each gap is a "pause" of 1/16 s
    step = CFG.local_pause_seconds / 2  # the host's round interval
    for n in range(int(3.0 / step)):
        clock.now = n * step
        if n % 4 == 0 and n // 4 < len(words):
            typist.type(words[n // 4], at=clock.now)
            scheduler.typed(essay)
        await scheduler.round()
    # The first pause, then once per local_min_interval (0.5 s), then after the last word.
    assert [t for t, _, _ in analyzer.runs] == [0.0625, 0.5625, 1.0625, 1.5625, 2.0625]
    assert analyzer.texts[-1] == "".join(words)
    assert not scheduler.waiting and essay.analysis_task is None  # no task per essay without an LLM


# Busy: the loop's thread over half a core or its smoothed lag over 5 ms stretches the 0.5 s
# interval up to 2 s; a 1/4 s stop still brings tier 1.
PACED = replace(CFG, tier1_pacing=True, local_max_interval=2.0, tier1_busy_cpu_share=0.5, tier1_busy_lag_seconds=0.005,
                local_stop_seconds=0.25)


@pytest.mark.parametrize(("late", "cpu_share", "runs_while_typing"),
                         [(0.0, 0.25, 8), (1 / 64, 0.25, 2), (0.0, 0.75, 2)], ids=["calm", "late", "cpu"])
async def test_a_busy_host_spaces_out_tier1_while_typing_goes_on_and_runs_it_soon_after_the_student_stops(
        late: float, cpu_share: float, runs_while_typing: int) -> None:
    """The tier-1 loop's timer waking 1/64 s late round after round, or its thread using three
    quarters of a core, is a busy host: typing and acks come first, so tier 1 reruns less often
    while the student types on (the stretched interval is exported), and still runs within
    `local_stop_seconds` of the student stopping."""
    clock = Timeline(late=late, cpu_share=cpu_share, until=6.0)
    name = f"paced-{late}-{cpu_share}"
    clock, analyzer, scheduler, essay, typist = setup(llm=False, clock=clock, config=PACED, rounds_on_sleep=False,
                                                      name=name)

    def word() -> None:
        typist.type("word ", at=clock.now)
        scheduler.typed(essay)

    for n in range(33):  # a word every 1/8 s for 4 s: every gap a "pause" of local_pause_seconds
        clock.at(n / 8, word)
    with pytest.raises(asyncio.CancelledError):
        await scheduler.run()
    typing = [t for t, _, _ in analyzer.runs if t <= 4.0]  # calm: every 0.5 s; busy: the first, then 2 s on
    assert len(typing) == runs_while_typing, analyzer.runs
    stopped = [t for t, _, _ in analyzer.runs if t > 4.0]  # the last word came at 4 s (within a round of it)
    assert len(stopped) == 1 and stopped[0] <= 4.0 + PACED.local_stop_seconds + 2 * (1 / 32 + late), analyzer.runs
    assert analyzer.texts[-1] == "word " * 33
    gauge = REGISTRY.get_sample_value("essaycoach_tier1_interval_seconds", {"host": name})
    busy = runs_while_typing < 8
    assert gauge == scheduler.pacing.interval == (PACED.local_max_interval if busy else PACED.local_min_interval)


async def test_the_llm_waits_for_a_pause_holds_the_paragraph_being_written_and_sends_it_once_settled() -> None:
    clock, analyzer, scheduler, essay, typist = setup(llm=True)
    typist.type("Homework is useful. ", at=0.0)
    scheduler.typed(essay)

    def more() -> None:  # typing during the LLM's pause restarts it
        typist.type("It builds habits. ", at=clock.now)
        scheduler.typed(essay)

    clock.at(1.0, more)
    await clock.sleep(CFG.local_pause_seconds)  # the first round: tier 1, then the LLM task starts
    assert essay.analysis_task is not None
    await asyncio.wait_for(essay.analysis_task, 10)
    [paragraph] = split_paragraphs(essay.doc.text)
    assert analyzer.runs == [
        (0.0625, False, None),  # tier 1 at the pause
        (1.0625, False, None),  # tier 1 again after the new sentence (its interval had passed)
        (3.0, True, frozenset({paragraph.hash})),  # the LLM pause after the last edit: still being written
        (16.0, True, frozenset()),  # settled: the paragraph goes too
    ]
    assert essay.active_paragraphs == set() and essay.analysis_task.done()


async def test_a_result_for_text_that_moved_on_is_dropped() -> None:
    clock, analyzer, scheduler, essay, typist = setup(llm=False)
    typist.type("First words. ", at=0.0)
    real = analyzer.analyze_changed

    async def typing_meanwhile(old_text: str, new_text: str, **kwargs: Any) -> AnalysisResult:
        result = await real(old_text, new_text, **kwargs)
        typist.type("More. ", at=clock.now)  # the student typed while the analysis ran
        return result

    analyzer.analyze_changed = typing_meanwhile  # type: ignore[method-assign]
    assert not await scheduler.analyze(essay, run_llm=False)
    assert essay.analyzed_text == "" and essay.active_paragraphs == set()


async def test_tier1_points_out_a_missing_thesis_as_soon_as_typing_makes_the_essay_long_enough() -> None:
    """Typing on in the last paragraph takes the essay past the words the structure rules wait
    for: the next tier-1 run says so, not only once a paragraph is added or removed."""
    clock = Timeline()

    async def no_usage(essay: LiveEssay, usage: Any) -> None:
        raise AssertionError("no LLM here")

    scheduler = FeedbackScheduler(analyzer=AnalysisEngine(LocalAnalyzer()), local_analyzer=None, config=CFG,
                                  events=EventLog(InMemoryBus()), record_usage=no_usage, clock=clock,
                                  sleep=clock.sleep)
    clock.scheduler = scheduler
    meta = EssayMeta(essay_id=uuid.uuid4(), owner_id=uuid.uuid4(), class_id=None, title="t")
    essay = LiveEssay(meta=meta, doc=EssayDoc(), seq=0, watermark=0)
    typist = Typist(essay)
    body = "Dogs sleep a lot during the day and play in the evening with their friends. "

    def write(text: str) -> None:
        for word in text.split(" "):
            typist.type(word + " " if word else "", at=clock.now)
        scheduler.typed(essay)

    write("Dogs are pets.\n" + body * 4 + "\n" + body * 5)  # three paragraphs, 138 words
    await clock.sleep(CFG.local_pause_seconds)
    assert essay.analyzed_text and not [i for i in essay.items if i.kind == "structure"]
    write(body)  # 153 words, still three paragraphs
    await clock.sleep(CFG.local_min_interval)
    assert [i.rule for i in essay.items if i.kind == "structure"] == ["no_thesis"]


async def test_an_essay_that_unloads_leaves_nothing_in_the_engine_that_analysed_it() -> None:
    """The engine keeps each essay's last split text and paragraphs for the next run: the essay
    unloading (`forget`) drops them, or a host's unloaded essays would stay in memory."""
    clock = Timeline()

    async def no_usage(essay: LiveEssay, usage: Any) -> None:
        raise AssertionError("no LLM here")

    engine = AnalysisEngine(LocalAnalyzer())
    scheduler = FeedbackScheduler(analyzer=engine, local_analyzer=None, config=CFG, events=EventLog(InMemoryBus()),
                                  record_usage=no_usage, clock=clock, sleep=clock.sleep)
    clock.scheduler = scheduler
    meta = EssayMeta(essay_id=uuid.uuid4(), owner_id=uuid.uuid4(), class_id=None, title="t")
    essay = LiveEssay(meta=meta, doc=EssayDoc(), seq=0, watermark=0)
    Typist(essay).type("Dogs are pets.\nThey sleep a lot. ", at=clock.now)
    scheduler.typed(essay)
    await clock.sleep(CFG.local_pause_seconds)
    assert essay.analyzed_text and str(meta.essay_id) in engine._splits
    scheduler.forget(essay)
    assert str(meta.essay_id) not in engine._splits


async def test_a_failing_pace_hook_skips_no_round() -> None:
    """`repeat` logs a failing `late` hook (once) and runs the round: tier 1 on the host goes on."""
    rounds: list[int] = []
    sleeps = 0

    async def sleep(_seconds: float) -> None:
        nonlocal sleeps
        sleeps += 1
        if sleeps > 3:
            raise asyncio.CancelledError

    async def step() -> None:
        rounds.append(sleeps)

    def late(_lag: float) -> None:
        raise RuntimeError("metrics backend down")

    with pytest.raises(asyncio.CancelledError):
        await repeat(0.125, step, "tier-1 round", sleep=sleep, late=late)
    assert rounds == [1, 2, 3]  # the hook failed before each round: logged, and the round ran
    assert sleeps == 4


async def test_the_first_cpu_sample_and_a_clock_that_did_not_move_are_not_a_busy_host() -> None:
    """The loop's CPU share starts from its first sample on the loop's thread, and a wall clock
    that did not advance (a fake clock, two samples in one tick) is no sample: no stretch."""
    _, _, scheduler, _, _ = setup(llm=False, clock=Timeline(), config=PACED, rounds_on_sleep=False, name="first-sample")
    spent = iter(range(100, 10_000, 5))  # the thread's CPU seconds: 100 before the first sample, 5 more each
    scheduler.cpu_clock = lambda: float(next(spent))
    for _ in range(20):
        scheduler.loop_observed(0.0)  # the fake clock never moves
    assert scheduler.pacing.interval == PACED.local_min_interval

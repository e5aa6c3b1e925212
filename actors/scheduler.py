"""FeedbackScheduler: when a host's essays are analysed, tier 1 (local rules) and the LLM tier.

Typing never waits on analysis: `EssayHost.apply_update` only notes the essay (`typed`). One
loop for the host runs tier 1 for the essays that came due (`actors.decisions.tier1_due`), not
a sleeping task per essay (~1.7 KiB each and a timer every 0.25 s while typing); with an LLM,
each essay analysed then gets one task (`LiveEssay.run_analysis`) that waits for a longer pause
and sends the paragraphs that changed, the one still being written once it settles. A result
computed on text that moved on meanwhile is dropped (its offsets describe text that no longer
exists); the next run reuses the analysis cache. While the host is busy, tier 1's reruns during
typing are spaced out (`actors.pacing.Tier1Pacing`, from the loop thread's CPU time and how late
the rounds' timer wakes).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from actors import decisions
from actors.analysis.items import FeedbackItem, same_content
from actors.config import HostConfig
from actors.essay import LiveEssay
from actors.events import EventLog
from actors.feedback import carry_items, settled_text, wire_item
from actors.metrics import metric
from actors.pacing import Tier1Pacing

log = logging.getLogger("essaycoach.host")


class Analyzer(Protocol):
    """What a host needs from analysis: `actors.analysis.engine.AnalysisEngine` in-process, or a
    client of the Analyzer Serve deployment."""

    @property
    def llm_enabled(self) -> bool: ...

    async def analyze_changed(self, old_text: str, new_text: str, **kwargs: Any) -> Any: ...

    async def score_rubric(self, text: str, rubric: Any, items: Any = (), **kwargs: Any) -> Any: ...


class FeedbackScheduler:
    """Runs tier 1 and the LLM tier for a host's essays and applies their results to the essay.

    `analyzer` runs the LLM tier (and tier 1 when there is no `local_analyzer`: tier 1 may run
    right here, a remote hop per pause costs more than the rules). `record_usage(essay, usage)`
    stores the tokens an LLM run spent; `clock` and `sleep` are the host's, `cpu_clock` its loop
    thread's CPU time (tests pass fakes); `name` is the host's (the `host` label of
    `essaycoach_tier1_interval_seconds`).
    """

    def __init__(self, *, analyzer: Analyzer, local_analyzer: Analyzer | None, config: HostConfig,
                 events: EventLog, record_usage: Callable[[LiveEssay, Any], Awaitable[None]],
                 clock: Callable[[], float], sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 cpu_clock: Callable[[], float] = time.thread_time, name: str = "essay-host") -> None:
        self.analyzer = analyzer
        self.local_analyzer = local_analyzer
        self.config = config
        self.events = events
        self.record_usage = record_usage
        self.clock = clock
        self.sleep = sleep
        # Essays typed in since their last tier-1 run.
        self.waiting: dict[uuid.UUID, LiveEssay] = {}
        self.pacing = Tier1Pacing(config)
        self.cpu_clock = cpu_clock
        self._observed: tuple[float, float] | None = None  # (wall, CPU) at the last `loop_observed`
        self._interval_gauge = metric("essaycoach_tier1_interval_seconds").labels(name)
        self._interval_gauge.set(self.pacing.interval)

    @property
    def llm_enabled(self) -> bool:
        return self.analyzer.llm_enabled

    def typed(self, essay: LiveEssay) -> None:
        """The essay's text changed: tier 1 comes due at the student's next pause."""
        self.waiting[essay.essay_id] = essay

    def forget(self, essay: LiveEssay) -> None:
        """The essay unloads or is deleted: no more analysis of it."""
        if self.waiting.get(essay.essay_id) is essay:
            del self.waiting[essay.essay_id]
        essay.cancel_analysis()
        for engine in (self.local_analyzer, self.analyzer):  # a remote one keeps its own, size-bounded
            forget = getattr(engine, "forget", None)
            if forget is not None:
                forget(str(essay.essay_id))

    async def run(self) -> None:
        """Tier-1 rounds until cancelled (`local_pause_seconds / 2` apart); a failed round is
        logged and the next one runs. How late each round's timer wakes paces tier 1."""
        await repeat(self.config.local_pause_seconds / 2, self.round, "tier-1 round", sleep=self.sleep,
                     clock=self.clock, late=self.loop_observed)

    def loop_observed(self, lag: float) -> None:
        """A timer of the host's loop ran `lag` seconds late (called on the loop's thread): with
        the thread's CPU share since the last call, tier 1's pace follows."""
        wall, cpu = self.clock(), self.cpu_clock()
        previous, self._observed = self._observed, (wall, cpu)
        # The first call on the loop's thread (`__init__` may run on another) and a wall clock
        # that did not move (a fake one, two calls in one tick) give no share: no sample.
        if previous is None or wall <= previous[0]:
            return
        share = (cpu - previous[1]) / (wall - previous[0])
        before = self.pacing.interval
        if self.pacing.observe(lag, share) != before:
            self._interval_gauge.set(self.pacing.interval)

    async def round(self) -> None:
        """Tier 1 for each essay that came due since the last round; one essay at a time: tier 1
        runs in this process, a fraction of a millisecond per paragraph."""
        now, interval = self.clock(), self.pacing.interval
        for essay in list(self.waiting.values()):
            if (not decisions.tier1_due(essay, now, self.config, interval)
                    or self.waiting.get(essay.essay_id) is not essay):
                continue
            del self.waiting[essay.essay_id]  # typing during the run puts it back
            try:
                await self.analyze(essay, run_llm=False)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("analysis failed", extra={"essay_id": str(essay.essay_id)})
            else:  # a running LLM task sees the new text itself
                if self.llm_enabled:
                    essay.run_analysis(functools.partial(self.llm_when_quiet, essay))
            await asyncio.sleep(0)  # one essay's rules at a time between other callbacks

    async def quiet(self, essay: LiveEssay, pause: float, seq: int | None = None) -> bool:
        """Wait until nothing was typed for `pause` seconds; False as soon as the text moves past
        `seq` (new typing restarts the tiers, in short steps so tier 1 is never delayed)."""
        while True:
            if seq is not None and essay.seq != seq:
                return False
            wait = decisions.until_quiet(essay, self.clock(), pause)
            if not wait:
                return True
            await self.sleep(min(wait, self.config.local_pause_seconds))

    async def llm_when_quiet(self, essay: LiveEssay) -> None:
        """Tier 2 (LLM) after a longer pause, the paragraph still being written once it settles;
        new typing waits for the next pause (tier 1 runs meanwhile, from `round`)."""
        cfg = self.config
        try:
            while True:
                seq = essay.seq
                if not await self.quiet(essay, cfg.llm_pause_seconds, seq):
                    continue
                if self.waiting.get(essay.essay_id) is essay:
                    # Tier 1 goes first: it tells which paragraph is still being written.
                    await self.sleep(cfg.local_pause_seconds / 2)
                    continue
                await self.analyze(essay, run_llm=True)
                if essay.active_paragraphs and essay.seq == seq:
                    if not await self.quiet(essay, cfg.llm_settle_seconds, seq):
                        continue
                    await self.analyze(essay, run_llm=True)
                if essay.seq == seq:
                    return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("analysis failed", extra={"essay_id": str(essay.essay_id)})

    async def analyze(self, essay: LiveEssay, *, run_llm: bool, force: bool = False) -> bool:
        """One analysis run; False (result dropped) when newer typing made it stale."""
        seq, text = essay.seq, settled_text(essay.doc.text)
        if not decisions.analysis_needed(essay, text, run_llm=run_llm, force=force):
            return True
        settled = force or decisions.paragraphs_settled(essay, self.clock(), self.config)
        hold = frozenset() if settled else frozenset(essay.active_paragraphs)
        engine = self.analyzer if run_llm or self.local_analyzer is None else self.local_analyzer
        if not run_llm:
            essay.tier1_started(self.clock())
        result = await engine.analyze_changed(
            essay.analyzed_text, text, essay_id=str(essay.essay_id),
            class_id=str(essay.meta.class_id) if essay.meta.class_id else None,
            assignment_prompt=essay.assignment_prompt, run_llm=run_llm, llm_hold=hold)
        if essay.seq != seq:
            return False  # offsets describe text that no longer exists; the next run reuses the cache
        new_items = list(result.items)
        if engine is self.local_analyzer and self.llm_enabled:
            # The local engine knows nothing of the LLM's findings: keep those of unchanged paragraphs.
            llm_items = [i for i in essay.items if i.source == "llm"]
            new_items += carry_items(llm_items, essay.analyzed_text, text)
            new_items.sort(key=lambda i: (i.start, i.end, i.id))
        if result.changed:
            essay.paragraphs_in_progress({p.hash for p in result.changed})
        elif settled:
            essay.paragraphs_in_progress(set())
        # Anchors are made now, against exactly the text the offsets were computed on. An item
        # whose id is unchanged sits in an unchanged paragraph: its anchor is still good, and
        # where nothing else changed either the anchored item itself is kept (no copy per item).
        known = {item.id: item for item in essay.items if item.anchor}
        fresh = [item for item in new_items if item.id not in known]
        made = dict(zip((item.id for item in fresh),
                        await essay.encode_anchors([(item.start, item.end) for item in fresh])))
        if essay.seq != seq:
            return False  # typed while the anchors were made off the loop
        items = [_anchored(item, known.get(item.id), made) for item in new_items]
        changed, removed = essay.take_feedback(items, text)
        if changed or removed:
            # Numbered before any await: a resume's full set (the current items) must carry the
            # seq and doc_seq of the diff that made them current.
            await self.events.publish(essay, "feedback", items=[wire_item(i) for i in changed],
                                      removed=removed, counts=essay.feedback_counts)
        if result.usage.total_tokens:
            await self.record_usage(essay, result.usage)
        return True

    async def analyze_now(self, essay: LiveEssay) -> None:
        """On demand: the whole essay, structure included, with the LLM when one is configured."""
        async with essay.lock:  # one on-demand run at a time per essay
            for _attempt in range(3):  # typing can make a run stale; the next reuses the cache
                if await self.analyze(essay, run_llm=self.llm_enabled, force=True):
                    break

    async def score(self, essay: LiveEssay, rubric: dict[str, Any]) -> list[dict[str, Any]]:
        """On-demand rubric scores for the current text (the LLM proposes; local rules estimate)."""
        scores, _usage = await self.analyzer.score_rubric(
            essay.doc.text, rubric, essay.items, essay_id=str(essay.essay_id),
            class_id=str(essay.meta.class_id) if essay.meta.class_id else None)
        return [score.model_dump() for score in scores]


def _anchored(item: FeedbackItem, before: FeedbackItem | None, made: dict[str, str]) -> FeedbackItem:
    """`item` with its anchor: `before`'s (the item of the same id that carries one), else the
    one just made."""
    if before is None:
        return item.replace(anchor=made[item.id])
    return before if same_content(before, item) else item.replace(anchor=before.anchor)


async def repeat(interval: float, step: Callable[[], Awaitable[None]], what: str, *,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 clock: Callable[[], float] = time.monotonic, late: Callable[[float], None] | None = None) -> None:
    """`step()` every `interval` seconds until cancelled; a failed round is logged and the next
    one runs (the loop ending would stop every essay's compaction or feedback on the host).
    `late(seconds)`, when given, hears how late each sleep woke on `clock` (the loop's lag); a
    failing `late` is logged once and skips no round."""
    hook_failed = False
    while True:
        asleep = clock()
        await sleep(interval)
        if late is not None:
            try:
                late(clock() - asleep - interval)
            except Exception:
                if not hook_failed:
                    log.exception(f"{what}: its pace hook failed (logged once)")
                hook_failed = True
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(f"{what} failed")

"""The analysis engine: incremental, cached, budgeted feedback for one essay text at a time.

Plain class with injected collaborators (local analyser, optional LLM provider, cache, token
budget, clock) so the Serve deployment and the essay actor only wrap it. The engine keeps no
per-essay state apart from the shared cache and budget; the caller passes the previous text
(and previous items) and gets the full current item set back, ready for ``diff_items``.
"""

from __future__ import annotations

import asyncio
import difflib
import logging
import time
from collections import Counter
from collections.abc import Callable, Collection, Coroutine, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from actors.metrics import metric

from .cache import CacheKey, LRUCache, cache_key
from .items import FeedbackItem, Score, assign_ids, shift_items
from .llm import PROMPT_VERSION, TokenBudget
from .local import LocalAnalyzer, SentenceMemo, sentence_spans
from .paragraphs import Paragraph, changed_paragraphs, resplit_paragraphs, split_paragraphs
from .provider import AnalysisProvider, ProviderContext, ProviderError, ProviderResult, Rubric, Usage
from .rubric import score_rubric_local
from .worker import RulesWorker, WorkerFailed, WorkerJobError

log = logging.getLogger(__name__)
_WORKER_FALLBACKS = metric("essaycoach_rules_worker_fallbacks_total")

LOCAL_PAUSE_SECONDS = 0.25
# A paragraph at least this similar to the version the LLM reviewed keeps that review.
REUSE_SIMILARITY = 0.85
LLM_PAUSE_SECONDS = 2.0
# A text longer than this is analysed without an LLM on a worker thread (`analyze_changed`): the
# rules over 200,000 characters take ~0.2 s (~40 ms with every paragraph cached), which on the
# event loop of an essay host stalled every other essay's acks for as long.
OFFLOAD_CHARS = 20_000
# With a rules worker (`actors.analysis.worker`), local analysis of at least this many uncached
# characters runs in that process: below it the IPC costs more than the rules (~1 ms per 1,000).
WORKER_MIN_CHARS = 3_000
# The last text analysed of each essay and its paragraphs, so the next run splits and hashes only
# the lines typed into since (`_split`): at most this many characters in all, the text and its
# paragraphs' copies counted (~20-80 MB at the most, by script), and an essay's entry goes
# when the essay unloads (`forget`).
SPLIT_CACHE_CHARS = 20_000_000
# Each essay's sentence memo (`SentenceMemo`: what the rules found in each sentence of the
# paragraphs its last run analysed, so the next run analyses only the sentences typed into):
# at most `local.MEMO_BYTES` per essay and this many over all essays (as `local._unit_bytes`
# estimates them; 1,000 typists' paragraphs take ~10-40 MB); an essay's memo goes when it
# unloads (`forget`).
MEMO_CACHE_BYTES = 64 << 20


def _split_chars(entry: tuple[str, list[Paragraph]]) -> int:
    text, paragraphs = entry
    return len(text) + sum(len(p.text) for p in paragraphs)


def should_run_local(last_edit_at: float, now: float, pause: float = LOCAL_PAUSE_SECONDS) -> bool:
    """Tier 1 runs once the student has paused typing for ``pause`` seconds."""
    return now - last_edit_at >= pause


def should_run_llm(last_edit_at: float, now: float, pause: float = LLM_PAUSE_SECONDS) -> bool:
    """Tier 2 waits for a longer pause, so a paragraph is not sent while it is still being typed."""
    return now - last_edit_at >= pause


@dataclass(frozen=True, slots=True)
class AnalysisResult:
    """Outcome of one incremental run.

    ``items`` is the complete current feedback set for ``new_text`` (full-text offsets, sorted),
    so the caller can ``diff_items(previous, result.items)``. ``llm_sent`` lists the paragraph
    hashes sent to the LLM in this run and ``usage`` what they cost (already recorded in the
    budget). ``errors`` holds ``ProviderError`` codes for paragraphs that got no LLM result.
    """

    items: list[FeedbackItem]
    changed: list[Paragraph]
    local_ran: list[str]
    llm_sent: list[str]
    usage: Usage
    errors: list[str] = field(default_factory=list)
    budget_exhausted: bool = False


CacheValue = list[FeedbackItem]


@dataclass(frozen=True, slots=True)
class LocalResults:
    """What one run did to the local-rules cache: the results it computed and the keys of the
    paragraph versions it replaced. A run in the rules worker sends them back, so this process's
    cache holds the big essay's paragraphs too (a later run here, with the LLM or with the
    worker gone, reuses them instead of redoing every paragraph). Only what the child computed
    travels (all of a big essay's results would double the IPC of every run): the child's cache
    holds what this engine got back, as one engine (the host's tier 1) sends a worker its whole
    runs; what this process's cache evicted meanwhile is computed again here."""

    computed: list[tuple[CacheKey, CacheValue]]
    replaced: list[CacheKey]

    def apply(self, cache: LRUCache[Hashable, CacheValue]) -> None:
        for key, items in self.computed:
            cache.put(key, items)
        for key in self.replaced:
            cache.discard(key)


class AnalysisEngine:
    """Runs tier 1 (local) on changed paragraphs and tier 2 (LLM) on paragraphs it has no result for.

    A provider named ``local`` (or ``None``) disables tier 2. LLM results are cached by paragraph
    hash only, not by the context sent with them: an unchanged paragraph is never re-sent just
    because the paragraph before it changed.
    """

    def __init__(
        self,
        local: LocalAnalyzer,
        llm_provider: AnalysisProvider | None = None,
        cache: LRUCache[Hashable, CacheValue] | None = None,
        budget: TokenBudget | None = None,
        clock: Callable[[], float] = time.monotonic,
        offload_chars: int = OFFLOAD_CHARS,
        worker: RulesWorker | None = None,
        worker_min_chars: int = WORKER_MIN_CHARS,
    ) -> None:
        self.local = local
        self.offload_chars = offload_chars
        self.offloaded_runs = 0  # runs made off the caller's loop (see `analyze_changed`)
        # The host process's rules worker (None: everything in this process); the host owns it.
        self.worker = worker
        self.worker_min_chars = worker_min_chars
        self.llm = llm_provider if llm_provider is not None and llm_provider.name != "local" else None
        self.cache: LRUCache[Hashable, CacheValue] = cache if cache is not None else LRUCache(20_000)
        self.budget = budget or TokenBudget(per_essay=None, per_class=None)
        self.clock = clock
        # essay -> (paragraph hash, text the LLM actually reviewed), for reviews kept over small edits
        self._reviewed: LRUCache[str, list[tuple[str, str]]] = LRUCache(10_000)
        self._splits: LRUCache[str, tuple[str, list[Paragraph]]] = LRUCache(SPLIT_CACHE_CHARS, weigh=_split_chars)
        self._memos: LRUCache[str, SentenceMemo] = LRUCache(MEMO_CACHE_BYTES, weigh=lambda memo: memo.bytes)

    @property
    def llm_enabled(self) -> bool:
        return self.llm is not None

    def forget(self, essay_id: str) -> None:
        """The essay unloaded here: drop what this engine keeps of it (its last split and the
        paragraphs the LLM reviewed); a later run starts from its text again."""
        self._splits.discard(essay_id)
        self._memos.discard(essay_id)
        self._reviewed.discard(essay_id)

    def local_due(self, last_edit_at: float, pause: float = LOCAL_PAUSE_SECONDS) -> bool:
        return should_run_local(last_edit_at, self.clock(), pause)

    def llm_due(self, last_edit_at: float, pause: float = LLM_PAUSE_SECONDS) -> bool:
        return self.llm is not None and should_run_llm(last_edit_at, self.clock(), pause)

    async def analyze_changed(
        self,
        old_text: str,
        new_text: str,
        *,
        essay_id: str | None = None,
        class_id: str | None = None,
        assignment_prompt: str = "",
        dictionary: Collection[str] = frozenset(),
        run_llm: bool = True,
        llm_hold: Collection[str] = frozenset(),
    ) -> AnalysisResult:
        """Analyse ``new_text`` incrementally against ``old_text``.

        Local rules run on paragraphs with no cached result (in practice the changed ones). The
        LLM runs, when ``run_llm``, on every paragraph it has no cached result for, within the
        token budget. Whole-essay structure runs every time (from what the analyser has cached of
        each paragraph), so the items are exactly those of a fresh analysis of ``new_text``.
        Paragraphs whose hash is in ``llm_hold`` (the one the student is still writing) are not
        sent to the LLM this time; the caller releases them once they settle.

        Cancelling the awaiting task cancels in-flight LLM calls and propagates
        ``CancelledError``; results already cached stay valid (they are keyed by content).

        A run without the LLM on a text longer than ``offload_chars`` runs in the rules worker
        process when there is one (whole; the paragraph results it computed come back into this
        engine's cache), else on a worker thread (its own event loop; it shares only plain
        strings and the locked caches), so the caller's loop keeps serving while the rules work.
        A run with the LLM stays on the caller's loop (its HTTP client belongs there); tier 1 has
        cached the rules by then, and uncached paragraphs of ``worker_min_chars`` or more go to
        the worker.

        A job the worker cannot do, whether it died twice (``WorkerFailed``) or the job raised in
        it (``WorkerJobError``: a bug in the worker's side, or in rules that will fail here too),
        runs once more in this process, logged and counted in
        ``essaycoach_rules_worker_fallbacks_total``: a bug there delays the student's feedback
        instead of losing it. An error that happens here too fails the run.
        """
        kwargs: dict[str, Any] = dict(essay_id=essay_id, class_id=class_id, assignment_prompt=assignment_prompt,
                      dictionary=dictionary, run_llm=run_llm, llm_hold=llm_hold)
        if len(new_text) > self.offload_chars and not (run_llm and self.llm is not None):
            self.offloaded_runs += 1
            if self.worker is not None:
                try:
                    done: tuple[AnalysisResult, LocalResults] = await self.worker.call("run", old_text, new_text,
                                                                                        kwargs)
                except (WorkerFailed, WorkerJobError) as exc:
                    _fall_back(exc, f"a run over {len(new_text)} characters")
                else:
                    result, local = done
                    local.apply(self.cache)
                    return result
            result, _ = await asyncio.to_thread(asyncio.run, self._analyze_changed(old_text, new_text,
                                                                                   use_worker=False, **kwargs))
            return result
        result, _ = await self._analyze_changed(old_text, new_text, use_worker=True, **kwargs)
        return result

    async def analyze_in_process(self, old_text: str, new_text: str,
                                 **kwargs: Any) -> tuple[AnalysisResult, LocalResults]:
        """``analyze_changed`` on the caller's loop with no worker (what the rules worker runs for
        a whole run), and what it did to the local-rules cache, for the host's engine to apply.
        ``kwargs``: every keyword argument of ``analyze_changed``, as the host's engine sends them."""
        return await self._analyze_changed(old_text, new_text, use_worker=False, **kwargs)

    async def _analyze_changed(
        self,
        old_text: str,
        new_text: str,
        *,
        essay_id: str | None,
        class_id: str | None,
        assignment_prompt: str,
        dictionary: Collection[str],
        run_llm: bool,
        llm_hold: Collection[str],
        use_worker: bool,
    ) -> tuple[AnalysisResult, LocalResults]:
        old_paragraphs, new_paragraphs = self._split(essay_id, old_text, new_text)
        changed = changed_paragraphs(old_paragraphs, new_paragraphs)
        dict_tag = ",".join(sorted({w.lower() for w in dictionary}))
        local_version = f"{self.local.version}|{dict_tag}"

        local_ran: list[str] = []
        local_items: dict[str, list[FeedbackItem]] = {}
        todo: dict[str, Paragraph] = {}
        for p in new_paragraphs:
            if p.hash in local_items or p.hash in todo:
                continue
            cached = self.cache.get(cache_key("local", p.hash, local_version))
            if cached is None:
                todo[p.hash] = p
            else:
                local_items[p.hash] = cached
        # The sentences of the paragraphs typed into are analysed again, not the paragraphs.
        memo = SentenceMemo(dictionary, self._memos.get(essay_id)) if essay_id is not None and todo else None
        fresh = await self._local_items(list(todo.values()), dictionary, use_worker=use_worker, memo=memo)
        if essay_id is not None and memo is not None and len(memo):
            self._memos.put(essay_id, memo.finish())  # (a run in the worker keeps the last one)
        for p, found in zip(todo.values(), fresh, strict=True):
            local_items[p.hash] = found
            local_ran.append(p.hash)
        # A paragraph being typed leaves a new version in the cache every run, and the version
        # it replaced is not asked for again: at 1,000 typists those filled the whole cache
        # (~70 MiB of stale items per host). Local results are cheap to recompute, so the
        # replaced versions go now (LLM results, which cost tokens, stay).
        new_hashes = {p.hash for p in new_paragraphs}
        local = LocalResults(
            computed=[(cache_key("local", p.hash, local_version), local_items[p.hash]) for p in todo.values()],
            replaced=[cache_key("local", p.hash, local_version) for p in old_paragraphs if p.hash not in new_hashes])
        local.apply(self.cache)

        usage = Usage()
        llm_sent: list[str] = []
        errors: list[str] = []
        budget_exhausted = False
        if run_llm and self.llm is not None:
            usage, llm_sent, errors, budget_exhausted = await self._run_llm(
                new_paragraphs, essay_id, class_id, assignment_prompt, llm_hold
            )

        items: list[FeedbackItem] = []
        occurrences: Counter[str] = Counter()
        for p in new_paragraphs:
            nth = occurrences[p.hash]
            occurrences[p.hash] += 1
            salt = f"dup{nth}" if nth else ""
            paragraph_items = list(local_items[p.hash])
            if self.llm is not None:
                llm_items = self.cache.get(cache_key(self.llm.name, p.hash, PROMPT_VERSION)) or []
                paragraph_items.extend(_without_overlaps(llm_items, paragraph_items))
            items.extend(shift_items(paragraph_items, p.start, salt=salt))

        # Every run, not carried over while the paragraphs stay put: what the structure rules say
        # turns on the whole text (its word count, the first and last paragraphs' cues), and
        # from the cached paragraph shapes they cost a few microseconds per paragraph.
        items.extend(self.local.analyze_structure(new_paragraphs))
        items.sort(key=lambda i: (i.start, i.end, i.id))
        return AnalysisResult(
            items=items,
            changed=changed,
            local_ran=local_ran,
            llm_sent=llm_sent,
            usage=usage,
            errors=errors,
            budget_exhausted=budget_exhausted,
        ), local

    def _split(self, essay_id: str | None, old_text: str, new_text: str) -> tuple[list[Paragraph], list[Paragraph]]:
        """The paragraphs of both texts: the old ones as the essay's last run left them when it was
        on `old_text` (on a host, the very same string: no comparison), the new ones re-split
        from them where the text changed."""
        known = self._splits.get(essay_id) if essay_id is not None else None
        if known is not None and (known[0] is old_text or known[0] == old_text):
            old = known[1]
        else:
            old = split_paragraphs(old_text)
        new = resplit_paragraphs(old_text, old, new_text)
        if essay_id is not None:
            self._splits.put(essay_id, (new_text, new))
        return old, new

    async def _local_items(self, todo: Sequence[Paragraph], dictionary: Collection[str], *,
                           use_worker: bool, memo: SentenceMemo | None = None) -> list[list[FeedbackItem]]:
        """The rules' items for each paragraph: in the worker when they are big enough to pay
        for the IPC (in this process when the worker cannot: see `analyze_changed`)."""
        if use_worker and self.worker is not None and sum(len(p.text) for p in todo) >= self.worker_min_chars:
            try:
                items: list[list[FeedbackItem]] = await self.worker.call("paragraphs", [p.text for p in todo],
                                                                         dictionary)
                return items
            except (WorkerFailed, WorkerJobError) as exc:
                _fall_back(exc, f"{len(todo)} paragraphs")
        return [self.local.analyze_paragraph(p.text, dictionary=dictionary, memo=memo) for p in todo]

    def _reuse_llm(self, essay: str, p: Paragraph, candidates: Sequence[tuple[str, str]]) -> bool:
        """A lightly edited paragraph keeps the LLM's findings on the version it reviewed.

        `candidates` are (hash, reviewed text) of this essay's paragraphs the model has seen.
        Compared with the text the model actually saw (not the last version), so small edits
        cannot drift a paragraph away from its review unnoticed; findings whose quote is gone
        are dropped. Returns False when the paragraph must be sent again.
        """
        assert self.llm is not None
        best: tuple[float, list[FeedbackItem], str] | None = None
        for q_hash, base in candidates:
            cached = self.cache.get(cache_key(self.llm.name, q_hash, PROMPT_VERSION))
            if cached is None:
                continue
            if abs(len(base) - len(p.text)) > (1 - REUSE_SIMILARITY) * max(len(base), len(p.text)):
                continue
            ratio = difflib.SequenceMatcher(None, base, p.text, autojunk=False).ratio()
            if ratio >= REUSE_SIMILARITY and (best is None or ratio > best[0]):
                best = (ratio, cached, base)
        if best is None:
            return False
        _, cached, base = best
        relocated = []
        for item in cached:
            at = p.text.find(item.quote)
            if at >= 0:
                relocated.append(item.replace(start=at, end=at + len(item.quote), paragraph_hash=p.hash))
        self.cache.put(cache_key(self.llm.name, p.hash, PROMPT_VERSION), assign_ids(relocated))
        self._remember_review(essay, p.hash, base)
        return True

    def _remember_review(self, essay: str, paragraph_hash: str, reviewed_text: str) -> None:
        recent = self._reviewed.get(essay) or []
        recent = [(h, t) for h, t in recent if h != paragraph_hash][-49:]
        self._reviewed.put(essay, [*recent, (paragraph_hash, reviewed_text)])

    async def _run_llm(
        self, paragraphs: Sequence[Paragraph], essay_id: str | None, class_id: str | None, assignment_prompt: str,
        hold: Collection[str] = frozenset(),
    ) -> tuple[Usage, list[str], list[str], bool]:
        assert self.llm is not None
        provider = self.llm
        current = {p.hash for p in paragraphs}
        essay = essay_id or ""
        replaced = [(h, t) for h, t in (self._reviewed.get(essay) or []) if h not in current]
        todo: list[tuple[Paragraph, ProviderContext]] = []
        seen: set[str] = set()
        reserved = 0
        exhausted = False
        for p in paragraphs:
            if p.hash in seen or p.hash in hold or cache_key(provider.name, p.hash, PROMPT_VERSION) in self.cache:
                continue
            seen.add(p.hash)
            if self._reuse_llm(essay, p, replaced):
                continue
            previous = paragraphs[p.index - 1].text if p.index > 0 else ""
            context = ProviderContext(previous_sentence=_last_sentence(previous), assignment_prompt=assignment_prompt)
            estimate = provider.estimate_tokens(p.text, context)
            # Reserve estimates of calls already scheduled in this run so parallel calls cannot overshoot.
            if not self.budget.check(essay_id, class_id, reserved + estimate):
                exhausted = True
                continue
            reserved += estimate
            todo.append((p, context))

        results: dict[str, ProviderResult] = {}
        errors: list[str] = []
        usage = Usage()

        async def one(p: Paragraph, context: ProviderContext) -> None:
            nonlocal usage
            try:
                result = await provider.analyze_paragraph(p.text, context)
            except ProviderError as exc:
                log.info("llm analysis failed for paragraph %s: %s", p.hash, exc.code)
                errors.append(exc.code)
                if exc.usage is not None:
                    usage = usage + exc.usage
                    self.budget.record(essay_id, class_id, exc.usage.total_tokens)
                return
            usage = usage + result.usage
            self.budget.record(essay_id, class_id, result.usage.total_tokens)
            results[p.hash] = result
            self.cache.put(cache_key(provider.name, p.hash, PROMPT_VERSION), result.items)
            self._remember_review(essay, p.hash, p.text)

        async with asyncio.TaskGroup() as group:
            for p, context in todo:
                group.create_task(one(p, context))
        return usage, [p.hash for p, _ in todo], errors, exhausted

    async def score_rubric(
        self,
        text: str,
        rubric: Rubric,
        items: Sequence[FeedbackItem] = (),
        *,
        essay_id: str | None = None,
        class_id: str | None = None,
    ) -> tuple[list[Score], Usage]:
        """LLM scores where valid, local estimates (``estimate=True``) for every other criterion."""
        local_scores = score_rubric_local(text, rubric, items, analyzer=self.local)
        if self.llm is None:
            return local_scores, Usage()
        estimate = len(text) // 4 + 1_000
        if not self.budget.check(essay_id, class_id, estimate):
            return local_scores, Usage()
        try:
            result = await self.llm.score_rubric(text, rubric, items)
        except ProviderError as exc:
            log.info("llm rubric scoring failed: %s", exc.code)
            return local_scores, exc.usage or Usage()
        self.budget.record(essay_id, class_id, result.usage.total_tokens)
        by_id = {s.criterion_id: s for s in result.scores}
        return [by_id.get(s.criterion_id, s) for s in local_scores], result.usage


_JOB_ERRORS_LOGGED: set[str] = set()
"""The job errors whose traceback this process has logged (a bug in the worker repeats on every
big essay's analysis, i.e. every typing pause: its traceback once, then one line each)."""


def _fall_back(exc: WorkerFailed | WorkerJobError, job: str) -> None:
    """Log and count a job the rules worker could not do (the caller runs it in this process)."""
    if isinstance(exc, WorkerJobError):  # the child's traceback: a bug to fix, not a crash to ride out
        _WORKER_FALLBACKS.labels("job_error").inc()
        lines = str(exc).strip().splitlines()
        error = lines[-1] if lines else repr(exc)
        if error in _JOB_ERRORS_LOGGED:
            log.warning("rules worker job failed again (%s), analysing in this process: %s", job, error)
            return
        if len(_JOB_ERRORS_LOGGED) < 100:
            _JOB_ERRORS_LOGGED.add(error)
        log.error("rules worker job failed (%s), analysing in this process:\n%s", job, exc)
    else:
        _WORKER_FALLBACKS.labels("worker_failed").inc()
        log.warning("rules worker failed (%s), analysing in this process: %s", job, exc)


def _last_sentence(text: str) -> str:
    spans = sentence_spans(text)
    return text[spans[-1][0] : spans[-1][1]] if spans else ""


def _without_overlaps(llm_items: Sequence[FeedbackItem], local_items: Sequence[FeedbackItem]) -> list[FeedbackItem]:
    """LLM items that do not repeat a local item of the same kind on an overlapping span."""
    return [
        item
        for item in llm_items
        if not any(o.kind == item.kind and o.start < item.end and item.start < o.end for o in local_items)
    ]


class LatestOnly:
    """At most one running task per key: submitting a new run cancels the superseded one.

    The essay actor uses one key per tier (``"local"``, ``"llm"``) so a stale analysis never
    finishes after a newer one started.
    """

    def __init__(self) -> None:
        self._tasks: dict[Hashable, asyncio.Task[Any]] = {}

    def submit(self, key: Hashable, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        old = self._tasks.get(key)
        if old is not None and not old.done():
            old.cancel()
        task = asyncio.ensure_future(coro)
        self._tasks[key] = task
        task.add_done_callback(lambda t: self._tasks.pop(key, None) if self._tasks.get(key) is t else None)
        return task

    def running(self, key: Hashable) -> asyncio.Task[Any] | None:
        task = self._tasks.get(key)
        return task if task is not None and not task.done() else None

    async def aclose(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

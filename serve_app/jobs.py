"""The submissions job runner: claims queued jobs from the store, runs full analysis and rubric
scoring, stores the results, records AI usage and delivers the signed webhook.

A plain class (no Ray): every Gateway replica may run one. Jobs are claimed with a lease
(``lease_until``) by a conditional UPDATE, so two runners never run the same job; a worker renews its
lease while it works, and a job whose worker died (lease expired while ``running``) is claimed again.
A job is attempted at most ``max_attempts`` times; then it is ``failed``. The webhook is delivered
after the result is committed, in a pool of its own (``delivery_concurrency``) outside the job's
slot, so a slow or hanging receiver never holds up the queue; the job's lease is renewed while its
delivery waits and runs. A delivery interrupted by a crash is resumed (``callback_status`` stays
``pending`` until it ends), so receivers must de-duplicate on ``X-EssayCoach-Delivery``. Each
delivery is signed with the requester's own webhook secret.

Scores: the AI's proposal is kept in ``ai_scores``; ``scores`` is the effective set (teacher
overrides applied, see ``effective_scores``). Only a teacher-confirmed score is ``final``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from actors import retry
from actors.analysis.engine import AnalysisEngine
from actors.analysis.provider import Usage
from actors.analysis.rubric import Criterion, parse_rubric
from actors.config import RunnerConfig
from actors.metrics import metric
from db.models import ScoreOverride, Submission
from db.repositories import assignments, rubrics, webhook_secrets
from db.repositories import submissions as repo
from db.types import utcnow
from serve_app.webhooks import DeliveryResult, WebhookSender, new_webhook_secret

log = logging.getLogger("essaycoach.jobs")
_QUEUE_DEPTH = metric("essaycoach_submission_queue_depth")
_QUEUE_AGE = metric("essaycoach_submission_queue_age_seconds")
_WEBHOOKS = metric("essaycoach_webhook_deliveries_total")
# Every runner (one per Gateway replica) reads the shared queue's depth this often, not every poll.
QUEUE_STATS_SECONDS = 5.0

EngineFactory = Callable[[], AnalysisEngine]
OnFinished = Callable[[Submission], Awaitable[None]]


# --- scores (pure) --------------------------------------------------------------------------


def level_for(criterion: Criterion, points: float) -> str:
    """The descriptor of the level whose range holds `points` (the nearest one below otherwise)."""
    chosen = criterion.levels[0]
    for level in criterion.levels:
        if points >= level.min_score:
            chosen = level
    return chosen.descriptor


def effective_scores(
    ai_scores: Sequence[Mapping[str, Any]] | None,
    overrides: Iterable[ScoreOverride],
    criteria: Sequence[Criterion] = (),
) -> list[dict[str, Any]]:
    """The scores to show: the AI's, with each teacher override applied on top.

    An overridden score has ``source: "teacher"``, ``estimate: false``, ``final: true``,
    ``overridden_by``/``overridden_at``, and keeps the AI's proposal in ``ai_points``/``ai_level``.
    AI scores are never ``final``: the LLM (or the local heuristic) proposes, a teacher decides.
    """
    by_criterion = {c.id: c for c in criteria}
    out: dict[str, dict[str, Any]] = {}
    for s in ai_scores or []:
        out[s["criterion_id"]] = {**s, "final": False, "ai_points": s.get("points"), "ai_level": s.get("level"),
                                  "overridden_by": None, "overridden_at": None}
    for o in overrides:
        base = out.get(o.criterion_id)
        criterion = by_criterion.get(o.criterion_id)
        if base is None:
            base = {"criterion_id": o.criterion_id, "criterion": criterion.name if criterion else o.criterion_id,
                    "max_points": criterion.max_points if criterion else o.points,
                    "ai_points": None, "ai_level": None}
        level = o.level or (level_for(criterion, o.points) if criterion else "")
        out[o.criterion_id] = {**base, "points": o.points, "level": level,
                               "rationale": o.rationale or base.get("rationale", ""),
                               "source": "teacher", "estimate": False, "final": True,
                               "overridden_by": str(o.teacher_id), "overridden_at": o.created_at.isoformat()}
    order = [c.id for c in criteria] + [k for k in out if k not in by_criterion]
    return [out[k] for k in order if k in out]


def day_start(now: datetime) -> datetime:
    """Midnight UTC of `now`'s day: per-user token budgets are per UTC day."""
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def rubric_document(rubric: Any) -> dict[str, Any]:
    return {"id": str(rubric.id), "title": rubric.title, "criteria": rubric.criteria}


# --- runner ---------------------------------------------------------------------------------


def _forget_when_done(tasks: dict[uuid.UUID, asyncio.Task[None]],
                      job_id: uuid.UUID) -> Callable[[asyncio.Task[None]], None]:
    """A done-callback that removes `job_id`'s task from `tasks` (bound now, not at call time)."""
    def forget(_task: asyncio.Task[None]) -> None:
        tasks.pop(job_id, None)
    return forget


@dataclass(frozen=True)
class _Job:
    id: uuid.UUID
    text: str
    essay_id: uuid.UUID | None
    class_id: uuid.UUID | None
    rubric_id: uuid.UUID | None
    assignment_id: uuid.UUID | None
    attempts: int
    status: str
    callback_url: str | None
    requester_id: uuid.UUID


class SubmissionRunner:
    """Polls the store (every ``poll_seconds``, or at once after ``notify()``) and runs up to
    ``concurrency`` jobs at a time. ``clock`` returns aware UTC datetimes (leases are compared in the
    shared store, so they are wall time)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        engine_factory: EngineFactory,
        clock: Callable[[], datetime] = utcnow,
        *,
        config: RunnerConfig = RunnerConfig(),
        sender: WebhookSender | None = None,
        on_finished: OnFinished | None = None,
        worker_id: str | None = None,
        model_name: str = "rules",
        run_local_in_thread: bool = True,
    ) -> None:
        self.sessions = sessions
        self.engine_factory = engine_factory
        self.clock = clock
        self.config = config
        self.sender = sender
        self.on_finished = on_finished
        self.worker_id = worker_id or f"w-{uuid.uuid4().hex[:16]}"
        self.model_name = model_name
        self.run_local_in_thread = run_local_in_thread
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._active: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._deliveries: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._delivery_slots = asyncio.Semaphore(config.delivery_concurrency)

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._loop(), name=f"submission-runner-{self.worker_id}")

    async def stop(self) -> None:
        """Cancel the loop and running jobs, then hand their jobs back to the queue."""
        tasks = [t for t in [self._loop_task, *self._active.values(), *self._deliveries.values()] if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loop_task = None
        self._active.clear()
        self._deliveries.clear()
        try:
            async with self.sessions() as session:
                await repo.release_worker(session, worker_id=self.worker_id)
                await session.commit()
        except Exception:
            log.exception("could not release jobs of worker %s; their leases will expire", self.worker_id)
        if self.sender is not None:
            await self.sender.aclose()

    def notify(self) -> None:
        """Wake the loop now (a handler just queued a job)."""
        self._wake.set()

    @property
    def active(self) -> set[uuid.UUID]:
        return set(self._active)

    async def _loop(self) -> None:
        measured = 0.0
        while True:
            try:
                self._spawn(await self.claim())
                if time.monotonic() - measured >= QUEUE_STATS_SECONDS:
                    measured = time.monotonic()
                    await self.measure_queue()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("submission runner poll failed")
            # `asyncio.timeout`, not `wait_for`: Python 3.11's `wait_for` drops a cancellation that
            # arrives just after the wake-up, and `stop` then waited for ever on this loop.
            try:
                async with asyncio.timeout(self.config.poll_seconds):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()

    def _spawn(self, claimed: list[uuid.UUID]) -> None:
        for job_id in claimed:
            task = asyncio.create_task(self.process(job_id), name=f"submission-{job_id}")
            self._active[job_id] = task
            task.add_done_callback(_forget_when_done(self._active, job_id))
            # A finished job frees a slot: look for more work straight away.
            task.add_done_callback(lambda _t: self._wake.set())

    async def run_until_idle(self) -> None:
        """Claim and run jobs, and deliver their webhooks, until none is claimable (tests and
        one-shot tools)."""
        while True:
            claimed = await self.claim()
            if not claimed:
                await self.deliveries_done()
                return
            await asyncio.gather(*(self.process(job_id) for job_id in claimed))
            await self.deliveries_done()

    async def deliveries_done(self) -> None:
        """Wait for the webhook deliveries queued so far."""
        await asyncio.gather(*list(self._deliveries.values()), return_exceptions=True)

    async def measure_queue(self) -> tuple[int, float]:
        """Set the queue depth and oldest-job age gauges from the store; returns them."""
        async with self.sessions() as session:
            depth, oldest = await repo.queue_stats(session)
        age = max(0.0, (self.clock() - oldest).total_seconds()) if oldest is not None else 0.0
        _QUEUE_DEPTH.set(depth)
        _QUEUE_AGE.set(age)
        return depth, age

    # --- claiming -------------------------------------------------------------------------

    async def claim(self) -> list[uuid.UUID]:
        free = self.config.concurrency - len(self._active)
        if free <= 0:
            return []
        now = self.clock()
        lease_until = now + timedelta(seconds=self.config.lease_seconds)
        claimed: list[uuid.UUID] = []
        async with self.sessions() as session:
            for job_id, status in await repo.claimable(session, now=now, limit=free * 2):
                if job_id in self._active:
                    continue
                if await repo.claim(session, submission_id=job_id, seen_status=status, worker_id=self.worker_id,
                                    now=now, lease_until=lease_until):
                    await session.commit()  # one commit per claim keeps row locks short
                    claimed.append(job_id)
                    if len(claimed) >= free:
                        break
            await session.commit()
        return claimed

    # --- one job --------------------------------------------------------------------------

    async def process(self, job_id: uuid.UUID) -> None:
        heartbeat = asyncio.create_task(self._heartbeat(job_id))
        try:
            async with self.sessions() as session:
                sub = await repo.get(session, submission_id=job_id)
                if sub is None or sub.worker_id != self.worker_id:
                    return
                job = _Job(sub.id, sub.text, sub.essay_id, sub.class_id, sub.rubric_id, sub.assignment_id,
                           sub.attempts, sub.status, sub.callback_url, sub.requester_id)
            if job.status == "running":
                if job.attempts > self.config.max_attempts:
                    await self._finish(job, status="failed",
                                       error=f"gave up after {self.config.max_attempts} attempts")
                else:
                    await self._run(job)
            if job.callback_url:
                # Hand over before this slot frees, so the lease is renewed without a gap.
                self._queue_delivery(job.id)
        finally:
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)

    def _queue_delivery(self, job_id: uuid.UUID) -> None:
        if job_id not in self._deliveries:
            task = asyncio.create_task(self._deliver_in_pool(job_id), name=f"webhook-{job_id}")
            self._deliveries[job_id] = task
            task.add_done_callback(_forget_when_done(self._deliveries, job_id))

    async def _deliver_in_pool(self, job_id: uuid.UUID) -> None:
        heartbeat = asyncio.create_task(self._heartbeat(job_id))
        try:
            async with self._delivery_slots:
                await self._deliver(job_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("webhook delivery for submission %s failed; another runner resumes it", job_id)
        finally:
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)

    async def _heartbeat(self, job_id: uuid.UUID) -> None:
        # Renew well before expiry so a slow LLM call never lets another runner steal a live job.
        interval = max(self.config.lease_seconds / 3, 0.01)
        while True:
            await asyncio.sleep(interval)
            try:
                async with self.sessions() as session:
                    await repo.renew_lease(session, submission_id=job_id, worker_id=self.worker_id,
                                           lease_until=self.clock() + timedelta(seconds=self.config.lease_seconds))
                    await session.commit()
            except Exception:
                log.exception("lease renewal failed for submission %s", job_id)

    async def _run(self, job: _Job) -> None:
        try:
            feedback, ai_scores, usage, provider = await self._analyse(job)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("submission %s failed (attempt %d)", job.id, job.attempts)
            if job.attempts >= self.config.max_attempts:
                await self._finish(job, status="failed", error=f"analysis failed: {type(exc).__name__}")
            else:
                # Back to the queue; the lease doubles as "not before" so a failing job backs off.
                delay = retry.delay(job.attempts, first=self.config.retry_backoff_seconds)
                async with self.sessions() as session:
                    await repo.update_held(session, submission_id=job.id, held_by=self.worker_id,
                                           status="queued", worker_id=None,
                                           lease_until=self.clock() + timedelta(seconds=delay),
                                           error=f"attempt {job.attempts} failed: {type(exc).__name__}")
                    await session.commit()
            return
        await self._finish(job, status="done", feedback=feedback, ai_scores=ai_scores, usage=usage,
                           provider=provider)

    async def _analyse(self, job: _Job) -> tuple[dict[str, Any], list[dict[str, Any]] | None, Usage, str]:
        async with self.sessions() as session:
            rubric = await rubrics.get(session, rubric_id=job.rubric_id) if job.rubric_id else None
            assignment = (await assignments.get(session, assignment_id=job.assignment_id)
                          if job.assignment_id else None)
            essay_used, class_used = await repo.tokens_used(session, essay_id=job.essay_id, class_id=job.class_id)
            user_used = (await repo.tokens_used_by_user(session, user_id=job.requester_id,
                                                        since=day_start(self.clock()))
                         if self.config.user_tokens_per_day is not None else 0)
        engine = self.engine_factory()
        essay_key = str(job.essay_id or job.id)
        class_key = str(job.class_id) if job.class_id else None
        # The budget counts what this essay and class already spent in the store, not only here.
        engine.budget.load(essay_id=essay_key, used=essay_used)
        if class_key is not None:
            engine.budget.load(class_id=class_key, used=class_used)
        if self.config.user_tokens_per_day is not None:
            # A new job (or process) must not mean a new allowance: the requester's stored usage
            # today counts, so repeated submissions cannot spend without limit.
            engine.budget.total = max(0, self.config.user_tokens_per_day - user_used)
        rubric_doc = rubric_document(rubric) if rubric is not None else None
        prompt = assignment.prompt if assignment is not None else ""

        async def analyse() -> tuple[Any, Any, Usage]:
            result = await engine.analyze_changed(old_text="", new_text=job.text, essay_id=essay_key,
                                                  class_id=class_key, assignment_prompt=prompt,
                                                  dictionary=frozenset(), run_llm=True)
            scores, score_usage = (await engine.score_rubric(job.text, rubric_doc, result.items,
                                                             essay_id=essay_key, class_id=class_key)
                                   if rubric_doc is not None else ([], Usage()))
            return result, scores, result.usage + score_usage

        try:
            if engine.llm is None and self.run_local_in_thread:
                # Local rules are CPU-bound: keep them off the Gateway's event loop.
                result, scores, usage = await asyncio.to_thread(asyncio.run, analyse())
            else:
                result, scores, usage = await analyse()
        finally:
            if engine.llm is not None:
                await engine.llm.aclose()
        feedback = {"items": [i.as_dict() for i in result.items]}
        ai_scores = [s.model_dump(mode="json") for s in scores] if rubric_doc is not None else None
        provider = engine.llm.name if engine.llm is not None else "local"
        return feedback, ai_scores, usage, provider

    async def _finish(
        self, job: _Job, *, status: str, error: str | None = None, feedback: dict[str, Any] | None = None,
        ai_scores: list[dict[str, Any]] | None = None, usage: Usage | None = None, provider: str = "local",
    ) -> None:
        now = self.clock()
        async with self.sessions() as session:
            values: dict[str, Any] = {"status": status, "error": error, "completed_at": now}
            if status == "done":
                rubric = await rubrics.get(session, rubric_id=job.rubric_id) if job.rubric_id else None
                criteria = parse_rubric(rubric_document(rubric)) if rubric is not None else []
                overrides = await repo.latest_overrides(session, submission_id=job.id)
                values.update(feedback=feedback, ai_scores=ai_scores,
                              scores=effective_scores(ai_scores, overrides, criteria))
            if job.callback_url:
                # Keep the lease while delivering; `pending` lets another runner resume after a crash.
                values.update(callback_status="pending",
                              lease_until=now + timedelta(seconds=self.config.lease_seconds))
            else:
                values.update(worker_id=None, lease_until=None)
            if not await repo.update_held(session, submission_id=job.id, held_by=self.worker_id, **values):
                log.warning("submission %s: lease lost before finishing; result dropped", job.id)
                return
            if usage is not None:
                await repo.add_usage(session, submission_id=job.id, essay_id=job.essay_id, class_id=job.class_id,
                                     user_id=job.requester_id,
                                     provider=provider, model=self.model_name if provider != "local" else "rules",
                                     prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                                     now=now)
            await session.commit()
            sub = await repo.get(session, submission_id=job.id)
        if self.on_finished is not None and sub is not None:
            try:
                await self.on_finished(sub)
            except Exception:
                log.exception("on_finished hook failed for submission %s", job.id)

    # --- webhook --------------------------------------------------------------------------

    async def _deliver(self, job_id: uuid.UUID) -> None:
        async with self.sessions() as session:
            sub = await repo.get(session, submission_id=job_id)
            if (sub is None or sub.worker_id != self.worker_id or sub.callback_status != "pending"
                    or not sub.callback_url):
                return
            payload = webhook_payload(sub)
            url = sub.callback_url
            secret = await webhook_secrets.ensure(session, user_id=sub.requester_id, secret=new_webhook_secret(),
                                                  now=self.clock())
            await session.commit()
            key = secret.secret.encode()
        if self.sender is None:
            result = DeliveryResult(False, 0, None, "webhooks are not configured")
        else:
            event = f"submission.{payload['status']}"
            result = await self.sender.deliver(url, key=key, event=event,
                                               delivery_id=str(uuid.uuid5(job_id, event)), payload=payload)
        _WEBHOOKS.labels("delivered" if result.delivered else "failed" if result.attempts else "not_sent").inc()
        async with self.sessions() as session:
            await repo.update_held(session, submission_id=job_id, held_by=self.worker_id,
                                   callback_status="delivered" if result.delivered else "failed",
                                   callback_attempts=Submission.callback_attempts + result.attempts,
                                   worker_id=None, lease_until=None)
            await session.commit()
        if not result.delivered:
            log.warning("webhook for submission %s not delivered after %d attempts: %s",
                        job_id, result.attempts, result.error)


def webhook_payload(sub: Submission) -> dict[str, Any]:
    """The webhook body: the outcome and scores; the full feedback is one GET away (`links.self`)."""
    items = (sub.feedback or {}).get("items", [])
    counts: dict[str, int] = {}
    for item in items:
        counts[item.get("kind", "other")] = counts.get(item.get("kind", "other"), 0) + 1
    return {
        "submission_id": str(sub.id),
        "status": sub.status,
        "event": f"submission.{sub.status}",
        "essay_id": str(sub.essay_id) if sub.essay_id else None,
        "rubric_id": str(sub.rubric_id) if sub.rubric_id else None,
        "assignment_id": str(sub.assignment_id) if sub.assignment_id else None,
        "late": sub.late,
        "created_at": sub.created_at.isoformat(),
        "completed_at": sub.completed_at.isoformat() if sub.completed_at else None,
        "error": sub.error,
        "scores": sub.scores or [],
        "feedback_count": len(items),
        "feedback_counts": counts,
        "links": {"self": f"/api/v1/submissions/{sub.id}"},
    }

"""Builds the submissions job runner from settings and ties it to a Gateway replica's lifespan.

Every replica runs one runner; claims are atomic in the store, so several replicas (and restarts)
share the queue safely. Handlers call `wake(ctx)` after queueing a job so it starts at once rather
than at the next poll.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from actors.analysis.engine import AnalysisEngine
from actors.analysis.llm import TokenBudget
from actors.analysis.local import LocalAnalyzer
from actors.analysis.service import make_provider
from actors.config import RunnerConfig
from db.models import Submission
from serve_app.jobs import SubmissionRunner
from serve_app.settings import Settings
from serve_app.webhooks import WebhookSender

if TYPE_CHECKING:
    from serve_app.deps import Context

log = logging.getLogger("essaycoach.jobs")

Runner = SubmissionRunner
ATTR = "submission_runner"


def engine_factory(settings: Settings) -> Callable[[], AnalysisEngine]:
    """A fresh engine per job around one shared (stateless) local analyser; the LLM provider comes
    from `make_provider` when `ai_provider` is not `local`."""
    analyzer = LocalAnalyzer()

    def make() -> AnalysisEngine:
        provider = make_provider(settings.analysis_config()) if settings.ai_provider != "local" else None
        return AnalysisEngine(analyzer, provider, budget=TokenBudget(per_essay=settings.ai_token_budget_per_essay,
                                                                     per_class=settings.ai_token_budget_per_class))

    return make


def build_runner(settings: Settings, ctx: Context) -> SubmissionRunner:
    sender = WebhookSender(
        max_attempts=settings.webhook_max_attempts,
        backoff=settings.webhook_backoff_seconds, timeout=settings.webhook_timeout_seconds,
        allow_private=settings.webhook_private_allowed,
    )

    async def on_finished(sub: Submission) -> None:
        # Tell the essay's open editors (the `submission` event of /ws/essays/{id}/events).
        if sub.essay_id is not None:
            await ctx.hosts.of(sub.essay_id).publish_event(sub.essay_id, "submission",
                                                          submission_id=str(sub.id), status=sub.status)

    return SubmissionRunner(
        ctx.sessions, engine_factory(settings),
        config=RunnerConfig(max_attempts=settings.submission_max_attempts,
                            lease_seconds=settings.submission_lease_seconds,
                            poll_seconds=settings.submission_poll_seconds,
                            concurrency=settings.submission_concurrency,
                            delivery_concurrency=settings.webhook_concurrency,
                            user_tokens_per_day=settings.ai_token_budget_per_user_per_day or None),
        sender=sender, on_finished=on_finished, model_name=settings.ai_model,
    )


async def start_runner(ctx: Context) -> SubmissionRunner:
    """Start this replica's runner (idempotent) and keep it on the context for `wake`."""
    runner: SubmissionRunner | None = getattr(ctx, ATTR, None)
    if runner is None:
        runner = build_runner(ctx.settings, ctx)
        setattr(ctx, ATTR, runner)
        await runner.start()
        log.info("submission runner started", extra={"worker_id": runner.worker_id})
    return runner


async def stop_runner(ctx: Context) -> None:
    """Stop the runner; jobs it was running go back to the queue for any replica."""
    runner: SubmissionRunner | None = getattr(ctx, ATTR, None)
    if runner is not None:
        setattr(ctx, ATTR, None)
        await runner.stop()


# `stop` is the name the lifespan wiring brief asked for.
stop = stop_runner


def wake(ctx: Context) -> None:
    """Start a just-queued job now rather than at the next poll (no-op without a runner)."""
    runner: SubmissionRunner | None = getattr(ctx, ATTR, None)
    if runner is not None:
        runner.notify()

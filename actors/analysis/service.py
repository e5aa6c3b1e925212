"""Building the engine from settings, the Analyzer Serve deployment body, and its client.

Hosts and the submission runner need one `Analyzer`: in-process it is the `AnalysisEngine`
itself; under Ray Serve it is `RemoteAnalyzer`, which calls the autoscaled Analyzer deployment.
"""

from __future__ import annotations

from typing import Any

from actors import tracing
from actors.config import AnalysisConfig

from .engine import AnalysisEngine
from .llm import OpenAIProvider, TokenBudget
from .local import LocalAnalyzer
from .provider import AnalysisProvider, LocalProvider
from .worker import RulesWorker

ANALYZER_DEPLOYMENT = "Analyzer"


def make_provider(config: AnalysisConfig, **overrides: Any) -> AnalysisProvider:
    """Build the configured provider; ``overrides`` go to the ``OpenAIProvider`` constructor."""
    if config.provider == "local":
        return LocalProvider()
    if config.provider == "openai":
        return OpenAIProvider(base_url=config.base_url, api_key=config.api_key, model=config.model, **overrides)
    raise ValueError(f"unknown ai_provider {config.provider!r}")


def build_engine(config: AnalysisConfig, *, worker: RulesWorker | None = None) -> AnalysisEngine:
    """The engine; `worker` (see `rules_worker`) takes its big local-analysis jobs."""
    return AnalysisEngine(
        LocalAnalyzer(), make_provider(config),
        budget=TokenBudget(per_essay=config.token_budget_per_essay, per_class=config.token_budget_per_class),
        worker=worker,
    )


def rules_worker(config: AnalysisConfig) -> RulesWorker | None:
    """The host process's rules worker when `config.process` (its owner closes it on stop)."""
    return RulesWorker() if config.process else None


class AnalyzerService:
    """The Analyzer deployment's body: one engine (cache, budget, LLM client) per replica.

    Its Serve shell (`serve_app.deployments.AnalyzerReplica`) reads the settings in the replica's
    own process and passes their `AnalysisConfig`."""

    def __init__(self, config: AnalysisConfig) -> None:
        self.engine = build_engine(config)

    async def analyze_changed(self, old_text: str, new_text: str, **kwargs: Any) -> Any:
        return await self.engine.analyze_changed(old_text, new_text, **kwargs)

    async def score_rubric(self, text: str, rubric: Any, items: Any = (), **kwargs: Any) -> Any:
        return await self.engine.score_rubric(text, rubric, items, **kwargs)

    async def traced(self, traceparent: str | None, method: str, *args: Any, **kwargs: Any) -> Any:
        """`method` as a child span of the caller's trace (`RemoteAnalyzer` with tracing on)."""
        if method not in _METHODS:
            raise ValueError(f"not an Analyzer method: {method!r}")
        call = getattr(self, method)(*args, **kwargs)
        if not tracing.enabled:
            return await call
        return await tracing.within(f"analyzer.{method}", call, parent=traceparent, kind="SERVER")


_METHODS = ("analyze_changed", "score_rubric")


class RemoteAnalyzer:
    """An `Analyzer` that calls the Serve deployment through its handle."""

    def __init__(self, handle: Any, *, llm_enabled: bool) -> None:
        self.handle = handle
        self._llm_enabled = llm_enabled

    @property
    def llm_enabled(self) -> bool:
        return self._llm_enabled

    async def analyze_changed(self, old_text: str, new_text: str, **kwargs: Any) -> Any:
        if tracing.enabled:
            return await self._traced("analyze_changed", old_text, new_text, **kwargs)
        return await self.handle.analyze_changed.remote(old_text, new_text, **kwargs)

    async def score_rubric(self, text: str, rubric: Any, items: Any = (), **kwargs: Any) -> Any:
        if tracing.enabled:
            return await self._traced("score_rubric", text, rubric, items, **kwargs)
        return await self.handle.score_rubric.remote(text, rubric, items, **kwargs)

    async def _traced(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """The call inside an `analyzer.call` span whose context the replica continues."""
        with tracing.span("analyzer.call", kind="CLIENT", method=method):
            return await self.handle.traced.remote(tracing.traceparent(), method, *args, **kwargs)

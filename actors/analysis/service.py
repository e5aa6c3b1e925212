"""Building the engine from settings, the Analyzer Serve deployment body, and its client.

Hosts and the submission runner need one `Analyzer`: in-process it is the `AnalysisEngine`
itself; under Ray Serve it is `RemoteAnalyzer`, which calls the autoscaled Analyzer deployment.
"""

from __future__ import annotations

from typing import Any

from .engine import AnalysisEngine
from .llm import TokenBudget
from .local import LocalAnalyzer
from .provider import make_provider

ANALYZER_DEPLOYMENT = "Analyzer"


def build_engine(settings: Any) -> AnalysisEngine:
    return AnalysisEngine(
        LocalAnalyzer(), make_provider(settings),
        budget=TokenBudget(per_essay=settings.ai_token_budget_per_essay,
                           per_class=settings.ai_token_budget_per_class),
    )


class AnalyzerService:
    """The Analyzer deployment's body: one engine (cache, budget, LLM client) per replica."""

    def __init__(self, settings_values: dict[str, Any] | None = None) -> None:
        from serve_app.settings import Settings

        self.engine = build_engine(Settings(**(settings_values or {})))

    async def analyze_changed(self, old_text: str, new_text: str, **kwargs: Any) -> Any:
        return await self.engine.analyze_changed(old_text, new_text, **kwargs)

    async def score_rubric(self, text: str, rubric: Any, items: Any = (), **kwargs: Any) -> Any:
        return await self.engine.score_rubric(text, rubric, items, **kwargs)


class RemoteAnalyzer:
    """An `Analyzer` that calls the Serve deployment through its handle."""

    def __init__(self, handle: Any, *, llm_enabled: bool) -> None:
        self.handle = handle
        self._llm_enabled = llm_enabled

    @property
    def llm_enabled(self) -> bool:
        return self._llm_enabled

    async def analyze_changed(self, old_text: str, new_text: str, **kwargs: Any) -> Any:
        return await self.handle.analyze_changed.remote(old_text, new_text, **kwargs)

    async def score_rubric(self, text: str, rubric: Any, items: Any = (), **kwargs: Any) -> Any:
        return await self.handle.score_rubric.remote(text, rubric, items, **kwargs)

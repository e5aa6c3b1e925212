"""The analysis provider interface, its results and errors, and the factory that picks one.

A provider analyses one paragraph (tier 2) or scores an essay against a rubric. ``LocalProvider``
needs no network; ``OpenAIProvider`` (in ``llm.py``) talks to any OpenAI-compatible endpoint.
This module holds the shared types and imports no implementation (``llm.py`` imports it, never
the reverse: an import-linter contract); ``service.make_provider`` picks one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from .items import FeedbackItem, Score
from .local import LocalAnalyzer
from .rubric import score_rubric_local

Rubric = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ProviderContext:
    """Minimal context sent with a paragraph: the sentence before it and the assignment prompt."""

    previous_sentence: str = ""
    assignment_prompt: str = ""


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens one call consumed; ``estimated`` when the endpoint did not report ``usage``."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.estimated or other.estimated,
        )


@dataclass(frozen=True, slots=True)
class ProviderResult:
    """Validated items for one paragraph (paragraph-relative offsets) and what the call cost.

    ``dropped`` counts items the model returned that failed validation; ``warnings`` names
    whole-response problems that were degraded to an empty result (e.g. ``invalid_json``).
    """

    items: list[FeedbackItem]
    usage: Usage = field(default_factory=Usage)
    dropped: int = 0
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ScoreResult:
    """Validated rubric scores (criteria the model got wrong are left out) and usage."""

    scores: list[Score]
    usage: Usage = field(default_factory=Usage)
    dropped: int = 0
    warnings: tuple[str, ...] = ()


class ProviderError(Exception):
    """A provider call failed; ``code`` is stable for logs and metrics, ``retryable`` for callers."""

    code = "provider_error"
    retryable = True

    def __init__(self, detail: str = "", *, usage: Usage | None = None) -> None:
        super().__init__(detail or self.code)
        self.usage = usage


class ProviderTimeout(ProviderError):
    """The endpoint did not answer within the deadline (after retries)."""

    code = "provider_timeout"


class ProviderUnavailable(ProviderError):
    """Connection failures, 5xx or 429 persisted through every retry."""

    code = "provider_unavailable"


class CircuitOpenError(ProviderError):
    """The circuit breaker is open: recent calls failed, so no request was sent."""

    code = "provider_circuit_open"


class ProviderResponseTooLarge(ProviderError):
    """The response body exceeded the size cap; it was not read further."""

    code = "provider_response_too_large"
    retryable = False


class ProviderBadResponse(ProviderError):
    """The HTTP envelope was not a chat-completion response (not JSON, no choices, 4xx)."""

    code = "provider_bad_response"
    retryable = False


class BudgetExceeded(ProviderError):
    """The essay's or class's token budget has no room for this call; nothing was sent."""

    code = "token_budget_exceeded"
    retryable = False


@runtime_checkable
class AnalysisProvider(Protocol):
    """What the engine needs from a provider; implementations raise only ``ProviderError``s."""

    name: str

    async def analyze_paragraph(self, paragraph_text: str, context: ProviderContext) -> ProviderResult: ...

    async def score_rubric(
        self, text: str, rubric: Rubric, items: Sequence[FeedbackItem] = ()
    ) -> ScoreResult: ...

    def estimate_tokens(self, paragraph_text: str, context: ProviderContext) -> int: ...

    async def aclose(self) -> None: ...


class LocalProvider:
    """Provider backed only by local rules: costs no tokens, never fails on the network.

    The engine treats a provider named ``local`` as "no tier 2" (its paragraph results would
    duplicate tier 1); ``analyze_paragraph`` is still useful for one-shot API submissions.
    """

    name = "local"

    def __init__(self, analyzer: LocalAnalyzer | None = None) -> None:
        self.analyzer = analyzer or LocalAnalyzer()

    async def analyze_paragraph(self, paragraph_text: str, context: ProviderContext) -> ProviderResult:
        return ProviderResult(items=self.analyzer.analyze_paragraph(paragraph_text))

    async def score_rubric(self, text: str, rubric: Rubric, items: Sequence[FeedbackItem] = ()) -> ScoreResult:
        return ScoreResult(scores=score_rubric_local(text, rubric, items))

    def estimate_tokens(self, paragraph_text: str, context: ProviderContext) -> int:
        return 0

    async def aclose(self) -> None:
        return None

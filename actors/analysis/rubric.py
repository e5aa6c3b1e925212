"""Rubric parsing and the local (heuristic) rubric scorer.

Rubric shape (DESIGN.md): ``{id, title, criteria: [{id, name, description?, weight,
levels: [{min_score, max_score, descriptor}]}]}``. Local scores are always ``estimate=True``:
they come from counting issues, not from reading the argument, and each rationale quotes the
sentence it is based on so a teacher can check it quickly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .items import FeedbackItem, Score
from .local import LocalAnalyzer, sentence_spans
from .paragraphs import split_paragraphs

QUOTE_CHARS = 160


@dataclass(frozen=True, slots=True)
class Level:
    """One performance level of a criterion: a score range and its descriptor."""

    min_score: float
    max_score: float
    descriptor: str


@dataclass(frozen=True, slots=True)
class Criterion:
    """One rubric criterion with its levels sorted from lowest to highest."""

    id: str
    name: str
    description: str
    weight: float
    levels: tuple[Level, ...]

    @property
    def max_points(self) -> float:
        return max(level.max_score for level in self.levels)


def parse_rubric(rubric: Mapping[str, Any]) -> list[Criterion]:
    """Normalise a rubric dict; raises ``ValueError`` if it is malformed."""
    criteria = []
    for raw in rubric.get("criteria") or []:
        levels = []
        for lv in raw.get("levels") or []:
            lo, hi = float(lv["min_score"]), float(lv["max_score"])
            if hi < lo:
                raise ValueError(f"level {lv!r} has max_score below min_score")
            levels.append(Level(lo, hi, str(lv.get("descriptor", ""))))
        if not levels:
            raise ValueError(f"criterion {raw.get('id')!r} has no levels")
        levels.sort(key=lambda lv: (lv.min_score, lv.max_score))
        criteria.append(
            Criterion(
                id=str(raw["id"]),
                name=str(raw.get("name", raw["id"])),
                description=str(raw.get("description") or ""),
                weight=float(raw.get("weight", 1)),
                levels=tuple(levels),
            )
        )
    return criteria


def score_rubric_local(
    text: str, rubric: Mapping[str, Any], items: Sequence[FeedbackItem] = (), *, analyzer: LocalAnalyzer | None = None
) -> list[Score]:
    """Heuristic score per criterion from issue density, length and structure (``estimate=True``).

    ``items`` are the essay's current feedback items with full-text offsets; when empty they are
    computed here with the local rules.
    """
    criteria = parse_rubric(rubric)
    if not criteria:
        return []
    analyzer = analyzer or LocalAnalyzer()
    paragraphs = split_paragraphs(text)
    if not items:
        computed: list[FeedbackItem] = []
        for p in paragraphs:
            for item in analyzer.analyze_paragraph(p.text):
                computed.append(item.replace(start=item.start + p.start, end=item.end + p.start))
        computed.extend(analyzer.analyze_structure(paragraphs))
        items = computed
    sentences = [(p.start + s, p.start + e) for p in paragraphs for s, e in sentence_spans(p.text)]
    words = max(sum(len(p.text.split()) for p in paragraphs), 0)
    per100 = 100 / max(words, 1)
    mechanics = [i for i in items if i.kind in ("spelling", "grammar")]
    style = [i for i in items if i.kind == "style"]
    structure = [i for i in items if i.kind == "structure"]

    def quote_at(offset: int | None) -> str:
        if not sentences:
            return ""
        span = sentences[0]
        if offset is not None:
            span = next((s for s in sentences if s[0] <= offset < s[1]), span)
        sentence = text[span[0] : span[1]]
        return sentence if len(sentence) <= QUOTE_CHARS else sentence[: QUOTE_CHARS - 1].rstrip() + "…"

    scores = []
    for criterion in criteria:
        topic = f"{criterion.name} {criterion.description}".lower()
        if any(k in topic for k in ("spell", "grammar", "mechanic", "convention", "punctuation")):
            quality = 1 - len(mechanics) * per100 / 5
            reason = f"{len(mechanics)} spelling or grammar issue(s) found in {words} words"
            example = quote_at(mechanics[0].start if mechanics else None)
        elif any(k in topic for k in ("organi", "structure", "paragraph", "flow", "coheren")):
            quality = 1 - 0.25 * len(structure) - (0.4 if len(paragraphs) < 3 else 0)
            reason = f"{len(paragraphs)} paragraph(s) and {len(structure)} structure issue(s)"
            example = quote_at(structure[0].start if structure else None)
        elif any(k in topic for k in ("style", "voice", "word choice", "vocabulary", "language", "fluency", "clarity")):
            quality = 1 - len(style) * per100 / 8
            reason = f"{len(style)} style suggestion(s) in {words} words"
            example = quote_at(style[0].start if style else None)
        else:
            has_thesis = not any(i.rule == "no_thesis" for i in structure)
            quality = 0.7 * min(words / 300, 1) + (0.3 if has_thesis and len(paragraphs) >= 3 else 0)
            reason = f"{words} words; {'a clear' if has_thesis else 'no clear'} thesis in the introduction"
            example = quote_at(None)
        if words < 50:
            quality *= words / 50
        quality = min(max(quality, 0.0), 1.0)
        n = len(criterion.levels)
        index = min(n - 1, int(quality * n))
        level = criterion.levels[index]
        within = min(max(quality * n - index, 0.0), 1.0)
        points = round(level.min_score + (level.max_score - level.min_score) * within, 1)
        rationale = f"Automatic estimate: {reason}."
        if example:
            rationale += f" Based on sentences such as: “{example}”"
        scores.append(
            Score(
                criterion_id=criterion.id,
                criterion=criterion.name,
                level=level.descriptor,
                points=points,
                max_points=criterion.max_points,
                rationale=rationale,
                source="local",
                estimate=True,
            )
        )
    return scores

"""Feedback items and rubric scores, as sent on the wire (see DESIGN.md "Feedback item").

An item's ``id`` is derived from what it says and where it lives (kind, rule, quote, the hash of
its paragraph and which occurrence it is), never from offsets. The same issue therefore keeps its
id across re-runs and when text above it moves, which makes ``feedback`` diffs cheap:
``diff_items`` compares by id and content.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

Kind = Literal["spelling", "grammar", "style", "structure", "rubric", "comment"]
Source = Literal["local", "llm", "teacher"]
Severity = Literal["info", "warning", "error"]

KINDS: frozenset[str] = frozenset({"spelling", "grammar", "style", "structure", "rubric", "comment"})
SEVERITIES: frozenset[str] = frozenset({"info", "warning", "error"})


@dataclass(frozen=True, slots=True)
class FeedbackItem:
    """One piece of feedback on a span of the essay.

    ``start``/``end`` are character offsets (Python code points) and ``quote == text[start:end]``.
    Analysers return offsets relative to the paragraph they looked at; ``shift_items`` moves them
    to full-text offsets. ``anchor`` is filled by the essay actor (Yjs relative positions).
    ``rule`` names the check that produced the item; ``paragraph_hash`` ties it to its paragraph.

    A slotted dataclass, not a pydantic model: a host keeps every open essay's items, twice (the
    essay's set and the analysis cache), and each pydantic copy carried its own ``__dict__`` and
    fields-set (~1.4 KiB against ~0.1 KiB here). Analysers validate what they build (the LLM's
    output in ``llm._validate_issue``).
    """

    id: str
    kind: Kind
    source: Source
    severity: Severity
    message: str
    quote: str
    start: int
    end: int
    suggestion: str | None = None
    anchor: str | None = None
    rule: str = ""
    paragraph_hash: str = ""

    def __post_init__(self) -> None:
        if self.start < 0 or self.end < 0:
            raise ValueError(f"negative offset in span {self.start}..{self.end}")

    def replace(self, **changes: Any) -> FeedbackItem:
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in ITEM_FIELDS}


ITEM_FIELDS = tuple(f.name for f in dataclasses.fields(FeedbackItem))
# Everything an item says but its anchor, as one tuple: the essay host compares every item of an
# essay at each tier-1 run, and a copy per item (``replace(anchor=None)``) cost ~5 us each.
_content = attrgetter(*(name for name in ITEM_FIELDS if name != "anchor"))


def same_content(a: FeedbackItem, b: FeedbackItem) -> bool:
    """Whether two items say the same about the same span (their anchors aside)."""
    return a is b or _content(a) == _content(b)


class Score(BaseModel):
    """A score for one rubric criterion; ``estimate`` marks local heuristics and unreviewed guesses."""

    model_config = ConfigDict(frozen=True)

    criterion_id: str
    criterion: str
    level: str
    points: float
    max_points: float
    rationale: str
    source: Source
    estimate: bool


def make_item_id(kind: str, rule: str, quote: str, paragraph_hash: str, occurrence: int) -> str:
    """Deterministic id: the same issue in the same paragraph always gets the same id."""
    raw = "\x1f".join((kind, rule, quote.casefold(), paragraph_hash, str(occurrence)))
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:24]


def new_item(
    *,
    kind: Kind,
    rule: str,
    severity: Severity,
    message: str,
    text: str,
    start: int,
    end: int,
    paragraph_hash: str,
    suggestion: str | None = None,
    source: Source = "local",
) -> FeedbackItem:
    """Build an item for ``text[start:end]``; its id is fixed later by ``assign_ids``."""
    return FeedbackItem(
        id="",
        kind=kind,
        source=source,
        severity=severity,
        message=message,
        suggestion=suggestion,
        quote=text[start:end],
        start=start,
        end=end,
        rule=rule,
        paragraph_hash=paragraph_hash,
    )


def assign_ids(items: Iterable[FeedbackItem]) -> list[FeedbackItem]:
    """Sort items by position and give each its deterministic id (occurrence counted per rule+quote)."""
    ordered = sorted(items, key=lambda i: (i.start, i.end, i.kind, i.rule))
    seen: Counter[tuple[str, str, str, str]] = Counter()
    out: list[FeedbackItem] = []
    for item in ordered:
        key = (item.kind, item.rule, item.quote.casefold(), item.paragraph_hash)
        occurrence = seen[key]
        seen[key] += 1
        item_id = make_item_id(item.kind, item.rule, item.quote, item.paragraph_hash, occurrence)
        out.append(item.replace(id=item_id))
    return out


def shift_items(items: Iterable[FeedbackItem], offset: int, *, salt: str = "") -> list[FeedbackItem]:
    """Move paragraph-relative offsets to full-text offsets.

    ``salt`` distinguishes identical paragraphs that occur more than once in one essay, so their
    items keep distinct ids.
    """
    if not offset and not salt:
        return list(items)
    out: list[FeedbackItem] = []
    for item in items:
        # The constructor, not `replace`: this runs for every item of an essay at each tier-1 run.
        out.append(FeedbackItem(
            id=hashlib.sha256(f"{item.id}\x1f{salt}".encode()).hexdigest()[:24] if salt else item.id,
            kind=item.kind, source=item.source, severity=item.severity, message=item.message, quote=item.quote,
            start=item.start + offset, end=item.end + offset, suggestion=item.suggestion, anchor=item.anchor,
            rule=item.rule, paragraph_hash=item.paragraph_hash))
    return out


def diff_items(
    old: Sequence[FeedbackItem], new: Sequence[FeedbackItem]
) -> tuple[list[FeedbackItem], list[str]]:
    """Return (items that are new or changed, ids that disappeared) to go from ``old`` to ``new``.

    ``anchor`` is ignored in the comparison: the actor attaches anchors after analysis.
    """
    old_by_id = {item.id: item for item in old}
    new_ids = {item.id for item in new}
    changed = [item for item in new if (old_item := old_by_id.get(item.id)) is None
               or not same_content(old_item, item)]
    removed = [item_id for item_id in old_by_id if item_id not in new_ids]
    return changed, removed

"""Feedback items on the wire: the shape clients see, and the per-kind counts teachers see."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

WIRE_FIELDS = ("id", "kind", "source", "severity", "message", "suggestion", "quote", "start", "end", "anchor")


def wire_item(item: Any) -> dict[str, Any]:
    """The contract's feedback item (internal fields such as `rule` stay inside)."""
    data = item.as_dict() if hasattr(item, "as_dict") else dict(item)
    return {k: data.get(k) for k in WIRE_FIELDS}


def count_kinds(items: Iterable[Any]) -> dict[str, int]:
    return dict(Counter(getattr(i, "kind", None) or i["kind"] for i in items))


WORD_END = frozenset(".,;:!?\"')]}…")


def settled_text(text: str) -> str:
    """The text without a word still being typed at its end ("I beli" -> "I "), so the student is not
    told a half-typed word is misspelled (and the spell checker is not asked to correct it)."""
    if not text or text[-1].isspace() or text[-1] in WORD_END:
        return text
    cut = max(text.rfind(" "), text.rfind("\n"), text.rfind("\t"))
    return text[:cut + 1]


def carry_items(items: Iterable[Any], old_text: str, new_text: str) -> list[Any]:
    """Move items (e.g. the LLM's) to their paragraph's place in `new_text`; drop those whose
    paragraph no longer exists. Items are analysis `FeedbackItem`s with `paragraph_hash`."""
    from actors.analysis.paragraphs import split_paragraphs

    old_starts = {p.hash: p.start for p in split_paragraphs(old_text)}
    new_starts = {p.hash: p.start for p in split_paragraphs(new_text)}
    out = []
    for item in items:
        if item.paragraph_hash in old_starts and item.paragraph_hash in new_starts:
            shift = new_starts[item.paragraph_hash] - old_starts[item.paragraph_hash]
            out.append(item.replace(start=item.start + shift, end=item.end + shift))
    return out

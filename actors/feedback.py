"""Feedback items on the wire: the shape clients see, and the per-kind counts teachers see."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

WIRE_FIELDS = ("id", "kind", "source", "severity", "message", "suggestion", "quote", "start", "end", "anchor")


def wire_item(item: Any) -> dict[str, Any]:
    """The contract's feedback item (internal fields such as `rule` stay inside)."""
    data = item.model_dump() if hasattr(item, "model_dump") else dict(item)
    return {k: data.get(k) for k in WIRE_FIELDS}


def count_kinds(items: Iterable[Any]) -> dict[str, int]:
    return dict(Counter(getattr(i, "kind", None) or i["kind"] for i in items))

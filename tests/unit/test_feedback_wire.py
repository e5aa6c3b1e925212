"""Pure helpers of the live feedback path."""

from __future__ import annotations

import pytest

from actors.feedback import count_kinds, settled_text, wire_item


@pytest.mark.parametrize("text, settled", [
    ("I beli", "I "),
    ("I believe", "I "),
    ("I believe ", "I believe "),
    ("I believe.", "I believe."),
    ("First line\nsecon", "First line\n"),
    ("partial", ""),
    ("", ""),
])
def test_word_still_being_typed_at_the_end_is_left_out(text: str, settled: str) -> None:
    assert settled_text(text) == settled


def test_wire_item_keeps_only_contract_fields_and_counts_by_kind() -> None:
    item = {"id": "a", "kind": "spelling", "source": "local", "severity": "error", "message": "m",
            "suggestion": None, "quote": "teh", "start": 0, "end": 3, "anchor": "x", "rule": "internal"}
    assert "rule" not in wire_item(item) and wire_item(item)["quote"] == "teh"
    assert count_kinds([item, {**item, "kind": "style"}, item]) == {"spelling": 2, "style": 1}


def test_carried_items_follow_their_paragraph_and_vanish_with_it() -> None:
    from actors.analysis.items import FeedbackItem
    from actors.analysis.paragraphs import split_paragraphs
    from actors.feedback import carry_items

    old = "First paragraph here.\nSecond one, with teh typo."
    second = split_paragraphs(old)[1]
    start = old.index("teh")
    item = FeedbackItem(id="x", kind="spelling", source="llm", severity="error", message="m", quote="teh",
                        start=start, end=start + 3, paragraph_hash=second.hash)
    new = "A new opening line.\nFirst paragraph here, longer.\nSecond one, with teh typo."
    [moved] = carry_items([item], old, new)
    assert new[moved.start:moved.end] == "teh"
    assert carry_items([item], old, "First paragraph here.\nSecond one, fixed.") == []

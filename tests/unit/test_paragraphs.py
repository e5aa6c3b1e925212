import random

import pytest

from actors.analysis.paragraphs import changed_paragraphs, paragraph_hash, resplit_paragraphs, split_paragraphs


def test_each_non_blank_line_is_a_paragraph_with_offsets_into_full_text() -> None:
    text = "First para.\nSecond para.\n\n\n  Third para.  \n"
    paragraphs = split_paragraphs(text)
    assert [p.text for p in paragraphs] == ["First para.", "Second para.", "Third para."]
    assert [p.index for p in paragraphs] == [0, 1, 2]
    for p in paragraphs:
        assert text[p.start : p.end] == p.text


def test_windows_line_endings_do_not_leak_into_paragraph_text() -> None:
    text = "One.\r\nTwo.\r\n"
    paragraphs = split_paragraphs(text)
    assert [p.text for p in paragraphs] == ["One.", "Two."]
    assert text[paragraphs[1].start : paragraphs[1].end] == "Two."


def test_empty_and_whitespace_only_text_has_no_paragraphs() -> None:
    assert split_paragraphs("") == []
    assert split_paragraphs(" \n\t\n ") == []


def test_hash_depends_only_on_content_not_position() -> None:
    a = split_paragraphs("Same.\nOther.")[0]
    b = split_paragraphs("Intro.\n\nSame.")[1]
    assert a.hash == b.hash == paragraph_hash("Same.")
    assert a.start != b.start


def test_changed_paragraphs_returns_only_new_content() -> None:
    old = split_paragraphs("A one.\nB two.\nC three.")
    new = split_paragraphs("A one.\nB two edited.\nC three.")
    assert [p.text for p in changed_paragraphs(old, new)] == ["B two edited."]


def test_moving_a_paragraph_is_not_a_content_change() -> None:
    old = split_paragraphs("A one.\nB two.")
    new = split_paragraphs("B two.\nA one.")
    assert changed_paragraphs(old, new) == []


_PIECES = ("Dogs bark.", "Cats  sleep", "книга", "📚 emoji", " ", "  ", "\n", "\n\n", "\r\n", "\r", "\t", "\u2028",
           "\u00a0", "x", "A much longer sentence that goes on for a while. ", "  indented line")


@pytest.mark.parametrize("seed", range(20))
def test_resplitting_after_an_edit_gives_what_splitting_the_new_text_gives(seed: int) -> None:
    """Edits anywhere (typing, deleting, breaking and joining lines, CR LF, blank lines, spaces
    at either end of a line, non-ASCII) leave the re-split paragraphs equal to a fresh split."""
    rng = random.Random(seed)
    text = "".join(rng.choice(_PIECES) for _ in range(rng.randrange(0, 40)))
    paragraphs = split_paragraphs(text)
    for _ in range(100):
        at = rng.randrange(len(text) + 1)
        cut = rng.choice((0, 0, 1, rng.randrange(0, 30)))
        typed = "".join(rng.choice(_PIECES) for _ in range(rng.choice((0, 1, 1, 3))))
        if rng.random() < 0.3:
            at = len(text)  # typing at the end, as students mostly do
        new = text[:at] + typed + text[at + cut:]
        resplit = resplit_paragraphs(text, paragraphs, new)
        assert resplit == split_paragraphs(new)
        text, paragraphs = new, resplit


def test_a_long_unchanged_stretch_is_reused_not_split_again() -> None:
    text = "".join(f"Paragraph {n} is here.\n" for n in range(3000))
    old = split_paragraphs(text)
    new = resplit_paragraphs(text, old, text + "One more")
    assert new[:3000] == old and all(a is b for a, b in zip(new, old, strict=False))
    assert new[3000].text == "One more"


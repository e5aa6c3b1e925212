from actors.analysis.paragraphs import changed_paragraphs, paragraph_hash, split_paragraphs


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


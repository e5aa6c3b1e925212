"""Sentence memos (`SentenceMemo`): a paragraph analysed sentence by sentence, reusing the
sentences the essay's last run analysed, gives exactly what the whole paragraph gives."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from actors.analysis.cache import LRUCache
from actors.analysis.engine import AnalysisEngine
from actors.analysis.local import LocalAnalyzer, SentenceMemo, _unit_bytes

analyzer = LocalAnalyzer()

_SPELLING_DATA = Path(__file__).resolve().parents[2] / "ops" / "loadtest" / "data" / "spelling"
# What makes a rule read past its sentence, or a sentence's analysis differ from the paragraph's:
# names used elsewhere, quoted foreign stretches across a full stop, terms, masked words that
# open a sentence, abbreviations that do not end one, repeated words; and text outside ASCII.
_ODD = (
    "teh", "beleive", "recieve", "Becuase", "their is", "could of", "a apple", "an dog", "i", "he go", "it go",
    "they goes", "very good", "the the", "things", "was taken", "www.example.com", "café", "naïve", "Hygge",
    "hygge", "Straße", "книга", "печать", "东京", "我们的学校", "📚", "👩\u200d🏫", "🇺🇦", "résumé",
    "“Je pense, donc je suis”", '"Je pense. Donc je suis."', "@sam", "#tag", "bob@x.org", "Mr.", "e.g.",
    "known as", "called", "the word", "hanami", "injera, a", "Mr. Okonkwo", "i.", "U.S.", "…", "?", "!", "?!",
    ".", ".)", "'quoted'", "Teh", "Wabi-sabi", "well-knwon", "Zorblax", "zorblax", "to?", "with.", "said:",
    "3.5", "A", "An", "an hour", "a university", "Its", "its a", "your welcome", "could of course", "really happy",
    "stuff", "technology", "Technology", "technologies", "people", "People",
)


def _words() -> tuple[list[str], list[str]]:
    """Words of clean English and Russian prose: few enough that a paragraph repeats some."""
    clean = (_SPELLING_DATA / "clean_heldout.txt").read_text(encoding="utf-8").split()[:300]
    cyrillic = (_SPELLING_DATA / "clean_cyrillic.txt").read_text(encoding="utf-8").split()[:100]
    return clean, cyrillic


def _sentence(rng: random.Random, clean: list[str], cyrillic: list[str]) -> str:
    words = [rng.choice(clean if rng.random() < 0.6 else (_ODD if rng.random() < 0.6 else cyrillic))
             for _ in range(rng.randint(1, 14))]
    if rng.random() < 0.3:  # a sentence opening with a word the paragraph may use as a name
        words.insert(0, rng.choice(("Zorblax", "Hygge", "Teh", "Okonkwo")))
    return " ".join(words) + rng.choice((".", ".", "!", "?", "", "…", '."', ".)", "。"))


def _edit(paragraph: str, rng: random.Random, clean: list[str], cyrillic: list[str]) -> str:
    """Type a letter or a word at the end (mostly) or inside, end or start a sentence, retype a
    letter (the last one too), capitalise one or not, delete a stretch, or split or join sentences
    with a full stop."""
    kind = rng.random()
    if kind < 0.25 or not paragraph:
        return paragraph + " " + rng.choice((*clean, *_ODD))
    if kind < 0.3:
        return paragraph[:-1] + rng.choice(".!?…aeé")
    if kind < 0.35:
        at = rng.randrange(len(paragraph))
        return paragraph[:at] + paragraph[at].swapcase() + paragraph[at + 1:]
    if kind < 0.45:
        return paragraph + rng.choice("abcdefghijklmnopqrstuvwxyzéжк东🙂'’-.,")
    if kind < 0.55:
        return paragraph + rng.choice((".", "!", " " + _sentence(rng, clean, cyrillic)))
    at = rng.randrange(len(paragraph) + 1)
    if kind < 0.65:
        return paragraph[:at] + " " + rng.choice((*_ODD, *clean)) + paragraph[at:]
    if kind < 0.75:
        return paragraph[:at] + rng.choice("aeiouxyzéAEЖ") + paragraph[at + 1:]
    if kind < 0.85:
        return paragraph[:at] + paragraph[at + rng.randint(1, 12):]
    return paragraph[:at] + rng.choice((". ", " ", ".", "? ")) + paragraph[at:]


@pytest.mark.parametrize("seed", range(8))
def test_a_paragraph_analysed_with_the_last_runs_sentences_gives_what_the_whole_paragraph_gives(seed: int) -> None:
    """Over random typing (non-ASCII, names, terms, quotations across a full stop, masked words,
    sentences split and merged), each run with the memo of the run before gives the items of
    the paragraph analysed whole: ids, offsets, messages. A memo keyed by anything less than the
    sentence's text hands back stale items and fails here."""
    rng = random.Random(seed)
    clean, cyrillic = _words()
    dictionary = ("zorblax",) if seed % 2 else ()
    paragraph = " ".join(_sentence(rng, clean, cyrillic) for _ in range(rng.randint(1, 5)))
    memo: SentenceMemo | None = None
    reused = 0
    for step in range(60):
        text = paragraph.strip()
        if text:
            memo = SentenceMemo(dictionary, memo)
            items = analyzer.analyze_paragraph(text, dictionary=dictionary, memo=memo)
            memo.finish()
            reused += memo.reused
            assert items == analyzer.analyze_paragraph(text, dictionary=dictionary), f"seed {seed}, step {step}"
        paragraph = _edit(paragraph, rng, clean, cyrillic)
    assert reused > 100  # the memo was used, not just filled


# Paragraphs whose findings turn on more than one sentence: a name used inside another sentence,
# a word repeated across sentences, a foreign quotation across a full stop making a term, a
# term introduced across one ("known. As"), a masked word opening a sentence.
_ACROSS = (
    "Zorblax is here. I met Zorblax today. Zorblax said hi to teh class.",
    "Technology helps us. Technology hurts us too. We still love technology. Technology wins.",
    'She said "Je pensez. Donc je suiz" and then pensez came back. Pensez is a word.',
    "Who should I talk to? @sam they goes home. Sam he go there.",
    "It is known. As hygge shows, we relax. Hygge is good and hygge is cosy.",
    "Teh cat sat. Teh dog ran. Mr. Teh is a name, e.g. Teh here.",
)


@pytest.mark.parametrize("paragraph", _ACROSS)
def test_findings_that_turn_on_other_sentences_are_the_whole_paragraphs_while_it_is_typed(paragraph: str) -> None:
    """Typed a letter at a time, every version analysed with the last version's memo gives
    what the whole paragraph gives."""
    memo: SentenceMemo | None = None
    for end in range(1, len(paragraph) + 1):
        text = paragraph[:end].strip()
        memo = SentenceMemo((), memo)
        items = analyzer.analyze_paragraph(text, memo=memo)
        memo.finish()
        assert items == analyzer.analyze_paragraph(text), text


async def test_an_essays_runs_reuse_its_sentences_across_paragraph_splits_and_give_a_fresh_analysis() -> None:
    """Through the engine: typing, breaking a paragraph in two and joining two, each run reuses
    the sentences of the paragraphs the last one analysed and gives what a fresh engine gives."""
    rng = random.Random(3)
    clean, cyrillic = _words()
    engine = AnalysisEngine(LocalAnalyzer(), cache=LRUCache(1000))
    text = "\n".join(" ".join(_sentence(rng, clean, cyrillic) for _ in range(3)) for _ in range(3))
    old = ""
    for step in range(80):
        result = await engine.analyze_changed(old, text, essay_id="e1")
        fresh = await AnalysisEngine(LocalAnalyzer(), cache=LRUCache(1000)).analyze_changed("", text)
        assert result.items == fresh.items, f"step {step}"
        old = text
        kind = rng.random()
        if kind < 0.15:  # break the paragraph being typed at a sentence, or join it to the next
            at = rng.choice([i + 1 for i, ch in enumerate(text) if ch in ".!?"] or [len(text)])
            text = text[:at] + "\n" + text[at:].lstrip()
        elif kind < 0.25 and "\n" in text:
            at = rng.choice([i for i, ch in enumerate(text) if ch == "\n"])
            text = text[:at] + " " + text[at + 1:]
        else:
            paragraphs = text.split("\n")
            n = rng.randrange(len(paragraphs))
            paragraphs[n] = _edit(paragraphs[n], rng, clean, cyrillic)
            text = "\n".join(paragraphs)
    memo = engine._memos.get("e1")
    assert memo is not None and len(memo)


def test_a_memo_keeps_only_the_sentences_its_run_met_up_to_its_bound() -> None:
    """A memo holds what one run analysed: the sentences of an earlier version of the paragraph
    go with the memo before, and past `limit` bytes (`_unit_bytes`) nothing more is kept."""
    first = SentenceMemo()
    analyzer.analyze_paragraph("The cat sat. The dog ran. The bird flew.", memo=first)
    second = SentenceMemo((), first.finish())
    analyzer.analyze_paragraph("The cat sat. The dog swam.", memo=second)
    second.finish()
    assert second.reused == 1
    assert sorted(second._kept) == ["The cat sat.", "The dog swam."]
    assert second.bytes == sum(_unit_bytes(s, u) for s, u in second._kept.items())

    small = SentenceMemo(limit=second.bytes - 1)
    analyzer.analyze_paragraph("The cat sat. The dog swam.", memo=small)
    assert len(small) == 1 and small.bytes <= small.limit


def test_a_memo_made_for_another_dictionary_is_not_reused() -> None:
    """The student adds a word to their dictionary: the sentences analysed before are analysed
    again, and the word is no longer flagged."""
    before = SentenceMemo()
    assert [i.quote for i in analyzer.analyze_paragraph("I love zorblax.", memo=before)] == ["zorblax"]
    after = SentenceMemo(("Zorblax",), before.finish())
    assert analyzer.analyze_paragraph("I love zorblax.", dictionary=("Zorblax",), memo=after) == []
    assert after.reused == 0


async def test_an_essays_memo_goes_when_it_unloads_and_the_hosts_memos_are_bounded(monkeypatch) -> None:
    """`forget` drops the essay's memo; over all essays the memos weigh at most
    `MEMO_CACHE_BYTES` (the least recently analysed essay's goes first)."""
    from actors.analysis import engine as engine_module

    text = "The cat sat on the mat. The dog ran to the park."
    sizing = SentenceMemo()
    analyzer.analyze_paragraph(text + " Then", memo=sizing)  # the biggest of the three
    monkeypatch.setattr(engine_module, "MEMO_CACHE_BYTES", 2 * sizing.bytes)
    engine = AnalysisEngine(LocalAnalyzer(), cache=LRUCache(1000))
    for essay_id, typed in (("a", " Then"), ("b", " And"), ("c", " So")):
        await engine.analyze_changed("", text + typed, essay_id=essay_id)
    assert [essay_id in engine._memos for essay_id in "abc"] == [False, True, True]
    engine.forget("c")
    assert "c" not in engine._memos


@pytest.mark.parametrize("seed", range(3))
def test_the_structure_rules_read_the_same_shape_from_a_paragraphs_analysis_as_from_its_text(seed: int) -> None:
    """A paragraph's analysis leaves its shape (words, sentences, first sentence) for the
    structure rules, memo or not: the shape they would compute from the text itself."""
    from actors.analysis.paragraphs import split_paragraphs

    rng = random.Random(seed)
    clean, cyrillic = _words()
    paragraph = " ".join(_sentence(rng, clean, cyrillic) for _ in range(3))
    memo: SentenceMemo | None = None
    for _ in range(40):
        text = paragraph.strip()
        if text:
            memo = SentenceMemo((), memo)
            for use in (memo, None):
                analyzing, reading = LocalAnalyzer(), LocalAnalyzer()
                analyzing.analyze_paragraph(text, memo=use)
                [p] = split_paragraphs(text)
                assert analyzing._shapes.get(p.hash) == reading._shape(p), text
            memo.finish()
        paragraph = _edit(paragraph, rng, clean, cyrillic)

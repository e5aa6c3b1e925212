"""The text the loadtest's students type (`--text`) and the big essays it pastes (`--big-essays`).

`latin` is the ASCII essay the benchmark always typed. `cyrillic` is Russian prose: every letter
two bytes in UTF-8 and one UTF-16 unit. `mixed` interleaves Cyrillic, accented Latin, Greek, CJK,
Arabic, combining marks and astral characters (emoji and a CJK extension B ideograph: four UTF-8
bytes, two UTF-16 units, one code point), so every offset the server maps between Python's code
points, Yjs's UTF-16 units and UTF-8 bytes differs from the others within one word.

Pure (no I/O): a corpus is built once per run from fixed word lists, so a rerun types the same text.
"""

from __future__ import annotations

import random

TEXTS = ("latin", "cyrillic", "mixed")

LATIN = (
    "The invention of the printing press changed the way ideas travelled across Europe. Before it, "
    "a single book could take months to copy by hand, and only monasteries and wealthy patrons could "
    "afford a library. Afterwards, pamphlets and books spread in weeks, and ordinary people began to "
    "read arguments that had once been kept for scholars.\n\n"
    "Some historians argue that the press caused the Reformation. I think this goes too far. The "
    "press was a tool, and tools amplify the intentions of the people who use them. Luther's theses "
    "spread quickly because many readers were already unhappy with the church, not only because they "
    "were printed. In the same way, social media today does not create anger, but it does let anger "
    "travel faster than careful thought.\n\n"
    "A second effect of printing was the standardisation of language. Printers chose one spelling "
    "and one dialect, and readers across a whole region slowly adopted it. This made it easier to "
    "share science, law and literature, although it also pushed many local dialects aside.\n\n"
    "In conclusion, the printing press did not change the world by itself. It changed how quickly "
    "and how widely people could argue with each other, and that, in turn, changed the world. "
    "Therefore we should judge new technologies by the conversations they make possible.\n\n"
)

CYRILLIC_WORDS = (
    "книгопечатание изменило способ которым идеи путешествовали по Европе до него одна книга "
    "могла переписываться месяцами а библиотеку могли позволить себе только монастыри и богатые "
    "покровители после этого брошюры и книги расходились за недели и обычные люди начали читать "
    "споры которые прежде хранились для учёных некоторые историки считают что печать вызвала "
    "Реформацию я думаю это слишком сильное утверждение пресс был инструментом а инструменты "
    "усиливают намерения людей которые ими пользуются ещё одним следствием стала стандартизация "
    "языка печатники выбирали одно написание и один диалект объём знаний рос съезд учёных"
).split()

MIXED_WORDS = (
    # Cyrillic, accented Latin (precomposed and with a combining mark), Greek, CJK, Arabic, emoji
    # (some with a skin-tone modifier or a zero-width joiner) and a CJK extension B ideograph.
    "печать", "книга", "Straße", "café", "naïve", "cafe\u0301", "résumé", "Øresund", "ζωή", "λόγος",
    "印刷", "技術", "변화", "كتاب", "שלום", "📚", "🎓", "✍🏽", "👩\u200d🏫", "😀", "🇺🇦", "𠜎", "𝔘𝔫𝔦",
    "idea", "world", "press", "der", "und", "ça", "mañana", "Zürich", "Ελλάδα", "東京",
)

PARAGRAPH_WORDS = 60  # a paragraph break after about this many words


def words(kind: str) -> tuple[str, ...]:
    """The word list a corpus of `kind` is built from."""
    if kind == "latin":
        return tuple(LATIN.split())
    if kind == "cyrillic":
        return tuple(CYRILLIC_WORDS)
    if kind == "mixed":
        return MIXED_WORDS + tuple(CYRILLIC_WORDS[:20])
    raise ValueError(f"unknown text {kind!r}; choose from {', '.join(TEXTS)}")


def corpus(kind: str = "latin", *, length: int = 4000, seed: int = 13) -> str:
    """About `length` code points of prose in `kind` (whole words, a space or a paragraph break
    after each; punctuation now and then). `latin` is always the fixed essay `LATIN`."""
    if kind == "latin":
        return LATIN
    pool = words(kind)
    rng = random.Random(seed)
    out: list[str] = []
    size = 0
    since_break = 0
    while size < length:
        word = rng.choice(pool)
        since_break += 1
        if since_break >= PARAGRAPH_WORDS and rng.random() < 0.2:
            sep, since_break = ".\n\n", 0
        else:
            sep = ", " if rng.random() < 0.08 else " "
        out.append(word + sep)
        size += len(word) + len(sep)
    return "".join(out)


def fill(text: str, chars: int) -> str:
    """`text` repeated to exactly `chars` code points (a big essay's paste)."""
    if chars <= 0:
        return ""
    return (text * (chars // len(text) + 1))[:chars]


def chunks(text: str, max_bytes: int) -> list[str]:
    """`text` cut into pieces of at most `max_bytes` UTF-8 bytes each, at code point boundaries:
    a paste sent as several updates, each under the server's message size limit."""
    out: list[str] = []
    start = 0
    while start < len(text):
        # An upper bound on code points that fit, then back off until the bytes do.
        end = min(len(text), start + max_bytes)
        while len(text[start:end].encode()) > max_bytes:
            end = start + max(1, (end - start) * 3 // 4)
        out.append(text[start:end])
        start = end
    return out

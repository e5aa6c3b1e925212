"""Paragraph splitting and hashing, the unit of incremental analysis.

A paragraph is every non-blank line. Students in a browser editor press Enter once per
paragraph, so a single newline separates paragraphs; blank lines between them are ignored.
Leading and trailing whitespace on a line is not part of the paragraph, so re-indenting a line
does not change its offsets' meaning, only its position.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

_LINE = re.compile(r"[^\r\n]+")

HASH_CHARS = 16


@dataclass(frozen=True, slots=True)
class Paragraph:
    """One paragraph of an essay: its position in the full text and a content hash."""

    index: int
    start: int
    end: int
    text: str
    hash: str


def paragraph_hash(text: str) -> str:
    """Short sha256 hex of a paragraph's text; equal texts have equal hashes wherever they sit."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:HASH_CHARS]


def split_paragraphs(text: str) -> list[Paragraph]:
    """Split ``text`` into paragraphs, one per non-blank line, with offsets into ``text``."""
    return _split(text, 0, len(text), 0)


def _split(text: str, start: int, end: int, first_index: int) -> list[Paragraph]:
    """The paragraphs of the lines in ``text[start:end]`` (``start`` a line's start, ``end`` a line
    break or the end), numbered from ``first_index``."""
    paragraphs: list[Paragraph] = []
    for match in _LINE.finditer(text, start, end):
        line = match.group()
        stripped = line.strip()
        if not stripped:
            continue
        at = match.start() + (len(line) - len(line.lstrip()))
        paragraphs.append(Paragraph(index=first_index + len(paragraphs), start=at, end=at + len(stripped),
                                    text=stripped, hash=paragraph_hash(stripped)))
    return paragraphs


def resplit_paragraphs(old_text: str, old: Sequence[Paragraph], new_text: str) -> list[Paragraph]:
    """``split_paragraphs(new_text)``, given ``old``, the paragraphs of ``old_text``: only the lines
    an edit touched are split and hashed again (a student types into one paragraph of many).

    The lines before the first changed character are the same in both texts, at the same
    offsets; the lines after the last line break that follows the change are the same, shifted.
    """
    size = min(len(old_text), len(new_text))
    head = _common_prefix(old_text, new_text, size)
    tail = _common_suffix(old_text, new_text, size - head)
    line_start = max(new_text.rfind("\n", 0, head), new_text.rfind("\r", 0, head)) + 1
    # The first line break after the change, in the common tail; None: the change reaches the end.
    breaks = [at for at in (new_text.find("\n", len(new_text) - tail), new_text.find("\r", len(new_text) - tail))
              if at >= 0]
    line_end = min(breaks) if breaks else len(new_text)
    shift = len(new_text) - len(old_text)
    kept = [p for p in old if p.start < line_start]
    middle = _split(new_text, line_start, line_end, len(kept))
    moved = [Paragraph(index=len(kept) + len(middle) + n, start=p.start + shift, end=p.end + shift, text=p.text,
                       hash=p.hash)
             for n, p in enumerate(q for q in old if q.start > line_end - shift)]
    return [*kept, *middle, *moved]


def _common_prefix(a: str, b: str, limit: int) -> int:
    """The length of the longest common prefix of ``a`` and ``b``, at most ``limit``: compared a
    slice at a time (a Python loop per character took milliseconds over a long essay)."""
    at = 0
    for step in (4096, 256, 16, 1):
        while at + step <= limit and a[at : at + step] == b[at : at + step]:
            at += step
    return at


def _common_suffix(a: str, b: str, limit: int) -> int:
    """The length of the longest common suffix of ``a`` and ``b``, at most ``limit``."""
    at = 0
    for step in (4096, 256, 16, 1):
        while at + step <= limit and a[len(a) - at - step : len(a) - at] == b[len(b) - at - step : len(b) - at]:
            at += step
    return at


def changed_paragraphs(old: Sequence[Paragraph], new: Sequence[Paragraph]) -> list[Paragraph]:
    """Paragraphs of ``new`` whose content did not exist anywhere in ``old``."""
    seen = {p.hash for p in old}
    return [p for p in new if p.hash not in seen]

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
    paragraphs: list[Paragraph] = []
    for match in _LINE.finditer(text):
        line = match.group()
        stripped = line.strip()
        if not stripped:
            continue
        start = match.start() + (len(line) - len(line.lstrip()))
        end = start + len(stripped)
        paragraphs.append(
            Paragraph(index=len(paragraphs), start=start, end=end, text=stripped, hash=paragraph_hash(stripped))
        )
    return paragraphs


def changed_paragraphs(old: Sequence[Paragraph], new: Sequence[Paragraph]) -> list[Paragraph]:
    """Paragraphs of ``new`` whose content did not exist anywhere in ``old``."""
    seen = {p.hash for p in old}
    return [p for p in new if p.hash not in seen]

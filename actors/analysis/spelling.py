"""English spelling for tier 1: which words are English, what a misspelled word should be, and
which stretches of a paragraph are not English at all (a quoted proverb, a foreign sentence).

Known words are SCOWL's lower-case US and UK words (``data/english_words.txt.gz``, see
``data/README.md``); SCOWL's rarer words (``data/rare_words.txt.gz``) pass when no common word is
one edit away. Suggestions come from SymSpell's frequency dictionary (symmetric-delete
lookup up to edit distance 2, a millisecond or two where pyspellchecker's distance 2 took
0.2-6 s), ranked by distance, frequency and sound (``_rank``). Nothing here imports Ray, a
database or the network, and everything loads on first use.
"""

from __future__ import annotations

import gzip
import math
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache, wraps
from importlib import resources
from typing import TypeVar

import jellyfish
from symspellpy import SymSpell, Verbosity
from symspellpy.editdistance import DistanceAlgorithm, EditDistance

_WORDLIST = "english_words.txt.gz"
_RARE_WORDLIST = "rare_words.txt.gz"
_FREQUENCIES = "frequency_dictionary_en_82_765.txt"
# SymSpell keeps every deletion of each word's first ``prefix_length`` letters. 7 (the default)
# costs ~135 MiB and 2.4 s to build for 82k words, 6 ~70 MiB, 5 ~36 MiB and 1 s; a lookup then
# takes ~1.5 ms instead of ~0.7 ms, and only unknown words are looked up, once (cached).
_PREFIX_LENGTH = 5
MAX_DISTANCE = 2
# A rare word (``rare_words.txt.gz``) one edit from a word at least this frequent in SymSpell's
# list (about its 5,700 most frequent) is more likely a slip of that word than meant: "bien"
# (been), "mal" (male). Chosen on the tuning halves and tuning prose only: at 3M "teff" (tiff)
# stayed flagged, at 30M Holbrook's tuning recall fell to 0.965.
COMMON_COUNT = 10_000_000

# Words the 2020 SCOWL lists lack that students write all the time.
_MODERN_WORDS = """
smartphone smartphones app apps email emails emailed emailing online offline website websites
internet wifi blog blogs blogger bloggers vlog vlogs vlogger selfie selfies covid pandemic
livestream livestreams livestreamed livestreaming podcast podcasts podcasting username usernames
hashtag hashtags texting cyberbullying cybersecurity screenshot screenshots homeschooling esports
videogame videogames laptop laptops chatbot chatbots smartwatch smartwatches influencer
influencers streaming okay teenager teenagers programme programmes cryptocurrency
cryptocurrencies blockchain blockchains microplastics microfibres microfibers ransomware
""".split()


# Combining forms that make new technical words from listed ones. Everyday prefixes (re, pre,
# inter, super, un, eco) are left out: "referal" (re + feral), "intergrated", "supercede" and
# "ecomanic" are misspellings that happen to split into a prefix and a word.
_PREFIXES = (
    "astro", "bio", "cyber", "electro", "geo", "hydro", "macro", "micro", "nano", "neuro",
    "photo", "thermo",
)


@dataclass(frozen=True, slots=True)
class EnglishSpelling:
    """The process-wide English word set and the SymSpell index used for suggestions."""

    words: frozenset[str]
    names: frozenset[str]
    symspell: SymSpell
    # SCOWL size-80 lower-case words not in ``words`` (loanwords like "pierogi", "teff", "haka",
    # technical and archaic words): accepted only as ``rare_but_meant`` says.
    rare: frozenset[str] = frozenset()

    @classmethod
    def load(cls) -> EnglishSpelling:
        data = resources.files(__package__).joinpath("data", _WORDLIST)
        with gzip.open(data.open("rb"), "rt", encoding="utf-8") as f:
            scowl = [line.strip() for line in f if line.strip()]
        symspell = SymSpell(
            max_dictionary_edit_distance=MAX_DISTANCE,
            prefix_length=_PREFIX_LENGTH,
            # editdistpy's compiled Damerau distance: the pure-Python one made a lookup ~10 ms.
            distance_comparer=EditDistance(DistanceAlgorithm.DAMERAU_OSA_FAST),
        )
        frequencies = resources.files("symspellpy").joinpath(_FREQUENCIES)
        with frequencies.open("r", encoding="utf-8") as f:
            for line in f:
                term, _, count = line.partition(" ")
                symspell.create_dictionary_entry(term, int(count))
        # SymSpell's list also holds ~11k names in lower case ("hans", "eva"): those must stay
        # misspellings of lower-case words ("hans" for "has"), so they and SCOWL's capitalised
        # entries only excuse a capitalised word ("Edward", "Iceland" starting a sentence).
        words = {w for w in scowl if w.islower()} | set(_MODERN_WORDS)
        names = {w.lower() for w in scowl if not w.islower()} | (set(symspell.words) - words)
        rare_data = resources.files(__package__).joinpath("data", _RARE_WORDLIST)
        with gzip.open(rare_data.open("rb"), "rt", encoding="utf-8") as f:
            rare = frozenset(line.strip() for line in f if line.strip()) - words
        return cls(frozenset(words), frozenset(names), symspell, rare)

    def known(self, lower: str) -> bool:
        """Whether a lower-case word (straight apostrophes) is English: a listed word, its
        possessive, the plain plural of a listed word of six letters or more ("neuroscientists"),
        or a technical combining form on a listed word of five letters or more ("microplastics")."""
        if lower.endswith("'s") or lower.endswith("s'"):
            lower = lower[:-2] if lower.endswith("'s") else lower[:-1]
        if self._listed(lower):
            return True
        return any(
            lower.startswith(prefix) and len(lower) - len(prefix) >= 5 and self._listed(lower[len(prefix) :])
            for prefix in _PREFIXES
        )

    def _listed(self, lower: str) -> bool:
        if lower in self.words:
            return True
        # Plain plurals only: "familys", "tomatos" and "approachs" are misspellings, not plurals.
        return len(lower) >= 7 and lower.endswith("s") and lower[-2] not in "hosxyz" and lower[:-1] in self.words

    def rare_but_meant(self, lower: str) -> bool:
        """Whether a lower-case word outside ``words`` is a rare English word (SCOWL's size-80
        list: "pierogi", "varroa", "teff") with no common word one edit away, so most likely
        written on purpose. Kept apart from ``known``: the foreign-stretch share and the
        suggestions still count only the size-70 words (with size 80 as the known list, a quoted
        Spanish proverb passed as English and real-word slips grew)."""
        base = lower[:-2] if lower.endswith("'s") else lower
        if base not in self.rare:
            return False
        near = self.symspell.lookup(base, Verbosity.ALL, max_edit_distance=1)
        return not any(s.count >= COMMON_COUNT and s.term in self.words for s in near)

    def known_name(self, lower: str) -> bool:
        """Whether a lower-cased capitalised word is a name or place the lists know."""
        return lower in self.names or (lower.endswith("'s") and lower[:-2] in self.names)

    def suggestions(self, lower: str, limit: int = 3) -> list[tuple[str, int]]:
        """Up to ``limit`` (correction, edit distance) pairs for an unknown lower-case word, best
        first (see ``_rank``)."""
        lookup = self.symspell.lookup(lower, Verbosity.ALL, max_edit_distance=MAX_DISTANCE)
        sound = jellyfish.metaphone(lower)
        candidates = sorted(
            (s for s in lookup if self.known(s.term)),
            key=lambda s: _rank(lower, sound, s.term, s.distance, s.count),
        )
        # A dropped apostrophe ("dont", "theyre") is the likeliest slip when the word reads as a
        # contraction, even where a more frequent word is one letter away ("done").
        contractions = [c for c in _with_apostrophe(lower) if c in self.words]
        ranked = [(c, 1) for c in contractions]
        ranked += [(s.term, s.distance) for s in candidates if s.term not in contractions]
        return ranked[:limit]


def _rank(word: str, sound: str, candidate: str, distance: int, count: int) -> float:
    """Lower is better: edit distance, less half a point per tenfold frequency, a point when the
    candidate sounds the same (Metaphone) and half a point when it starts with the same letter.

    Plain (distance, frequency) order offered "we" first for a child's "wer" and "trend" second for
    "frend" (now "were"; "friend" then "front"): writers mostly keep the first letter and spell by
    sound. The weights were fitted on the tuning
    halves of the misspelling corpora: top-1 accuracy rose from 0.50 to 0.52 (Birkbeck), 0.37 to
    0.46 (Holbrook), 0.56 to 0.60 (Aspell) and 0.87 to 0.90 (Wikipedia).
    """
    score = distance - 0.5 * math.log10(max(count, 1))
    if jellyfish.metaphone(candidate) == sound:
        score -= 1.0
    if candidate[:1] == word[:1]:
        score -= 0.5
    return score


_lock = threading.Lock()
_english: EnglishSpelling | None = None


def english() -> EnglishSpelling:
    """The shared dictionary, loaded on first use (~1 s of CPU, ~50 MiB)."""
    global _english
    if _english is None:
        with _lock:
            if _english is None:
                _english = EnglishSpelling.load()
    return _english


CACHED_WORD_CHARS = 48  # the longest English words have 45 letters
_R = TypeVar("_R")


def cached_by_word(maxsize: int = 50_000) -> Callable[[Callable[[str], _R]], Callable[[str], _R]]:
    """`lru_cache(maxsize)` for a function of one word, for words of up to `CACHED_WORD_CHARS`
    characters; a longer one is computed each time and never kept. The word pattern has no
    length limit: a student typing one 100,000-letter "word" would otherwise leave a new copy of
    it in every per-word cache at each tier-1 run, in memory every essay on the host shares."""
    def decorate(function: Callable[[str], _R]) -> Callable[[str], _R]:
        cached = lru_cache(maxsize=maxsize)(function)

        @wraps(function)
        def by_word(word: str) -> _R:
            return cached(word) if len(word) <= CACHED_WORD_CHARS else function(word)

        by_word.cache_info = cached.cache_info  # type: ignore[attr-defined]
        return by_word
    return decorate


@cached_by_word()
def is_english_word(lower: str) -> bool:
    """Cached ``known``: a paragraph is re-checked after every typed word."""
    return english().known(lower)


@cached_by_word(20_000)
def is_rare_word(lower: str) -> bool:
    """Cached ``rare_but_meant``."""
    return english().rare_but_meant(lower)


@cached_by_word(20_000)
def is_known_name(lower: str) -> bool:
    """Cached ``known_name``."""
    return english().known_name(lower)


@cached_by_word(20_000)
def ranked_suggestions(lower: str) -> tuple[tuple[str, int], ...]:
    """Cached best-first (correction, edit distance) pairs for an unknown lower-case word: the
    best ten, so a one-letter neighbour ranked below sound-alikes still counts as near."""
    return tuple(english().suggestions(lower, limit=10))


def suggestions(lower: str) -> tuple[str, ...]:
    """The best three corrections for an unknown lower-case word, best first (may be empty)."""
    return tuple(word for word, _ in ranked_suggestions(lower)[:3])


def one_letter_away(lower: str) -> bool:
    """Whether an English word is one edit (or a dropped apostrophe) from ``lower``."""
    return any(distance <= 1 for _, distance in ranked_suggestions(lower))


def _with_apostrophe(lower: str) -> list[str]:
    if lower.endswith("nt") and len(lower) > 3:
        return [lower[:-1] + "'t"]
    for tail in ("re", "ve", "ll", "d", "m", "s"):
        if lower.endswith(tail) and len(lower) > len(tail) + 1:
            return [lower[: -len(tail)] + "'" + tail]
    return []


# ---------------------------------------------------------------------------------------------
# Foreign stretches

_QUOTED = re.compile(
    r"\"[^\"\n]{1,300}\"|“[^”\n]{1,300}”|«[^»\n]{1,300}»|„[^“”\n]{1,300}[“”]"
    r"|(?<!\w)'[^'\n]{1,300}'(?!\w)"  # single quotes, not an apostrophe ("students' lockers")
)
_LATIN_WORD = re.compile(r"[A-Za-z\u00C0-\u024F]+(?:['’][A-Za-z\u00C0-\u024F]+)*")
# Below these shares of English words a quotation or sentence is taken to be in another language.
QUOTE_ENGLISH_SHARE = 0.6
SENTENCE_ENGLISH_SHARE = 0.5


def foreign_spans(text: str, sentences: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Quotations and sentences of ``text`` written mostly in words that are not English.

    A student who quotes "Je pense, donc je suis" or writes a sentence in Spanish should not get
    a flag on every word. A stretch counts as foreign when fewer than 60% (quotations) or 50%
    (sentences of two or more words) of its distinct words are English; words with accented
    letters count as not English, capitalised words inside a stretch (names) are left out.
    A student's own misspellings rarely reach that share, so their sentences are still checked.
    """
    spans: list[tuple[int, int]] = []
    quoted: list[tuple[int, int]] = []
    for m in _QUOTED.finditer(text):
        quoted.append(m.span())
        if _english_share(m.group()[1:-1], sentence_start=True) < QUOTE_ENGLISH_SHARE:
            spans.append(m.span())
    for start, end in sentences:
        rest = text[start:end]
        for qs, qe in reversed(quoted):
            if start <= qs and qe <= end:
                rest = rest[: qs - start] + " " * (qe - qs) + rest[qe - start :]
        words = _counted_words(rest, sentence_start=True)
        if len(words) >= 2 and sum(map(_is_english, words)) / len(words) < SENTENCE_ENGLISH_SHARE:
            spans.append((start, end))
    return spans


def _english_share(text: str, *, sentence_start: bool) -> float:
    words = _counted_words(text, sentence_start=sentence_start)
    if not words:
        return 1.0
    return sum(map(_is_english, words)) / len(words)


def _counted_words(text: str, *, sentence_start: bool) -> list[str]:
    """Distinct words (a refrain's "ay, ay, ay" counts once), names inside the text left out."""
    out: dict[str, None] = {}
    for i, m in enumerate(_LATIN_WORD.finditer(text)):
        word = m.group()
        if word[0].isupper() and not (i == 0 and sentence_start):
            continue
        if len(word) == 1 and word.lower() not in ("a", "i"):
            continue
        out[word.lower()] = None
    return list(out)


def _is_english(word: str) -> bool:
    return word.isascii() and is_english_word(word.replace("’", "'"))

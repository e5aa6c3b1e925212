"""Tier-1 analysis: fast local rules for spelling, grammar, style, structure and readability.

Every rule is tuned for precision over recall: a student who sees a wrong correction stops
trusting all of them, so each pattern only fires where it is almost never legitimate English.
Offsets returned by ``analyze_paragraph`` are relative to the paragraph; ``analyze_structure``
works on ``Paragraph`` objects and returns full-text offsets.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import pyphen

from .cache import LRUCache
from .items import FeedbackItem, Kind, Severity, assign_ids, new_item
from .paragraphs import Paragraph, paragraph_hash, split_paragraphs
from .spelling import (
    EnglishSpelling,
    cached_by_word,
    english,
    foreign_spans,
    is_english_word,
    is_known_name,
    is_rare_word,
    one_letter_away,
    suggestions,
)

RULESET_VERSION = "local-3"  # local-3: rare SCOWL words (size 80) accepted unless one edit from a common word


def spellchecker() -> EnglishSpelling:
    """Load the process-wide English dictionary now (hosts call this off their event loop)."""
    return english()


# ---------------------------------------------------------------------------------------------
# Tokenising


class _Token(NamedTuple):
    """One word of a paragraph (a tuple: a paragraph being typed is tokenised at every run, and a
    frozen dataclass's construction was a third of that)."""

    text: str
    start: int
    end: int
    sentence_start: bool


_WORD = re.compile(r"[A-Za-z0-9\u00C0-\u024F]+(?:['’\-][A-Za-z0-9\u00C0-\u024F]+)*['’]?")
# The lookbehinds start the e-mail and domain forms only where a run of their characters starts
# (the leftmost match begins there anyway): tried at every position of a long run, each attempt
# scanned the rest of it, and one 20,000-letter "word" took 36 s.
_MASK = re.compile(
    r"(?:https?://|www\.)\S+"
    r"|(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+"
    r"|(?<![\w.-])[\w-]+(?:\.[\w-]+)*\.(?:com|org|net|edu|gov|io|co|uk|us|ca|au|info)\b(?:/\S*)?"
    r"|[@#]\w+",
    re.IGNORECASE,
)
_ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "dr", "st", "vs", "etc", "e.g", "i.e", "jr", "sr", "prof", "no", "mt", "ft", "approx", "dept",
     "fig"}
)
_END = sys.maxsize  # sorts after every (start, end) span starting at the same place
_SENTENCE_END = re.compile(r"(?:[.!?]+|…)[\"'”’)\]]*(?=\s|$)")


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Sentence (start, end) offsets, whitespace-trimmed, not splitting after common abbreviations."""
    spans: list[tuple[int, int]] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        if match.group().startswith("."):
            before = re.search(r"([\w.]+)$", text[start : match.start()])
            word = before.group(1).lower() if before else ""
            if word in _ABBREVIATIONS or "." in word or (len(word) == 1 and word.isalpha()):
                continue
        _add_span(text, start, match.end(), spans)
        start = match.end()
    _add_span(text, start, len(text), spans)
    return spans


def _add_span(text: str, start: int, end: int, spans: list[tuple[int, int]]) -> None:
    chunk = text[start:end]
    stripped = chunk.strip()
    if stripped:
        s = start + (len(chunk) - len(chunk.lstrip()))
        spans.append((s, s + len(stripped)))


# Every `_MASK` match contains one of these (lower-cased): a paragraph of ASCII text with none
# of them has nothing to mask, and the regex (the costliest of tier 1's) is not run.
_MASK_NEEDS = ("http", "www.", "@", "#",
               *(f".{tld}" for tld in ("com", "org", "net", "edu", "gov", "io", "co", "uk", "us", "ca", "au", "info")))


def _masked_ranges(text: str) -> list[tuple[int, int]]:
    if text.isascii():  # else IGNORECASE folds more than `lower()` does ("K" matches "k")
        lowered = text.lower()
        if not any(needed in lowered for needed in _MASK_NEEDS):
            return []
    return [(m.start(), m.end()) for m in _MASK.finditer(text)]


def _overlaps(ranges: Sequence[tuple[int, int]], start: int, end: int) -> bool:
    """Whether [start, end) meets one of `ranges` (sorted, disjoint: `_masked_ranges`). Bisected:
    a scan per token was quadratic in a paragraph of thousands of masked "@a@a" tokens."""
    last = bisect_left(ranges, (end,)) - 1  # the last range starting before `end`
    return last >= 0 and ranges[last][1] > start


def _tokens(text: str, sentences: Sequence[tuple[int, int]], masked: Sequence[tuple[int, int]]) -> list[_Token]:
    firsts: set[int] = set()
    for s, e in sentences:
        first = _WORD.search(text, s, e)
        if first:
            firsts.add(first.start())
    tokens = []
    for m in _WORD.finditer(text):
        start, end = m.span()
        if masked and _overlaps(masked, start, end):
            continue
        tokens.append(_Token(m.group(), start, end, start in firsts))
    return tokens


def _match_case(source: str, replacement: str) -> str:
    if source[:1].isupper() and replacement:
        return replacement[0].upper() + replacement[1:]
    return replacement


# ---------------------------------------------------------------------------------------------
# Word lists

_STOPWORDS = frozenset(
    """a about above after again against all also am an and any are aren't as at be because been
    before being below between both but by can can't cannot could couldn't did didn't do does doesn't
    doing don't down during each even ever every few for from further get gets got had hadn't has
    hasn't have haven't having he he'd he'll he's her here here's hers herself him himself his how
    how's i i'd i'll i'm i've if in into is isn't it it's its itself just let's like made make makes
    many may me might more most much must mustn't my myself no nor not now of off on once one only
    or other ought our ours ourselves out over own same say says said shan't she she'd she'll she's
    should shouldn't so some such than that that's the their theirs them themselves then there
    there's these they they'd they'll they're they've this those through to too under until up upon
    us very was wasn't we we'd we'll we're we've were weren't what what's when when's where where's
    which while who who's whom why why's will with won't would wouldn't you you'd you'll you're
    you've your yours yourself yourselves also well still yet though although because since into
    onto each every many much lot lots really thing things stuff way ways able want wants""".split()
)
_SUBJECTS = frozenset({"i", "you", "he", "she", "it", "we", "they"})
# The subjects the agreement rule looks after, as written (a capital only at the start).
_SUBJECT_FORMS = frozenset({"he", "He", "she", "She", "it", "It", "they", "They", "we", "We", "you", "You", "I"})
_AUX_BEFORE_SUBJECT = frozenset(
    """do does did will would can could should may might must shall let to not didn't doesn't don't
    won't can't couldn't wouldn't shouldn't mustn't isn't wasn't""".split()
)
_PREPOSITIONS = frozenset(
    "like with for to of about than as at from by into onto upon without within between among".split()
)
_CLAUSE_OPENERS = frozenset(
    "and but so because when if that since while although though then or once until unless".split()
)

# ---------------------------------------------------------------------------------------------
# The analyser


@dataclass(slots=True)
class _Collector:
    text: str
    phash: str
    items: list[FeedbackItem]

    def add(
        self,
        kind: Kind,
        rule: str,
        severity: Severity,
        start: int,
        end: int,
        message: str,
        suggestion: str | None = None,
    ) -> None:
        self.items.append(
            new_item(
                kind=kind,
                rule=rule,
                severity=severity,
                message=message,
                text=self.text,
                start=start,
                end=end,
                paragraph_hash=self.phash,
                suggestion=suggestion,
            )
        )


@dataclass(frozen=True, slots=True)
class _Shape:
    """What the structure rules read of one paragraph: a function of its text alone."""

    words: int
    sentences: int
    first_sentence: tuple[int, int]


class _Suspect(NamedTuple):
    """A word (or one part of a hyphenated word) the spelling rule flags unless the paragraph
    makes it a term, or, for a capitalised word opening a sentence (``unless_name``), a name."""

    word: str  # the whole token, lower-cased (terms are whole tokens)
    part: str
    start: int
    unless_name: bool


@dataclass(frozen=True, slots=True)
class _Unit:
    """What the rules found in a stretch of a paragraph read alone (one sentence, or the whole
    paragraph), offsets relative to it: the items of the rules that read one sentence at a time,
    and what the three that read the whole paragraph need of it (`LocalAnalyzer._combine`)."""

    items: tuple[FeedbackItem, ...]  # one per span (`_dedupe`); no id or paragraph hash yet
    names: frozenset[str]  # capitalised words inside a sentence
    suspects: tuple[_Suspect, ...]
    counted: tuple[tuple[str, str, int, int], ...]  # the repetition rule's words: (word, key, start, end)
    tokens: tuple[_Token, ...] | None  # None in a memo (`SentenceMemo.keep`)
    words: int  # for the structure rules (`_Shape`): masked words count


# The most one essay's memo keeps (`SentenceMemo`), in bytes as `_unit_bytes` estimates them: a
# paragraph being typed takes ~10-40 KB; a pasted essay's first run analyses every paragraph.
MEMO_BYTES = 1 << 20


def _unit_bytes(sentence: str, unit: _Unit) -> int:
    """About what a memo holds for one sentence, in bytes (against tracemalloc: within ~25% over
    the loadtest's texts, ~15-40 bytes a character, and over texts that are all findings, "i i i
    ...", ~150 bytes a character; a sentence's text takes up to 4 bytes a character)."""
    return (300 + 4 * len(sentence) + 200 * len(unit.items)
            + 100 * (len(unit.counted) + len(unit.suspects) + len(unit.names)))


class SentenceMemo:
    """What the rules found in each sentence of the paragraphs one essay's last run analysed,
    for its next run (`LocalAnalyzer.analyze_paragraph`).

    Made for each run from the essay's previous memo: a sentence the run meets is taken from
    it (keyed by the sentence's text, so never stale) and kept in the new one; a sentence the
    run does not meet goes with the old memo. So a memo holds the sentences of the paragraphs
    one run analysed (one paragraph, while a student types), at most `limit` bytes of them
    (`_unit_bytes`), for one dictionary (a memo made for another starts empty).
    """

    def __init__(self, dictionary: Collection[str] = frozenset(), previous: SentenceMemo | None = None,
                 limit: int = MEMO_BYTES) -> None:
        self.allowed = {w.lower() for w in dictionary}
        self.limit = limit
        self._previous: dict[str, _Unit] = (
            previous._kept if previous is not None and previous.allowed == self.allowed else {})
        self._kept: dict[str, _Unit] = {}
        self.bytes = 0  # what the sentences kept take, about (`_unit_bytes`)
        self.reused = 0  # sentences this run did not analyse again

    def get(self, sentence: str) -> _Unit | None:
        unit = self._kept.get(sentence) or self._previous.get(sentence)
        if unit is not None:
            self.reused += 1
        return unit

    def keep(self, sentence: str, unit: _Unit) -> None:
        if sentence in self._kept:
            return
        size = _unit_bytes(sentence, unit)
        if self.bytes + size <= self.limit:
            # Without its tokens (~20 bytes a character): only a paragraph with a word the
            # spelling rule suspects needs them, and it tokenises the sentence again.
            self._kept[sentence] = unit if unit.tokens is None else dataclasses.replace(unit, tokens=None)
            self.bytes += size

    def __len__(self) -> int:
        return len(self._kept)

    def finish(self) -> SentenceMemo:
        """The memo once its run is over: what the last one kept is released."""
        self._previous = {}
        return self


class LocalAnalyzer:
    """Rule-based analyser: spelling (SCOWL + SymSpell, see spelling.py), grammar patterns, style and structure.

    Stateless apart from the shared dictionary and caches of pure functions of a paragraph's
    text, so one instance can serve every essay.
    """

    version = RULESET_VERSION

    def __init__(self) -> None:
        # Paragraph hash -> its `_Shape`, and (cue, hash) -> whether the cue is in it: the
        # structure rules run over every paragraph at each run, and re-scanning the unchanged
        # ones cost more than the rules on the paragraph being typed (2.5 ms of ~5 at 600 words).
        self._shapes: LRUCache[str, _Shape] = LRUCache(20_000)
        self._cues: LRUCache[tuple[str, str], bool] = LRUCache(20_000)

    def analyze_paragraph(self, text: str, *, dictionary: Collection[str] = frozenset(),
                          memo: SentenceMemo | None = None) -> list[FeedbackItem]:
        """Items for one paragraph with paragraph-relative offsets and deterministic ids.

        ``dictionary`` holds extra words the student or class allows (case-insensitive). With a
        ``memo`` (one essay's, kept by the engine from run to run) the rules run sentence by
        sentence and a sentence the memo holds is not analysed again: a student types into the
        last sentence of a paragraph, and re-running every rule over the whole paragraph at each
        run was most of tier 1's rules. The items are the same either way: every rule but three
        reads one sentence at a time, and those three (names and terms for the spelling rule,
        repetition) read what each sentence's analysis kept (`_combine`).
        """
        if not text.strip():
            return []
        allowed = {w.lower() for w in dictionary}
        sentences = sentence_spans(text)
        units: list[tuple[int, _Unit]] = []
        if memo is None or memo.allowed != allowed:
            units.append((0, self._unit(text, sentences, allowed)))
        else:
            for s, e in sentences:
                sentence = text[s:e]
                unit = memo.get(sentence)
                if unit is None:
                    unit = self._unit(sentence, ((0, e - s),), allowed)
                memo.keep(sentence, unit)
                units.append((s, unit))
        phash = paragraph_hash(text)
        # What the structure rules read of it (`_shape`), from what is at hand: this paragraph
        # is one the student is typing into, and the engine asks for its shape next.
        self._shapes.put(phash, _Shape(sum(unit.words for _, unit in units), len(sentences), sentences[0]))
        return self._combine(text, phash, sentences, units, allowed)

    def _unit(self, text: str, sentences: Sequence[tuple[int, int]], allowed: set[str]) -> _Unit:
        """The rules over ``text`` (a whole paragraph, or one of its sentences), offsets relative to it."""
        masked = _masked_ranges(text)
        tokens = _tokens(text, sentences, masked)
        out = _Collector(text, "", [])
        self._articles(out, tokens)
        self._patterns(out, masked)
        self._subject_verb(out, tokens, sentences)
        self._sentences(out, sentences)
        self._capitals(out, sentences, masked)
        self._passive(out, masked)
        self._fillers(out, masked)
        return _Unit(
            items=tuple(_dedupe(out.items)),
            names=frozenset(t.text for t in tokens if t.text[:1].isupper() and not t.sentence_start),
            suspects=_suspects(tokens, allowed),
            counted=_counted(tokens),
            tokens=tuple(tokens),
            words=len(_WORD.findall(text)) if masked else len(tokens),
        )

    def _combine(self, text: str, phash: str, sentences: Sequence[tuple[int, int]],
                 units: Sequence[tuple[int, _Unit]], allowed: set[str]) -> list[FeedbackItem]:
        """A paragraph's items from its units' (``(offset, unit)``, in order): the rules that read
        the whole paragraph run here, on what each unit kept."""
        out = _Collector(text, phash, [])
        self._spelling(out, sentences, units, allowed)
        for offset, unit in units:
            out.items.extend(
                FeedbackItem(id="", kind=i.kind, source=i.source, severity=i.severity, message=i.message,
                             quote=i.quote, start=i.start + offset, end=i.end + offset, suggestion=i.suggestion,
                             rule=i.rule, paragraph_hash=phash)
                for i in unit.items)
        self._repetition(out, units)
        return assign_ids(_dedupe(out.items))

    # -- spelling --------------------------------------------------------------------------

    def _spelling(self, out: _Collector, sentences: Sequence[tuple[int, int]], units: Sequence[tuple[int, _Unit]],
                  allowed: set[str]) -> None:
        """Flags the units' suspects that are neither names nor terms in this paragraph. A
        capitalised word opening a sentence is a name when the paragraph uses it capitalised
        inside a sentence too."""
        names: frozenset[str] | None = None
        suspects: list[tuple[_Suspect, int]] = []
        for offset, unit in units:
            for suspect in unit.suspects:
                if suspect.unless_name:
                    if names is None:
                        names = frozenset().union(*(u.names for _, u in units))
                    if suspect.part in names:
                        continue
                suspects.append((suspect, offset))
        if not suspects:
            return  # the usual case: no need to look for foreign stretches or terms
        tokens = [t for offset, unit in units for t in _unit_tokens(out.text, sentences, offset, unit)]
        foreign = foreign_spans(out.text, sentences)
        # A word the writer quoted as foreign or introduced as a term ("the word "hygge"") is a
        # term for the whole paragraph: "a more hygge life" later on is not a slip.
        suspect_words = {suspect.word for suspect, _ in suspects}
        terms = {
            t.text.lower() for i, t in enumerate(tokens)
            if t.text.lower() in suspect_words
            and (_overlaps(foreign, t.start, t.end) or _is_deliberate_term(out.text, tokens, i, allowed))
        }
        for suspect, offset in suspects:
            if suspect.word not in terms:
                self._flag_misspelling(out, suspect.part, offset + suspect.start)

    def _flag_misspelling(self, out: _Collector, word: str, start: int) -> None:
        fixes = suggestions(word.lower().replace("’", "'"))
        if word[0].isupper() and not fixes:
            return  # an unknown capitalised word with nothing close is most likely a name
        if fixes:
            best = _match_case(word, fixes[0])
            others = ", ".join(f'"{_match_case(word, f)}"' for f in fixes[1:])
            out.add(
                "spelling", "spelling", "error", start, start + len(word),
                f'"{word}" looks misspelled. Did you mean "{best}"?' + (f" Other options: {others}." if others else ""),
                best,
            )
        else:
            out.add(
                "spelling", "spelling", "warning", start, start + len(word),
                f'We could not find "{word}" in the dictionary. Check the spelling.',
            )

    # -- grammar ---------------------------------------------------------------------------

    def _articles(self, out: _Collector, tokens: Sequence[_Token]) -> None:
        for tok, nxt in zip(tokens, tokens[1:]):
            article = tok.text
            if article not in ("a", "an") and not (article in ("A", "An") and tok.sentence_start):
                continue
            if out.text[tok.end : nxt.start].strip():
                continue
            word = nxt.text
            if len(word) < 2 or word.isupper() or any(c.isdigit() for c in word):
                continue
            expected = _expected_article(word.lower())
            if expected is None or expected == article.lower():
                continue
            if expected == "a":
                message = (f'Use "a" before "{word}" because it starts with a consonant sound '
                           '(like "a dog", "a university").')
            else:
                message = f'Use "an" before "{word}" because it starts with a vowel sound (like "an apple", "an hour").'
            out.add("grammar", "article", "error", tok.start, tok.end, message, _match_case(article, expected))

    def _patterns(self, out: _Collector, masked: Sequence[tuple[int, int]]) -> None:
        lowered = out.text.lower() if out.text.isascii() else None
        for rule in _PATTERN_RULES:
            if not rule.may_match(lowered):
                continue  # the usual case: each regex scanned the whole paragraph, at every re-run
            for m in rule.pattern.finditer(out.text):
                start, end = m.span("w")
                if _overlaps(masked, start, end) or not rule.accept(m):
                    continue
                out.add(rule.kind, rule.name, rule.severity, start, end, rule.message, rule.suggest(m))

    def _subject_verb(self, out: _Collector, tokens: Sequence[_Token], sentences: Sequence[tuple[int, int]]) -> None:
        for i, (subj, verb) in enumerate(zip(tokens, tokens[1:])):
            if subj.text not in _SUBJECT_FORMS or out.text[subj.end : verb.start] != " ":
                continue
            s = subj.text.lower()
            v = verb.text.lower().replace("’", "'")
            # The word before the subject, in its sentence only: after a masked first word
            # ("@sam they ...") the token before is the last sentence's.
            before = tokens[i - 1] if i > 0 and not subj.sentence_start else None
            if before is not None and before.start < sentences[bisect_right(sentences, (subj.start, _END)) - 1][0]:
                before = None
            prev = before.text.lower() if before is not None else ""
            prev_gap = out.text[before.end : subj.start] if before is not None else ""
            fix: str | None = None
            if s in ("he", "she", "it") and subj.text in (s, s.capitalize()):
                if prev in _AUX_BEFORE_SUBJECT:
                    continue
                if s == "it" and not (subj.sentence_start or prev in _CLAUSE_OPENERS or "," in prev_gap):
                    continue
                fix = _THIRD_PERSON.get(v)
            elif subj.text in ("they", "They", "we", "We", "you", "You", "I"):
                if prev in _PREPOSITIONS or prev in _AUX_BEFORE_SUBJECT:
                    continue
                fix = _I_FORMS.get(v) if s == "i" else _PLURAL_FORMS.get(v)
            if fix is None:
                continue
            fix = _match_case(verb.text, fix)
            out.add(
                "grammar", "agreement", "error", verb.start, verb.end,
                f'After "{subj.text}", use "{fix}" instead of "{verb.text}" so the verb matches who is doing it.',
                fix,
            )

    def _sentences(self, out: _Collector, sentences: Sequence[tuple[int, int]]) -> None:
        for start, end in sentences:
            sentence = out.text[start:end]
            words = _WORD.findall(sentence)
            lowered = [w.lower() for w in words]
            if sentence.endswith(".") and not sentence.endswith(".."):
                if _is_fragment(lowered, sentence):
                    out.add(
                        "grammar", "fragment", "warning", start, end,
                        "This looks like an incomplete sentence. Join it to the sentence before or after it, "
                        "or add the missing part.",
                    )
            splices = len(_SPLICE.findall(sentence))
            if len(words) >= 25 and splices >= 2:
                out.add(
                    "grammar", "run_on", "warning", start, end,
                    "This is a run-on sentence: several complete sentences are joined with only commas. "
                    "Split it up with full stops, or join the parts with words like \"and\", \"but\" or \"because\".",
                )
            elif len(words) > 35:
                out.add(
                    "style", "long_sentence", "info", start, end,
                    f"This sentence is {len(words)} words long. Try splitting it into two shorter sentences.",
                )

    def _capitals(self, out: _Collector, sentences: Sequence[tuple[int, int]],
                  masked: Sequence[tuple[int, int]]) -> None:
        for start, end in sentences:
            first = _WORD.search(out.text, start, end)
            if first is None or first.start() != start or _overlaps(masked, first.start(), first.end()):
                continue
            word = first.group()
            if not word[0].islower() or any(c.isupper() for c in word[1:]) or re.fullmatch(r"i(['’]\w+)?", word):
                continue
            out.add(
                "grammar", "capital_start", "error", first.start(), first.start() + 1,
                "Start every sentence with a capital letter.", word[0].upper(),
            )
        for m in _LOWER_I.finditer(out.text):
            if _overlaps(masked, m.start(), m.end()):
                continue
            out.add("grammar", "capital_i", "error", m.start(), m.end(), 'Always write "I" as a capital letter.', "I")

    # -- style -----------------------------------------------------------------------------

    def _passive(self, out: _Collector, masked: Sequence[tuple[int, int]]) -> None:
        for m in _PASSIVE.finditer(out.text):
            participle = m.group("p").lower()
            if participle in _NOT_PASSIVE or (participle.endswith("ed") and len(participle) < 5):
                continue
            if _overlaps(masked, m.start(), m.end()):
                continue
            out.add(
                "style", "passive", "info", m.start(), m.end(),
                "This may be passive voice. Sentences are often clearer when they say who does the action, "
                'e.g. "The dog ate the cake" instead of "The cake was eaten".',
            )

    def _fillers(self, out: _Collector, masked: Sequence[tuple[int, int]]) -> None:
        for m in _FILLER.finditer(out.text):
            if _overlaps(masked, m.start(), m.end()):
                continue
            word = m.group("f")
            lower = word.lower()
            nxt = m.group("n")
            if lower in ("very", "really") and nxt and nxt.lower() in _STRONGER:
                better = _STRONGER[nxt.lower()]
                out.add(
                    "style", "weak_word", "info", m.start(), m.end("n"),
                    f'Try one strong word instead of "{word} {nxt}", like "{better}".',
                    _match_case(word, better),
                )
            elif lower in ("things", "stuff"):
                out.add(
                    "style", "vague_word", "info", m.start("f"), m.end("f"),
                    f'"{word}" is vague. Name exactly what you mean.',
                )
            else:
                out.add(
                    "style", "weak_word", "info", m.start("f"), m.end("f"),
                    f'"{word}" usually adds nothing. Try the sentence without it.',
                )

    def _repetition(self, out: _Collector, units: Sequence[tuple[int, _Unit]]) -> None:
        counts: Counter[str] = Counter()
        for offset, unit in units:
            for word, key, start, end in unit.counted:
                counts[key] += 1
                if counts[key] == 3:
                    out.add(
                        "style", "repetition", "info", start + offset, end + offset,
                        f'You have used "{word}" three times in this paragraph. Try a different word or rephrase.',
                    )

    # -- whole essay -----------------------------------------------------------------------

    def analyze_structure(self, paragraphs: Sequence[Paragraph]) -> list[FeedbackItem]:
        """Essay-level items (structure kind) with full-text offsets taken from the paragraphs.

        Rules only speak up once the essay is long enough for them to be fair, so a student in the
        middle of a first draft is not told off for a missing conclusion.
        """
        if not paragraphs:
            return []
        items: list[FeedbackItem] = []
        shapes = [self._shape(p) for p in paragraphs]
        total_words = sum(shape.words for shape in shapes)

        def add(p: Paragraph, shape: _Shape, rule: str, severity: Severity, message: str) -> None:
            s, e = shape.first_sentence
            item = new_item(
                kind="structure", rule=rule, severity=severity, message=message,
                text=p.text, start=s, end=e, paragraph_hash=p.hash,
            )
            items.append(item.replace(start=s + p.start, end=e + p.start))

        first, last = paragraphs[0], paragraphs[-1]
        if total_words >= 150 and len(paragraphs) < 3:
            add(first, shapes[0], "few_paragraphs", "warning",
                "Your essay has only "
                f"{len(paragraphs)} paragraph{'s' if len(paragraphs) != 1 else ''}. Most essays need an introduction, "
                "body paragraphs and a conclusion: press Enter to start a new paragraph for each new idea.")
        if len(paragraphs) >= 3 and total_words >= 150:
            if not self._cue("thesis", first):
                add(first, shapes[0], "no_thesis", "info",
                    "Your introduction should say clearly what your essay will argue or explain (your thesis). "
                    'Try a sentence like "I believe ... because ...".')
            if total_words >= 200 and not self._cue("conclusion", last):
                add(last, shapes[-1], "no_conclusion", "info",
                    "End with a conclusion that sums up your main points. Words like \"In conclusion\" or "
                    '"Overall" help the reader see it.')
            for p, shape in zip(paragraphs[1:-1], shapes[1:-1], strict=True):
                if shape.sentences >= 3 and _EVIDENCE_OPENER.match(p.text[slice(*shape.first_sentence)]):
                    add(p, shape, "topic_sentence", "info",
                        "Start this paragraph with a topic sentence that says its main idea, then give your "
                        "example or evidence.")
            if len(paragraphs) >= 4 and not any(_TRANSITION.match(p.text) for p in paragraphs[1:]):
                add(paragraphs[1], shapes[1], "transitions", "info",
                    'None of your paragraphs start with a linking word. Words like "First", "Another reason", '
                    '"However" or "In conclusion" help the reader follow your ideas.')
        for p, shape in zip(paragraphs, shapes, strict=True):
            if shape.words > 250 or shape.sentences > 15:
                add(p, shape, "long_paragraph", "info",
                    f"This paragraph is very long ({shape.words} words). Split it where a new idea starts.")
        return assign_ids(items)

    def _shape(self, p: Paragraph) -> _Shape:
        shape = self._shapes.get(p.hash)
        if shape is None:
            spans = sentence_spans(p.text)
            shape = _Shape(len(_WORD.findall(p.text)), len(spans), spans[0] if spans else (0, len(p.text)))
            self._shapes.put(p.hash, shape)
        return shape

    def _cue(self, cue: str, p: Paragraph) -> bool:
        """Whether `_CUES[cue]` occurs in the paragraph (asked of the first and last only: searched
        when one becomes first or last, not for every paragraph of a pasted essay)."""
        key = (cue, p.hash)
        found = self._cues.get(key)
        if found is None:
            phrases = _CUE_PHRASES.get(cue)
            if phrases and p.text.isascii() and not any(phrase in p.text.lower() for phrase in phrases):
                found = False  # the usual case for a paragraph still being written: no regex over it
            else:
                found = _CUES[cue].search(p.text) is not None
            self._cues.put(key, found)
        return found

    def readability(self, text: str) -> dict[str, float]:
        """Readability for the whole text: Flesch reading ease, Flesch-Kincaid grade and the count
        of words of three or more syllables (syllables from pyphen); zeros for empty text."""
        words = len(_WORD.findall(text))
        sentences = sum(len(sentence_spans(p.text)) for p in _paragraph_texts(text))
        if words == 0:
            return {"words": 0, "sentences": 0, "paragraphs": 0, "avg_sentence_words": 0.0,
                    "flesch_reading_ease": 0.0, "flesch_kincaid_grade": 0.0, "complex_words": 0}
        per_sentence = words / max(sentences, 1)
        syllables = [_syllables(w.lower()) for w in _WORD.findall(text)]
        per_word = sum(syllables) / words
        return {
            "words": words,
            "sentences": sentences,
            "paragraphs": len(_paragraph_texts(text)),
            "avg_sentence_words": round(per_sentence, 1),
            "flesch_reading_ease": round(206.835 - 1.015 * per_sentence - 84.6 * per_word, 1),
            "flesch_kincaid_grade": round(0.39 * per_sentence + 11.8 * per_word - 15.59, 1),
            "complex_words": sum(1 for n in syllables if n >= 3),
        }


_hyphenator: pyphen.Pyphen | None = None


@cached_by_word()
def _syllables(word: str) -> int:
    # pyphen's bundled dictionary, not textstat's syllable counter: for English, textstat 0.7
    # downloads NLTK's cmudict at first use, which fails offline and must not happen in a replica.
    global _hyphenator
    if _hyphenator is None:
        _hyphenator = pyphen.Pyphen(lang="en_US")
    return len(_hyphenator.positions(word)) + 1


def _paragraph_texts(text: str) -> list[Paragraph]:
    return split_paragraphs(text)


_KIND_PRIORITY = {"spelling": 0, "grammar": 1, "structure": 2, "style": 3}


def _dedupe(items: list[FeedbackItem]) -> list[FeedbackItem]:
    """Keep one item per span, preferring spelling over grammar over style."""
    best: dict[tuple[int, int], FeedbackItem] = {}
    for item in items:
        key = (item.start, item.end)
        current = best.get(key)
        if current is None or _KIND_PRIORITY.get(item.kind, 9) < _KIND_PRIORITY.get(current.kind, 9):
            best[key] = item
    return list(best.values())


# ---------------------------------------------------------------------------------------------
# Spelling helpers


_TERM_MARKERS = frozenset({"called", "named", "word", "term", "dubbed", "termed"})
_DEFINITION_AFTER = re.compile(r",\s+(?:a|an|meaning)\s")


def _is_deliberate_term(text: str, tokens: Sequence[_Token], i: int, allowed: set[str]) -> bool:
    """Whether token ``i`` is a borrowed term the writer introduces on purpose: one word right after
    "called", "the word" or "known as" that ends the phrase ("a custom called hanami."), or one
    defined straight after it ("injera, a soft flatbread"). Only words
    with no English word one letter away qualify, so "called pregant" or "recieve, a" are still
    checked."""
    tok = tokens[i]
    lower = tok.text.lower().replace("’", "'")
    if tok.text[:1].isupper() or _is_known(lower, allowed) or one_letter_away(lower):
        return False
    if _DEFINITION_AFTER.match(text, tok.end):
        return True
    if i == 0 or text[tokens[i - 1].end : tok.start] != " ":
        return False
    if i + 1 < len(tokens) and not text[tok.end : tokens[i + 1].start].strip():
        return False  # the phrase goes on ("called pregant powerhouse"): no term here
    before = tokens[i - 1].text.lower()
    return before in _TERM_MARKERS or (before == "as" and i >= 2 and tokens[i - 2].text.lower() == "known")


def _suspects(tokens: Sequence[_Token], allowed: set[str]) -> tuple[_Suspect, ...]:
    """The words of ``tokens`` that are not English, nor a name by their place (capitalised
    inside a sentence), nor allowed (names used elsewhere in the paragraph: `_Suspect`)."""
    suspects: list[_Suspect] = []
    for tok in tokens:
        parts = _spelled_parts(tok.text)
        if not parts:
            continue
        if len(parts) > 1 and not any(_is_known(p.lower(), allowed) for p, _ in parts if p):
            continue  # "wabi-sabi": a borrowed compound; a slip leaves one part a word ("well-knwon")
        for part, offset in parts:
            checked = _unlisted(part)
            if checked is None:
                continue
            capitalised, lower, unlisted = checked
            start = tok.start + offset
            if capitalised and not (tok.sentence_start and start == tok.start):
                continue  # a name: capitalised inside a sentence
            if allowed and (lower in allowed or (lower.endswith("'s") and lower[:-2] in allowed)):
                continue
            if unlisted:
                suspects.append(_Suspect(tok.text.lower(), part, start, capitalised))
    return tuple(suspects)


def _counted(tokens: Sequence[_Token]) -> tuple[tuple[str, str, int, int], ...]:
    """The repetition rule's words of ``tokens``: (word, key, start, end) of each it counts."""
    out = []
    for tok in tokens:
        counted = _counted_word(tok.text)
        if counted is None or (tok.text[0].isupper() and not tok.sentence_start):
            continue
        word, key = counted
        out.append((word, key, tok.start, tok.start + len(tok.text.rstrip("'’"))))
    return tuple(out)


def _unit_tokens(text: str, sentences: Sequence[tuple[int, int]], offset: int, unit: _Unit) -> list[_Token]:
    """A unit's tokens at paragraph offsets (``offset``: where it starts in ``text``), tokenised
    again for a memoised sentence (which keeps none)."""
    if unit.tokens is not None:
        tokens: Sequence[_Token] = unit.tokens
    else:
        end = sentences[bisect_left(sentences, (offset,))][1]
        sentence = text[offset:end]
        tokens = _tokens(sentence, ((0, len(sentence)),), _masked_ranges(sentence))
    if not offset:
        return list(tokens)
    return [_Token(t.text, t.start + offset, t.end + offset, t.sentence_start) for t in tokens]


# The per-word halves of the rules, cached by the word: a paragraph being typed is re-checked
# at every run, nearly all of its words as they were (short words only: `cached_by_word`).

@cached_by_word()
def _spelled_parts(token: str) -> tuple[tuple[str, int], ...]:
    """The parts of a token the spelling rule checks, with their offsets in it (the hyphenated
    parts of the token without trailing apostrophes); none for a token with digits or letters
    outside ASCII."""
    word = token.rstrip("'’")
    if any(ch.isdigit() for ch in word) or not word.isascii():
        return ()
    parts = []
    offset = 0
    for part in word.split("-"):
        parts.append((part, offset))
        offset += len(part) + 1
    return tuple(parts)


@cached_by_word()
def _unlisted(word: str) -> tuple[bool, str, bool] | None:
    """None for a word the spelling rule leaves alone whatever surrounds it (one letter, all
    capitals, a capital inside); else (capitalised, its lower-case form, whether neither the word
    lists, nor the names for a capitalised word, nor the rare words hold it)."""
    if len(word) < 2 or word.isupper() or any(c.isupper() for c in word[1:]):
        return None
    capitalised = word[0].isupper()
    lower = word.lower().replace("’", "'")
    return capitalised, lower, not (is_english_word(lower) or (capitalised and is_known_name(lower))
                                    or is_rare_word(lower))


@cached_by_word()
def _counted_word(token: str) -> tuple[str, str] | None:
    """(the word, its repetition key: the singular) of a token the repetition rule counts (four
    letters or more, no digits, not a stop word); None for the others."""
    word = token.rstrip("'’").lower().replace("’", "'")
    if word.endswith("'s"):
        word = word[:-2]
    if len(word) < 4 or word in _STOPWORDS or any(c.isdigit() for c in word):
        return None
    return word, word[:-1] if word.endswith("s") and not word.endswith("ss") and len(word) > 4 else word


def _is_known(lower: str, allowed: set[str]) -> bool:
    if lower in allowed or (lower.endswith("'s") and lower[:-2] in allowed):
        return True
    return is_english_word(lower)


# ---------------------------------------------------------------------------------------------
# Grammar tables

_AN_WORDS = ("hour", "honest", "honor", "honour", "heir")
_A_WORDS = (
    "univers", "unique", "unicorn", "uniform", "union", "unit", "use", "usu", "usa", "uten", "utili",
    "utop", "eu", "ewe", "ukul", "uran", "one-", "once",
)


def _expected_article(word: str) -> str | None:
    if word.startswith(_AN_WORDS):
        return "an"
    if word.startswith(_A_WORDS) or word in ("one", "ones"):
        return "a"
    if word[0] in "aeiou":
        return "an"
    if word[0] in "hx":
        return None  # "an historic", "an x-ray": accepted or sounded as a vowel; stay quiet
    return "a"


_THIRD_PERSON = {
    "go": "goes", "do": "does", "have": "has", "make": "makes", "want": "wants", "like": "likes",
    "need": "needs", "think": "thinks", "say": "says", "know": "knows", "come": "comes", "get": "gets",
    "take": "takes", "see": "sees", "play": "plays", "try": "tries", "eat": "eats", "write": "writes",
    "love": "loves", "feel": "feels", "seem": "seems", "look": "looks", "give": "gives", "live": "lives",
    "work": "works", "help": "helps", "are": "is", "don't": "doesn't", "dont": "doesn't",
}
_PLURAL_FORMS = {
    "goes": "go", "does": "do", "has": "have", "is": "are", "was": "were", "makes": "make",
    "wants": "want", "likes": "like", "needs": "need", "thinks": "think", "says": "say", "knows": "know",
    "comes": "come", "gets": "get", "takes": "take", "sees": "see", "plays": "play", "tries": "try",
    "loves": "love", "feels": "feel", "seems": "seem", "looks": "look", "gives": "give", "lives": "live",
    "works": "work", "helps": "help", "doesn't": "don't",
}
_I_FORMS = {
    "is": "am", "are": "am", "has": "have", "goes": "go", "does": "do", "makes": "make", "wants": "want",
    "likes": "like", "needs": "need", "thinks": "think", "says": "say", "knows": "know", "doesn't": "don't",
}


@dataclass(frozen=True, slots=True)
class _PatternRule:
    name: str
    kind: Kind
    severity: Severity
    pattern: re.Pattern[str]
    message: str
    suggest: Callable[[re.Match[str]], str]
    accept: Callable[[re.Match[str]], bool] = lambda m: True
    # Lower-case strings every match contains (lower-cased): an ASCII text lacking one of them
    # cannot match, and the pattern is not run (`may_match`).
    needs: tuple[str, ...] = ()
    # ... and one of these at least (an alternation in the pattern).
    needs_one: tuple[str, ...] = ()

    def may_match(self, lowered: str | None) -> bool:
        """False when the pattern cannot match a text whose `.lower()` is `lowered` (None: the
        text is not ASCII, where IGNORECASE also folds "ſ", "ı", "K" and the like: always True)."""
        return lowered is None or (all(needed in lowered for needed in self.needs)
                                   and (not self.needs_one or any(one in lowered for one in self.needs_one)))


def _fixed(word: str) -> Callable[[re.Match[str]], str]:
    return lambda m: _match_case(m.group("w"), word)


_REPEAT_OK = frozenset({"had", "that", "is", "bye", "ha", "no", "so", "very", "really", "knock", "chop", "tut",
                        "never"})

_PATTERN_RULES: tuple[_PatternRule, ...] = (
    _PatternRule(
        "repeated_word", "grammar", "error",
        re.compile(r"\b(?P<w>(?P<a>[A-Za-z]+)\s+(?P=a))\b", re.IGNORECASE),
        "You wrote the same word twice in a row.",
        lambda m: m.group("a"),
        lambda m: m.group("a").lower() not in _REPEAT_OK,
    ),
    _PatternRule(
        "their_there", "grammar", "error",
        re.compile(r"\b(?P<w>their)\s+(?:is|are|was|were)\b", re.IGNORECASE),
        'Use "there" here, as in "there is" or "there are". "Their" means something belongs to them.',
        _fixed("there"), needs=("their",),
    ),
    _PatternRule(
        "their_theyre", "grammar", "error",
        re.compile(r"\b(?P<w>their|there)\s+(?:going|trying)\s+to\b", re.IGNORECASE),
        '"They\'re" is short for "they are", which is what this sentence needs.',
        _fixed("they're"),
        lambda m: m.group("w").lower() == "their",
        needs=("the", "to"), needs_one=("going", "trying"),
    ),
    _PatternRule(
        "there_their", "grammar", "error",
        re.compile(r"\b(?P<w>there|they['’]re)\s+own\b", re.IGNORECASE),
        'Use "their" to show something belongs to them, as in "their own".',
        _fixed("their"), needs=("the", "own"),
    ),
    _PatternRule(
        "its_its", "grammar", "error",
        re.compile(r"\b(?P<w>its)\s+(?:a|an|the|not|been|going|so|too|really|because)\b", re.IGNORECASE),
        '"It\'s" is short for "it is" or "it has". "Its" (no apostrophe) means belonging to it.',
        _fixed("it's"), needs=("its",),
    ),
    _PatternRule(
        "its_own", "grammar", "error",
        re.compile(r"\b(?P<w>it['’]s)\s+own\b", re.IGNORECASE),
        '"Its" (no apostrophe) means belonging to it, as in "its own". "It\'s" means "it is".',
        _fixed("its"), needs=("it", "own"),
    ),
    _PatternRule(
        "then_than", "grammar", "error",
        re.compile(
            r"\b(?:more|less|better|worse|rather|greater|smaller|larger|bigger|fewer|higher|lower|faster|"
            r"slower|easier|harder|older|younger|stronger|weaker|cheaper|smarter|happier|other)\s+(?P<w>then)\b",
            re.IGNORECASE,
        ),
        'Use "than" to compare things ("better than"). "Then" is about time ("first ..., then ...").',
        _fixed("than"), needs=("then",),
    ),
    _PatternRule(
        "than_then", "grammar", "error",
        re.compile(r"\b(?:and|since|until|back)\s+(?P<w>than)\b", re.IGNORECASE),
        'Use "then" for time or order ("and then", "back then"). "Than" is for comparing.',
        _fixed("then"), needs=("than",),
    ),
    _PatternRule(
        "your_youre", "grammar", "error",
        re.compile(
            r"\b(?P<w>your)\s+(?:(?:a|an|the|not|going|so|always|never|gonna)\b|welcome(?=\s*(?:[.!,]|$)))",
            re.IGNORECASE,
        ),
        '"You\'re" is short for "you are", which is what this sentence needs. "Your" means belonging to you.',
        _fixed("you're"), needs=("your",),
    ),
    _PatternRule(
        "youre_your", "grammar", "error",
        re.compile(r"\b(?P<w>you['’]re)\s+own\b", re.IGNORECASE),
        'Use "your" to show something belongs to you, as in "your own".',
        _fixed("your"), needs=("you", "own"),
    ),
    _PatternRule(
        "could_of", "grammar", "error",
        re.compile(r"\b(?P<w>(?P<m>could|should|would|must|might)\s+of)\b(?!\s+course)", re.IGNORECASE),
        'Write "could have" (or "could\'ve"), not "could of". They sound the same but "of" is wrong here.',
        lambda m: f"{m.group('m')} have",
        needs=("of",), needs_one=("ould", "must", "might"),
    ),
)

_SPLICE = re.compile(r",\s+(?:I|you|he|she|it|we|they|this|there)\s+[a-z]+", re.IGNORECASE)
_LOWER_I = re.compile(r"(?<![\w'’.\-/@(])i(?=['’][a-z]|[\s,;:!?)]|\.(?!\w)|$)")
_SUBORDINATORS = frozenset({"because", "although", "though", "unless", "whereas"})
_VERBISH = frozenset(
    """am is are was were be been being have has had do does did can could will would shall should
    may might must go goes went make makes made get gets got think thinks thought know knows knew
    thank thanks see saw say said want wants need needs like likes love loves feel feels felt agree
    agrees disagree believe believes hope hopes let come came take took give gave look looks""".split()
)


def _is_fragment(words: list[str], sentence: str) -> bool:
    if not words:
        return False
    if words[:2] == ["such", "as"]:
        return True
    if words[0] in _SUBORDINATORS and "," not in sentence and len(words) <= 8:
        because_of = words[0] == "because" and len(words) > 1 and words[1] == "of" and len(words) > 5
        return sum(1 for w in words if w in _SUBJECTS) <= 1 and not because_of
    if len(words) <= 3 and words[0] in _NOUN_PHRASE_OPENERS and not any(w in _SUBJECTS for w in words):
        return not any(w in _VERBISH or w.endswith(("ed", "ing", "s", "n't")) for w in words[1:])
    return False


_NOUN_PHRASE_OPENERS = frozenset(
    "the a an my your his her their our its this that these those some not no such especially".split()
)
_PASSIVE = re.compile(
    r"\b(?:am|is|are|was|were|be|been|being)\s+(?:[a-z]+ly\s+)?"
    r"(?P<p>[a-z]+ed|written|taken|given|made|done|seen|known|shown|found|built|told|sold|held|kept|"
    r"paid|sent|spent|taught|bought|brought|caught|chosen|driven|eaten|forgotten|hidden|broken|spoken|"
    r"stolen|worn|torn|beaten|bitten|thrown|grown|drawn)\b",
    re.IGNORECASE,
)
_NOT_PASSIVE = frozenset(
    """tired excited interested bored scared worried surprised pleased married used supposed concerned
    involved prepared related located based determined satisfied disappointed annoyed amazed confused
    embarrassed frightened terrified shocked exhausted relaxed ashamed obsessed dedicated motivated
    qualified experienced advanced complicated sophisticated talented crowded limited focused devoted
    committed convinced delighted fascinated frustrated impressed inspired overwhelmed stressed
    thrilled upset bored need indeed speed seed feed bed red shed hundred breed greed proceed succeed
    exceed embed sled bleed naked wicked sacred rugged ragged crooked beloved aged skilled gifted
    unemployed unexpected unlimited unprepared unsupervised unrelated unsatisfied unmotivated
    educated organized organised balanced detailed""".split()
)
_FILLER = re.compile(
    r"\b(?P<f>very|really|just|actually|basically|things|stuff)\b(?:\s+(?P<n>[A-Za-z]+))?", re.IGNORECASE
)
_STRONGER = {
    "good": "excellent", "bad": "terrible", "big": "huge", "small": "tiny", "happy": "delighted",
    "sad": "miserable", "important": "essential", "tired": "exhausted", "scared": "terrified",
    "angry": "furious", "cold": "freezing", "hot": "boiling", "hungry": "starving", "pretty": "beautiful",
    "smart": "brilliant", "funny": "hilarious", "old": "ancient", "hard": "difficult", "easy": "effortless",
    "interesting": "fascinating", "surprised": "astonished", "fast": "rapid",
}

# ---------------------------------------------------------------------------------------------
# Structure cues

_THESIS_CUE = re.compile(
    r"\b(?:i (?:believe|think|feel|argue|agree|disagree)|in my opinion|this essay|i will|should|must|"
    r"because|reasons?|argue|important|therefore|main|several|three|two|why|how)\b",
    re.IGNORECASE,
)
_CONCLUSION_CUE = re.compile(
    r"\b(?:in conclusion|to conclude|to sum up|in summary|to summari[sz]e|overall|all in all|in the end|"
    r"finally|ultimately|therefore|for these reasons|for all these reasons|that is why|this is why|clearly|"
    r"as you can see|in short)\b",
    re.IGNORECASE,
)
_CUES = {"thesis": _THESIS_CUE, "conclusion": _CONCLUSION_CUE}
# Every match of a cue contains one of these, lower-cased (as `_PatternRule.needs`, for ASCII text).
_CUE_PHRASES = {"conclusion": (
    "in conclusion", "to conclude", "to sum up", "in summary", "to summari", "overall", "all in all", "in the end",
    "finally", "ultimately", "therefore", "for these reasons", "for all these reasons", "that is why",
    "this is why", "clearly", "as you can see", "in short")}
_EVIDENCE_OPENER = re.compile(r"(?:for example|for instance|according to|[\"“'‘]|\d)", re.IGNORECASE)
_TRANSITION = re.compile(
    r"(?:first(?:ly)?|second(?:ly)?|third(?:ly)?|next|then|also|another|additionally|in addition|"
    r"furthermore|moreover|however|on the other hand|finally|lastly|in conclusion|to conclude|overall|"
    r"besides|similarly|in contrast|as a result|therefore|for example|to begin|to start|most importantly|"
    r"one reason|the (?:first|second|third|final|last|main) |although|while|despite)\b",
    re.IGNORECASE,
)

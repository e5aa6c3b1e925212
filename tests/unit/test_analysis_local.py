"""Each local rule with positive and negative cases and exact spans."""

from __future__ import annotations

import random
import re

import pytest

from actors.analysis.items import FeedbackItem
from actors.analysis.local import LocalAnalyzer, sentence_spans
from actors.analysis.paragraphs import split_paragraphs

analyzer = LocalAnalyzer()


def items_for(text: str, rule: str | None = None, **kw: object) -> list[FeedbackItem]:
    items = analyzer.analyze_paragraph(text, **kw)  # type: ignore[arg-type]
    for item in items:
        assert item.quote == text[item.start : item.end]
        assert item.quote
    return [i for i in items if rule is None or i.rule == rule]


def only(text: str, rule: str) -> FeedbackItem:
    found = items_for(text, rule)
    assert len(found) == 1, found
    return found[0]


# -- spelling ------------------------------------------------------------------------------


def test_misspelled_word_gets_exact_span_and_best_correction() -> None:
    text = "I will recieve the prize tomorrow."
    item = only(text, "spelling")
    assert (item.start, item.end, item.quote) == (7, 14, "recieve")
    assert item.suggestion == "receive"
    assert item.kind == "spelling" and item.severity == "error"


def test_capitalised_misspelling_at_sentence_start_keeps_its_capital() -> None:
    item = only("Teh cat sat.", "spelling")
    assert item.suggestion == "The"


@pytest.mark.parametrize(
    "text",
    [
        "Yesterday Maria and Oluwaseun visited Kraków with Mr. Okonkwo.",
        "Visit https://exmaple.com/pagez or write to teachr@skool.edu today.",
        "In 2019 about 3,000 people came on the 4th of July at 10am.",
        "I don't think it's fair, and the students' lockers aren't big.",
        "The NASA and UNESCO reports were well-known and up-to-date.",
        "My favourite colour is grey and I organised the theatre trip.",
        "I use my smartphone and laptop for online homework.",
    ],
)
def test_correct_text_with_names_numbers_urls_and_contractions_has_no_spelling_items(text: str) -> None:
    assert items_for(text, "spelling") == []


def test_each_part_of_a_hyphenated_word_is_checked() -> None:
    text = "It was a well-knwon story."
    item = only(text, "spelling")
    assert item.quote == "knwon" and item.start == text.index("knwon")


def test_class_dictionary_allows_extra_words() -> None:
    text = "The zorblat machine hummed."
    assert items_for(text, "spelling")
    assert items_for(text, "spelling", dictionary={"Zorblat"}) == []


def test_missing_apostrophe_suggests_the_contraction() -> None:
    item = only("I dont like it.", "spelling")
    assert item.suggestion == "don't"


# -- grammar -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "quote", "suggestion"),
    [
        ("She ate a apple.", "a", "an"),
        ("It took an hour and a half.", None, None),
        ("He is an honest man.", None, None),
        ("She went to an university.", "an", "a"),
        ("It was a one-time offer.", None, None),
        ("It was an useful tool.", "an", "a"),
        ("An dog barked.", "An", "A"),
        ("He got an A in the test and a FBI badge.", None, None),
        ("Plan A is better.", None, None),
    ],
)
def test_a_or_an_depends_on_the_sound_of_the_next_word(text: str, quote: str | None, suggestion: str | None) -> None:
    found = items_for(text, "article")
    if quote is None:
        assert found == []
    else:
        assert [(i.quote, i.suggestion) for i in found] == [(quote, suggestion)]
        assert found[0].start == re.search(rf"\b{quote}\b", text).start()  # type: ignore[union-attr]


def test_repeated_word_is_flagged_with_both_words_in_the_span() -> None:
    text = "I went to the the shop."
    item = only(text, "repeated_word")
    assert (item.quote, item.start, item.suggestion) == ("the the", 10, "the")


def test_intentional_repetitions_are_not_flagged() -> None:
    assert items_for("He had had enough, and I knew that that was true.", "repeated_word") == []


@pytest.mark.parametrize(
    ("text", "rule", "quote", "suggestion"),
    [
        ("Their is a problem.", "their_there", "Their", "There"),
        ("I think their going to win.", "their_theyre", "their", "they're"),
        ("They did it there own way.", "there_their", "there", "their"),
        ("Its a good idea.", "its_its", "Its", "It's"),
        ("The dog wagged it's own tail.", "its_own", "it's", "its"),
        ("This is better then that.", "then_than", "then", "than"),
        ("We ate and than we slept.", "than_then", "than", "then"),
        ("I hope your not tired.", "your_youre", "your", "you're"),
        ("Thanks! Your welcome.", "your_youre", "Your", "You're"),
        ("I could of won.", "could_of", "could of", "could have"),
    ],
)
def test_confused_words_are_corrected(text: str, rule: str, quote: str, suggestion: str) -> None:
    item = only(text, rule)
    assert (item.quote, item.suggestion) == (quote, suggestion)
    assert item.start == re.search(rf"\b{re.escape(quote)}\b", text).start()  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "text",
    [
        "There is a problem with their homework.",
        "They're going to finish their own projects over there.",
        "It's a dog and its tail is long. The company changed its name.",
        "It is better than that, and then we left.",
        "Is there going to be a test?",
        "You're right about your idea. Thank you for your welcome message.",
        "I would of course help, and I could have won.",
        "Back then, things were different.",
    ],
)
def test_correct_uses_of_confusable_words_are_not_flagged(text: str) -> None:
    assert [i for i in items_for(text) if i.kind == "grammar"] == []


@pytest.mark.parametrize(
    ("text", "quote", "suggestion"),
    [
        ("Every day he go to school.", "go", "goes"),
        ("She have a cat.", "have", "has"),
        ("He don't care.", "don't", "doesn't"),
        ("They goes home.", "goes", "go"),
        ("I is happy.", "is", "am"),
        ("We was late.", "was", "were"),
        ("When it rain, it pours.", None, None),
        ("It make sense.", "make", "makes"),
    ],
)
def test_subject_verb_agreement(text: str, quote: str | None, suggestion: str | None) -> None:
    found = items_for(text, "agreement")
    if quote is None:
        assert found == []
    else:
        assert [(i.quote, i.suggestion) for i in found] == [(quote, suggestion)]


def test_agreement_after_a_masked_word_opening_a_sentence_ignores_the_sentence_before() -> None:
    """"@sam" opens the sentence but is masked: the word before "they" is not the last sentence's
    "to" (a preposition, after which "they" would be an object), so "goes" is flagged; each
    sentence is read alone (`SentenceMemo`)."""
    item = only("Who should I talk to? @sam they goes home.", "agreement")
    assert (item.quote, item.suggestion) == ("goes", "go")


@pytest.mark.parametrize(
    "text",
    [
        "Does he go to school? Did she want it?",
        "Let it go. I saw it make a mess.",
        "If he were rich, he would help. They go home and we were late.",
        "People like you make me happy. Someone like you makes a difference.",
        "He goes home and she has a cat. I am happy.",
    ],
)
def test_correct_agreement_is_not_flagged(text: str) -> None:
    assert items_for(text, "agreement") == []


def test_dependent_clause_alone_is_a_fragment() -> None:
    text = "I stayed home. Because I was tired."
    item = only(text, "fragment")
    assert item.quote == "Because I was tired."


@pytest.mark.parametrize(
    "text",
    [
        "Because I was tired, I stayed home.",
        "Because it rained we stayed inside.",
        "Stop. Think about it. Don't worry.",
        "Why? Really!",
        "I agree.",
    ],
)
def test_complete_or_deliberate_short_sentences_are_not_fragments(text: str) -> None:
    assert items_for(text, "fragment") == []


def test_verbless_noun_phrase_sentence_is_a_fragment() -> None:
    assert only("We finished. The end.", "fragment").quote == "The end."


def test_long_sentence_with_comma_splices_is_a_run_on() -> None:
    text = (
        "I went to the park with my friends after school on Monday, it was sunny and warm, "
        "we played football for hours near the lake, they all went home before dinner."
    )
    item = only(text, "run_on")
    assert item.quote == text


def test_long_sentence_joined_properly_is_not_a_run_on() -> None:
    text = "I went to the park, and it was sunny."
    assert items_for(text, "run_on") == []


def test_sentence_starting_lowercase_is_flagged_at_its_first_letter() -> None:
    text = "The bell rang. everyone left."
    item = only(text, "capital_start")
    assert (item.quote, item.start, item.suggestion) == ("e", 15, "E")


def test_abbreviations_and_brand_names_do_not_start_sentences() -> None:
    text = "Bring fruit, e.g. apples and pears. iPhones are popular. Mr. smith arrived at 3 p.m. today."
    assert items_for(text, "capital_start") == []


def test_lowercase_i_is_flagged_including_in_contractions() -> None:
    text = "Yesterday i went out and i'm tired, i.e. sleepy."
    found = items_for(text, "capital_i")
    assert [(i.quote, i.start) for i in found] == [("i", 10), ("i", 25)]
    assert all(i.suggestion == "I" for i in found)


# -- style ---------------------------------------------------------------------------------


def test_passive_voice_is_flagged_with_be_verb_and_participle() -> None:
    text = "The window was broken by the storm."
    item = only(text, "passive")
    assert item.quote == "was broken" and item.severity == "info"


@pytest.mark.parametrize("text", ["I was tired after school.", "She is interested in music.", "He was born in May."])
def test_adjectives_after_be_are_not_passive(text: str) -> None:
    assert items_for(text, "passive") == []


def test_filler_words_are_flagged_and_very_plus_adjective_gets_a_stronger_word() -> None:
    text = "It was very good and I just left."
    found = items_for(text, "weak_word")
    assert [(i.quote, i.suggestion) for i in found] == [("very good", "excellent"), ("just", None)]


def test_vague_words_are_flagged() -> None:
    assert only("We bought some stuff.", "vague_word").quote == "stuff"


def test_sentence_over_35_words_is_flagged_as_long() -> None:
    text = "Cats " + " ".join(f"w{i}" for i in range(36)) + "."
    item = only(text, "long_sentence")
    assert item.quote == text


def test_short_sentence_is_not_flagged_as_long() -> None:
    assert items_for("Cats sleep a lot during the day.", "long_sentence") == []


def test_third_use_of_a_content_word_in_a_paragraph_is_flagged() -> None:
    text = "Phones help students. Phones distract students too. Schools should limit phones."
    item = only(text, "repetition")
    assert item.quote == "phones" and item.start == text.rindex("phones")


def test_words_used_twice_or_stopwords_are_not_repetition() -> None:
    assert items_for("The dog and the cat. The dog and the cat are friends.", "repetition") == []


# -- structure -----------------------------------------------------------------------------

_BODY = "This sentence adds another detail that supports the paragraph in a clear way. " * 3


def test_long_essay_in_one_paragraph_is_told_to_use_more_paragraphs() -> None:
    text = "I believe school should start later. " + _BODY * 4
    items = analyzer.analyze_structure(split_paragraphs(text))
    assert [i.rule for i in items] == ["few_paragraphs"]
    assert items[0].quote == "I believe school should start later."


def test_short_draft_gets_no_structure_nagging() -> None:
    assert analyzer.analyze_structure(split_paragraphs("Just starting my essay.")) == []


def test_well_structured_essay_has_no_structure_items() -> None:
    text = "\n".join(
        [
            "I believe school should start later because teenagers need sleep. " + _BODY,
            "First, sleep improves memory. " + _BODY,
            "Another reason is safety. " + _BODY,
            "In conclusion, starting later would help students learn. " + _BODY,
        ]
    )
    assert analyzer.analyze_structure(split_paragraphs(text)) == []


def test_missing_thesis_conclusion_and_transitions_are_flagged_with_full_text_spans() -> None:
    text = "\n".join(
        [
            "Dogs are animals. " + _BODY,
            "Dogs run fast. " + _BODY,
            "Dogs like parks. " + _BODY,
            "Dogs eat food. " + _BODY * 2,
        ]
    )
    items = analyzer.analyze_structure(split_paragraphs(text))
    assert {i.rule for i in items} == {"no_thesis", "no_conclusion", "transitions"}
    for item in items:
        assert text[item.start : item.end] == item.quote
    assert next(i for i in items if i.rule == "no_conclusion").quote == "Dogs eat food."


def test_body_paragraph_opening_with_an_example_lacks_a_topic_sentence() -> None:
    text = "\n".join(
        [
            "I believe dogs are the best pets because they are loyal. " + _BODY * 2,
            "For example, my dog waits for me every day. " + _BODY,
            "In conclusion, dogs are great. " + _BODY,
        ]
    )
    items = analyzer.analyze_structure(split_paragraphs(text))
    assert [(i.rule, i.quote) for i in items] == [("topic_sentence", "For example, my dog waits for me every day.")]


def test_very_long_paragraph_is_flagged() -> None:
    text = "\n".join(["I think this because of reasons.", _BODY * 7, "In conclusion, yes."])
    assert "long_paragraph" in {i.rule for i in analyzer.analyze_structure(split_paragraphs(text))}


# -- general -------------------------------------------------------------------------------


def test_item_ids_are_stable_across_runs_and_positions() -> None:
    text = "I recieve teh letter."
    first = analyzer.analyze_paragraph(text)
    again = analyzer.analyze_paragraph(text)
    assert [i.id for i in first] == [i.id for i in again]
    assert len({i.id for i in first}) == len(first)


def test_messages_are_plain_and_every_item_has_a_message() -> None:
    text = "their is a apple. he go home. i think its a very good stuff."
    items = analyzer.analyze_paragraph(text)
    assert items
    assert all(i.message and "<" not in i.message for i in items)


def test_sentence_spans_do_not_split_after_abbreviations_or_initials() -> None:
    text = "Dr. Smith met J. K. Rowling. Then they left!"
    spans = sentence_spans(text)
    assert [text[s:e] for s, e in spans] == ["Dr. Smith met J. K. Rowling.", "Then they left!"]


def test_readability_reports_counts_and_scores() -> None:
    stats = analyzer.readability("The cat sat on the mat. It was happy.\nThe end came.")
    assert stats["words"] == 12 and stats["sentences"] == 3 and stats["paragraphs"] == 2
    assert stats["flesch_reading_ease"] > 60
    assert analyzer.readability("")["words"] == 0


def test_mask_overlap_lookup_matches_a_scan_and_long_runs_are_masked_as_before() -> None:
    import random

    from actors.analysis.local import _masked_ranges, _overlaps

    rng = random.Random(4)
    text = " ".join(rng.choice(["me@x.com", "www.a.org", "word", "#tag", "@you", "bar.co.uk/x", "a.b"])
                    for _ in range(300))
    ranges = _masked_ranges(text)
    for _ in range(500):
        start = rng.randrange(len(text))
        end = start + rng.randint(1, 12)
        assert _overlaps(ranges, start, end) == any(s < end and start < e for s, e in ranges)
    sample = "mail me@x.com or www.a.org and --foo.com, see bar.co.uk/x #tag @you"
    assert [sample[s:e] for s, e in _masked_ranges(sample)] == [
        "me@x.com", "www.a.org", "--foo.com", "bar.co.uk/x", "#tag", "@you"]
    # One start per run: a 20,000-character run (36 s and 85 s before) is one pass.
    assert _masked_ranges("a." * 10_000 + "com") == [(0, 20_003)]


def test_pattern_and_mask_prefilters_never_skip_a_text_their_regex_matches() -> None:
    # `_PatternRule.needs` and `_MASK_NEEDS` skip a regex over an ASCII paragraph that lacks a
    # string every match contains; over random texts of trigger words in any case, with
    # non-ASCII look-alikes IGNORECASE folds ("ſ", "ı", "K"), a skip must mean no match.
    from actors.analysis import local

    rng = random.Random(7)
    vocabulary = ["their", "There", "THEY'RE", "they’re", "going", "trying", "to", "own", "its", "It's",
                  "it’s", "then", "Than", "more", "and", "back", "your", "You're", "welcome", "could",
                  "Should", "wOULD", "must", "Might", "of", "course", "http://x.io/a", "WWW.example.COM", "a@b.org", "#tag", "@me",
                  "site.co.UK", "news.info", "the", "a", "the", "ſ", "theır", "ıts", "Kelvin.uK", "oF", "ownſ"]
    separators = [" ", "  ", "\n", ", ", ". ", "\t"]
    checked = skipped = 0
    for _ in range(3000):
        words = rng.choices(vocabulary, k=rng.randint(1, 8))
        text = "".join(w + rng.choice(separators) for w in words).strip()
        lowered = text.lower() if text.isascii() else None
        for rule in local._PATTERN_RULES:
            checked += 1
            if not rule.may_match(lowered):
                skipped += 1
                assert rule.pattern.search(text) is None, (rule.name, text)
        assert local._masked_ranges(text) == [m.span() for m in local._MASK.finditer(text)], text
    assert skipped > checked // 3  # the prefilters did skip most of the time


def test_the_conclusion_cue_prefilter_never_misses_a_cue_its_regex_finds() -> None:
    # `_CUE_PHRASES` skips the cue's regex over an ASCII paragraph lacking every phrase; over random
    # texts of the cues' words in any case, with look-alikes IGNORECASE folds, it must agree.
    from actors.analysis import local
    from actors.analysis.paragraphs import split_paragraphs

    rng = random.Random(11)
    vocabulary = ["In", "conclusion", "to", "conclude", "sum", "up", "in", "summary", "summarize", "Summarise",
                  "overall", "All", "the", "end", "FINALLY", "ultimately", "therefore", "for", "these", "all",
                  "reasons", "That", "is", "why", "this", "clearly", "as", "you", "can", "see", "short", "ſhort",
                  "endſ", "Kelvin", "ıs", "word"]
    checked = skipped = 0
    for _ in range(3000):
        text = " ".join(rng.choices(vocabulary, k=rng.randint(1, 6)))
        [paragraph] = split_paragraphs(text)
        found = LocalAnalyzer()._cue("conclusion", paragraph)
        assert found == (local._CONCLUSION_CUE.search(text) is not None), text
        checked += 1
        skipped += text.isascii() and not any(phrase in text.lower() for phrase in local._CUE_PHRASES["conclusion"])
    assert skipped > checked // 4


def test_prefiltered_analysis_equals_the_analysis_running_every_regex(monkeypatch: pytest.MonkeyPatch) -> None:
    from pathlib import Path

    from actors.analysis import local

    held_out = Path(local.__file__).parents[2] / "ops/loadtest/data/spelling/clean_heldout.txt"
    paragraphs = [p for p in held_out.read_text().splitlines() if p.strip()] + [
        "Their is a cat and there going to school, its a good day.",
        "I could of gone back than, more then ever: you're own way, there own and it's own.",
        "Write to a@b.org, visit www.example.com or https://x.io/#top and follow @me #tag.",
        "Naïve café owners say their is more then enough; could of, would of.",
    ]
    analyzer = LocalAnalyzer()
    prefiltered = [analyzer.analyze_paragraph(p) for p in paragraphs]
    monkeypatch.setattr(local._PatternRule, "may_match", lambda self, lowered: True)
    monkeypatch.setattr(local, "_MASK_NEEDS", ("",))  # "" is in every text: never skipped
    assert [analyzer.analyze_paragraph(p) for p in paragraphs] == prefiltered
    assert any(item.rule in ("their_there", "could_of", "then_than") for items in prefiltered for item in items)

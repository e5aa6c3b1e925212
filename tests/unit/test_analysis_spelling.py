"""The spelling check: real misspellings with their corrections, names, borrowed terms and
foreign text that must not be flagged (actors/analysis/spelling.py through the analyser)."""

from __future__ import annotations

import pytest

from actors.analysis.items import FeedbackItem
from actors.analysis.local import LocalAnalyzer
from actors.analysis.spelling import english, foreign_spans, suggestions

analyzer = LocalAnalyzer()


def spelling(text: str) -> list[FeedbackItem]:
    return [i for i in analyzer.analyze_paragraph(text) if i.kind == "spelling"]


# Real misspellings from Wikipedia's common-misspellings list and the Birkbeck corpus, each with
# the word the writer meant.
REAL_MISSPELLINGS = [
    ("recieve", "receive"), ("definately", "definitely"), ("seperate", "separate"), ("occured", "occurred"),
    ("untill", "until"), ("beleive", "believe"), ("goverment", "government"), ("tommorow", "tomorrow"),
    ("accomodate", "accommodate"), ("becuase", "because"), ("neccessary", "necessary"), ("thier", "their"),
    ("existance", "existence"), ("independant", "independent"), ("truely", "truly"), ("arguement", "argument"),
    ("occassion", "occasion"), ("wierd", "weird"), ("begining", "beginning"), ("enviroment", "environment"),
    ("freind", "friend"), ("familys", "families"), ("neccesary", "necessary"), ("probaly", "probably"),
    ("knowlege", "knowledge"), ("suprise", "surprise"), ("wich", "which"), ("dissapear", "disappear"),
]


@pytest.mark.parametrize(("wrong", "right"), REAL_MISSPELLINGS)
def test_real_misspelling_is_flagged_with_the_intended_word_in_the_top_three(wrong: str, right: str) -> None:
    text = f"I think the {wrong} part of the story was the best."
    [item] = spelling(text)
    assert item.quote == wrong and item.start == text.index(wrong)
    top3 = suggestions(wrong)
    assert right in top3[:3]
    assert item.suggestion == top3[0]
    for other in top3[1:]:
        assert f'"{other}"' in item.message


def test_two_letters_away_still_gets_a_correction() -> None:
    # pyspellchecker at distance 1 had no suggestion for this one; SymSpell finds it at distance 2.
    [item] = spelling("It is neccesary to sleep.")
    assert item.suggestion == "necessary" and item.severity == "error"


def test_lower_case_name_spellings_are_still_misspellings() -> None:
    # SymSpell's word list holds names in lower case ("hans", "eva"); in lower case they are slips.
    [item] = spelling("She hans a new bike.")
    assert item.quote == "hans" and item.suggestion == "has"


# Each of these once gave spelling flags (names, borrowed terms, technical words, quotations and
# sentences in other languages); none may.
NOT_MISSPELLED = {
    "names known to the lists": "Edward Jenner developed the first vaccine. Iceland runs on geothermal power.",
    "a name repeated in the paragraph": "Hiwot explained the calendar. Later Hiwot showed us how to make the bread.",
    "names from many languages": "Yesterday Siobhan, Oluwaseun and Krzysztof met Chukwuemeka in Enugu.",
    "technical words": "Neuroscientists study neurotransmitters, and microplastics worry hydrologists.",
    "British spelling": "My neighbour organised a theatre trip to see the colourful programme.",
    "borrowed compound": "The Japanese idea of wabi-sabi is lovely.",
    "term after called": "In Japan people hold picnics under the trees, a custom called hanami.",
    "term after the word": "He also taught me the word ikigai, which describes what gives life meaning.",
    "term defined after it": "We learned to make injera, a soft flatbread, at school.",
    "quoted French": 'Descartes wrote, "Je pense, donc je suis." He wanted one idea he could not doubt.',
    "quoted Spanish": "My teacher said \"No hay mal que por bien no venga,\" and we organised a festival.",
    "quoted refrain": 'She sang "Ay, ay, ay, ay, canta y no llores," and everyone joined in.',
    "German sentence": "Wer nicht wagt, der nicht gewinnt. My exchange partner lives in Freiburg.",
    "quoted single words": "The motto is \"harambee\" and the greeting is \"kia ora\".",
}


@pytest.mark.parametrize("text", NOT_MISSPELLED.values(), ids=NOT_MISSPELLED.keys())
def test_names_terms_technical_words_and_foreign_text_are_not_flagged(text: str) -> None:
    assert spelling(text) == []


def test_a_misspelling_after_called_is_flagged_when_the_phrase_goes_on() -> None:
    [item] = spelling("Mitochondria are often called teh powerhouse of the cell.")
    assert item.quote == "teh" and item.suggestion == "the"


def test_a_quoted_or_introduced_term_is_accepted_for_the_whole_paragraph() -> None:
    text = 'The Danish word "hygge" became popular. Everyone wanted a more hygge life, but I beleive it.'
    assert [i.quote for i in spelling(text)] == ["beleive"]


def test_english_sentence_with_two_misspellings_is_not_taken_for_a_foreign_one() -> None:
    found = spelling("I beleive the goverment should help.")
    assert [i.quote for i in found] == ["beleive", "goverment"]


def test_a_misspelling_next_to_a_foreign_quotation_is_still_flagged() -> None:
    found = spelling('Horace wrote "carpe diem" and I beleive him.')
    assert [i.quote for i in found] == ["beleive"]


def test_cyrillic_essay_gets_no_english_spelling_flags() -> None:
    text = (
        "Летом я ездила к бабушке в деревню. Каждое утро мы ходили за водой к колодцу, а вечером "
        "пили чай с вареньем. Я считаю, что школьная форма нужна, потому что она помогает ученикам."
    )
    assert spelling(text) == []


def test_foreign_spans_cover_the_quotation_only() -> None:
    text = 'He said "Je pense, donc je suis" and smiled.'
    quote = '"Je pense, donc je suis"'
    assert foreign_spans(text, [(0, len(text))]) == [(text.index(quote), text.index(quote) + len(quote))]


def test_possessives_and_british_spellings_are_known() -> None:
    spell = english()
    for word in ("students'", "teacher's", "colour", "organised", "travelled", "aluminium", "smartphone"):
        assert spell.known(word), word
    for word in ("recieve", "familys", "tomatos", "referal", "ecomanic"):
        assert not spell.known(word), word


@pytest.mark.parametrize("text", [
    "In Krakow we ate pierogi and bought bread made from teff flour.",
    "The varroa mite has killed many hives, and Pierogi were on every menu.",
])
def test_rare_english_words_with_no_common_word_one_edit_away_are_not_flagged(text: str) -> None:
    assert spelling(text) == []


def test_a_rare_word_one_edit_from_a_common_word_is_still_a_slip() -> None:
    # "bien" and "mal" are in SCOWL's size-80 list, but "been" and "male" are common words.
    assert {"bien", "mal"} <= english().rare
    text = "I have bien to the mall with a mal friend of mine."
    assert {i.quote for i in spelling(text)} == {"bien", "mal"}

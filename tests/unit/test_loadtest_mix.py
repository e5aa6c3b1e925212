"""The loadtest's mixed-in text, big essays and hostile clients (ops/loadtest/corpus.py,
ops/loadtest/hostile.py, run.py's options): what they build, checked without a server.

A hostile frame is checked the way the server checks it: decoded by pycrdt, and refused by the
server's own validation (`actors.doc`), so a builder that silently produced something acceptable
would make the benchmark's "refused" column meaningless.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from pycrdt import Awareness, Doc, Text, handle_sync_message

from actors.doc import EssayDoc, InvalidUpdate, TextTooLong, validate_update
from ops.loadtest import corpus, hostile, run
from serve_app.settings import Settings


def _update(frame: bytes) -> bytes:
    """The update inside a y-websocket `[0][2][varbytes]` message."""
    assert frame[:2] == b"\x00\x02"
    length = hostile._varuint(frame, 2)
    return frame[len(frame) - length:]


def _awareness_payload(frame: bytes) -> bytes:
    assert frame[0] == 1
    length = hostile._varuint(frame, 1)
    return frame[len(frame) - length:]


# --- corpus ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", corpus.TEXTS)
def test_every_corpus_word_is_valid_utf8_without_surrogates(kind: str) -> None:
    for word in corpus.words(kind):
        assert word and not any(c.isspace() for c in word)
        assert word.encode("utf-8").decode("utf-8") == word  # a lone surrogate would raise
    text = corpus.corpus(kind)
    assert text.encode("utf-8")
    assert len(text) >= (len(corpus.LATIN) if kind == "latin" else 4000)


def test_latin_corpus_is_the_benchmarks_ascii_essay() -> None:
    assert corpus.corpus("latin") == run.CORPUS == corpus.LATIN
    assert corpus.LATIN.isascii()


def test_cyrillic_corpus_is_multibyte_throughout() -> None:
    text = corpus.corpus("cyrillic")
    letters = [c for c in text if c.isalpha()]
    assert sum("\u0400" <= c <= "\u04ff" for c in letters) / len(letters) > 0.95
    assert len(text.encode()) > 1.8 * len(text)


def test_mixed_corpus_has_astral_characters_so_utf16_offsets_differ() -> None:
    text = corpus.corpus("mixed")
    astral = [c for c in text if ord(c) > 0xFFFF]
    assert astral, "no character outside the BMP"
    assert {"📚", "𠜎"} & set(astral)
    assert len(text.encode("utf-16-le")) // 2 > len(text)  # UTF-16 units != code points
    assert "\u0301" in text or "cafe\u0301" in corpus.words("mixed")  # a combining mark
    assert any("\u0400" <= c <= "\u04ff" for c in text)


def test_corpus_is_the_same_every_run() -> None:
    assert corpus.corpus("mixed") == corpus.corpus("mixed")
    assert corpus.corpus("mixed", seed=1) != corpus.corpus("mixed", seed=2)


def test_big_fill_has_exactly_the_asked_code_points_in_pieces_under_the_message_limit() -> None:
    text = corpus.fill(corpus.corpus("mixed"), 197_400)
    assert len(text) == 197_400
    pieces = corpus.chunks(text, 256 * 1024)
    assert "".join(pieces) == text
    assert all(len(p.encode()) <= 256 * 1024 for p in pieces)
    assert corpus.fill("abc", 0) == ""


def test_typing_the_mixed_corpus_word_by_word_rebuilds_it() -> None:
    text = corpus.corpus("mixed")
    doc: Doc = Doc()
    content = doc.get("content", type=Text)
    cursor = run.word_start(0, text)
    while cursor < len(text) - 1 and len(content) < 300:
        cursor = run.type_word(doc, content, cursor, text)
    assert str(content) == text[: len(str(content))]
    rng = random.Random(1)
    cursor = 0
    for _ in range(50):
        cursor = run.type_chunk(doc, content, cursor, rng, text)  # backspaces over astral characters too
    assert str(content).encode()


def test_big_essays_are_filled_below_the_limit_with_room_for_the_run() -> None:
    chars = run.big_fill_chars(warmup=10, duration=60)
    assert 190_000 < chars < hostile.MAX_ESSAY_CHARS
    # A word of <= 20 characters every 0.5 s for the whole run still fits.
    assert chars + 20 * 2 * (10 + 60 + 15) < hostile.MAX_ESSAY_CHARS


# --- hostile frames ---------------------------------------------------------------------------


@pytest.mark.parametrize("variant", sorted(hostile.NON_TEXT))
def test_non_text_frames_are_refused_by_the_servers_validation(variant: str) -> None:
    update = _update(hostile.non_text_frame(variant))
    with pytest.raises(InvalidUpdate):
        validate_update(update)
    essay = EssayDoc()
    with pytest.raises(InvalidUpdate):
        essay.apply_update(update, max_chars=hostile.MAX_ESSAY_CHARS)
    assert essay.text == ""


@pytest.mark.parametrize("variant", sorted(set(hostile.NON_TEXT) - {"not_yjs"}))
def test_non_text_frames_decode_in_pycrdt_as_what_they_claim(variant: str) -> None:
    doc: Doc = Doc()
    handle_sync_message(hostile.non_text_frame(variant)[1:], doc)
    roots = set(doc.keys())
    if variant in ("root_map", "second_root_text", "xml_fragment", "binary_array"):
        assert roots - {"content"}, f"{variant} wrote no other root: {roots}"
    else:
        diff = doc.get("content", type=Text).diff()
        assert any(attrs for _, attrs in diff) or any(not isinstance(v, str) for v, _ in diff), diff


def test_not_yjs_frame_does_not_decode() -> None:
    with pytest.raises(ValueError):
        Doc().apply_update(_update(hostile.non_text_frame("not_yjs")))


def test_oversized_frame_is_plain_text_over_the_character_limit() -> None:
    frame = hostile.oversized_frame()
    update = _update(frame)
    assert len(frame) < hostile.MAX_MESSAGE_BYTES  # refused for its characters, not its bytes
    validate_update(update)  # plain text...
    essay = EssayDoc()
    with pytest.raises(TextTooLong):  # ...but one character too many
        essay.apply_update(update, max_chars=hostile.MAX_ESSAY_CHARS)
    assert essay.text == ""


def test_huge_frame_is_over_the_message_limit() -> None:
    assert len(hostile.huge_frame()) > hostile.MAX_MESSAGE_BYTES


def test_flood_frames_are_valid_text_updates_that_apply_in_order() -> None:
    frames = hostile.flood_updates(50, client_id=7)
    assert len(frames) == 50
    essay = EssayDoc()
    for frame in frames:
        essay.apply_update(_update(frame), max_chars=hostile.MAX_ESSAY_CHARS)
    assert essay.text == "spam " * 50


def test_awareness_spam_announces_many_client_ids() -> None:
    frame = hostile.awareness_spam_frame(20, seed=3)
    awareness = Awareness(Doc())
    awareness.apply_awareness_update(_awareness_payload(frame), "test")
    foreign = set(awareness.states) - {awareness.client_id}
    assert len(foreign) == 20
    assert len(_awareness_payload(frame)) <= hostile.AWARENESS_MAX_BYTES  # refused for its ids, not size


def test_awareness_big_frame_is_over_the_awareness_limit_and_decodes() -> None:
    payload = _awareness_payload(hostile.awareness_big_frame())
    assert len(payload) > hostile.AWARENESS_MAX_BYTES
    awareness = Awareness(Doc())
    awareness.apply_awareness_update(payload, "test")
    assert json.dumps(awareness.states[424242]).count("z") > hostile.AWARENESS_MAX_BYTES


def test_bogus_tickets_are_not_tickets() -> None:
    tickets = hostile.bogus_tickets(random.Random(0), 40)
    assert len(tickets) == 40 and len(set(tickets)) > 3
    assert all(len(t) == 0 or len(t) > 20 for t in tickets)


def test_stats_count_refusals_per_attack() -> None:
    stats = hostile.Stats()
    stats.rounds["flood"] += 1
    stats.frames_sent["flood"] += 400
    stats.frames_acked["flood"] += 201
    stats.note("flood", "closed 1008")
    stats.rounds["awareness_spam"] += 1
    stats.frames_sent["awareness_spam"] += 120
    stats.note("awareness_spam", "still open")
    assert stats.as_dict() == {
        "flood": {"rounds": 1, "frames_sent": 400, "frames_acked": 201, "frames_refused": 199,
                  "outcomes": {"closed 1008": 1}},
        # Awareness is never acked: nothing to call refused from the counters.
        "awareness_spam": {"rounds": 1, "frames_sent": 120, "frames_acked": None, "frames_refused": None,
                           "outcomes": {"still open": 1}}}


# --- options and report -------------------------------------------------------------------------


def test_default_run_mixes_nothing_in() -> None:
    args = run.parse_args([])
    assert (args.text, args.big_essays, args.hostile, args.shape) == ("latin", 0, 0, "bursts")
    assert run.Mix(text=args.text, big_essays=args.big_essays, hostile=args.hostile) == run.Mix()
    assert run.Mix().describe() == ""


def test_mix_options_parse() -> None:
    args = run.parse_args(["--shape", "continuous", "--typists", "60", "--hostile", "5", "--text", "mixed",
                           "--big-essays", "2", "--targets", "essaycoach"])
    assert (args.students, args.text, args.big_essays, args.hostile) == ("60", "mixed", 2, 5)
    described = run.Mix(text="mixed", big_essays=2, hostile=5).describe()
    assert "mixed" in described and "2 essays" in described and "5 hostile" in described


@pytest.mark.parametrize("argv", [["--text", "klingon"], ["--hostile", "-1"], ["--big-essays", "x"]])
def test_bad_mix_options_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        run.parse_args(argv)


def test_teachers_keep_the_user_caps_when_their_sockets_fit() -> None:
    assert run.teacher_sockets_per_account(60, 2, 5, class_sockets=0) == 30 + 3
    assert run.teacher_sockets_per_account(50, 5, 0, class_sockets=1) == 1
    # The web app's class view holds two sockets per class (documents and live rows).
    assert run.teacher_sockets_per_account(50, 5, 10, class_sockets=run.CLASS_SOCKETS["essaycoach-web"]) == 2 + 2
    defaults = (hostile.MAX_SOCKETS_PER_USER, hostile.TICKETS_PER_USER_PER_MINUTE)
    assert run.user_caps_for(run.teacher_sockets_per_account(300, 10, 5, class_sockets=1)) == defaults
    assert run.user_caps_for(run.teacher_sockets_per_account(100, 5, 5, class_sockets=0)) == defaults  # 21
    assert run.caps_note(defaults) == "32 sockets, 64 tickets a minute (the defaults)"


def test_teachers_who_need_more_sockets_raise_the_caps_just_enough_rather_than_lift_them() -> None:
    """150 typists in classes of 30, 10 hostile: a teacher watches 30 essays and 2 hostile ones."""
    assert run.user_caps_for(run.teacher_sockets_per_account(150, 5, 10, class_sockets=0)) == (36, 72)
    assert run.user_caps_for(run.teacher_sockets_per_account(1000, 10, 0, class_sockets=0)) == (104, 208)


def test_the_loadtest_s_caps_are_the_servers_defaults() -> None:
    defaults = Settings(jwt_secret="x" * 40)
    assert (defaults.ws_max_sockets_per_user, defaults.ws_tickets_per_user_per_minute) == (
        hostile.MAX_SOCKETS_PER_USER, hostile.TICKETS_PER_USER_PER_MINUTE)


def _result(mix: dict[str, object]) -> dict[str, object]:
    return {"target": "essaycoach", "students": 60, "ack_ms": {"p50": 5.0, "p99": 40.0, "samples": 100},
            "fanout_ms": {"p50": 2.0, "p99": 9.0, "samples": 90}, "mix": mix}


def test_report_says_when_an_honest_update_was_lost() -> None:
    honest = {"unacked": 1, "undelivered": 0, "teacher_mismatches": 0, "closed_sockets": {}, "lost_or_closed": True}
    lines = run.mix_lines([_result({"text": "mixed", "honest": honest})])
    assert any("SOME HONEST UPDATE LOST" in line for line in lines)
    honest = {**honest, "unacked": 0, "lost_or_closed": False}
    lines = run.mix_lines([_result({"text": "mixed", "honest": honest})])
    assert any("no honest update lost" in line for line in lines)


def test_report_has_a_row_per_attack_with_the_close_codes_seen() -> None:
    stats = hostile.Stats()
    stats.rounds["non_text"] += 2
    stats.note("non_text", "closed 4400", 2)
    mix = {"text": "latin", "honest": {"unacked": 0, "undelivered": 0, "teacher_mismatches": 0,
                                       "closed_sockets": {}, "lost_or_closed": False},
           "hostile": {"clients": 1, "user_caps": "defaults", "attacks": stats.as_dict(),
                       "teacher_watchers": {"sockets": 1, "closed": {}, "saw_other_roots": 0, "max_text_chars": 0}}}
    lines = run.mix_lines([_result(mix), {**_result({**mix, "hostile": {"skipped": "no limits"}}),
                                          "target": "y-websocket"}])
    row = next(line for line in lines if line.startswith("| non_text"))
    assert "closed 4400 x2" in row and "4400, nothing applied" in row
    assert any("not run (no limits)" in line for line in lines)
    assert any("reference servers" in line for line in lines)


def test_mix_result_flags_an_honest_socket_closed_and_skips_hostile_on_a_reference(tmp_path: Path) -> None:
    target = run.YWebsocketTarget(tmp_path)
    sim = run.Sim(1, seed=0)
    mix = run.Mix(text="mixed", hostile=3)
    out = run.mix_result(mix, target, sim, None, [], hostile.Stats(), [], {"1013": 1}, 0, 0, 0)
    assert out["honest"]["lost_or_closed"] is True
    assert out["honest"]["unacked"] is None  # a reference server has no ack
    assert "skipped" in out["hostile"]
    clean = run.mix_result(mix, target, sim, None, [], hostile.Stats(), [], {}, 0, 0, 0)
    assert clean["honest"]["lost_or_closed"] is False
    assert run.mix_result(run.Mix(), target, sim, None, [], hostile.Stats(), [], {}, 0, 0, 0) == {}


def test_attacks_option_picks_the_hostile_rotation() -> None:
    assert run.parse_args([]).attacks == hostile.ATTACKS
    args = run.parse_args(["--hostile", "2", "--attacks", "flood, oversized"])
    assert args.attacks == ("flood", "oversized")
    mix = run.Mix(hostile=2, rotation=args.attacks)
    assert "attacks: flood, oversized" in mix.describe()
    with pytest.raises(SystemExit):
        run.parse_args(["--attacks", "flood,ddos"])


async def test_hostile_client_rotates_through_its_attacks_only(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[str] = []

    class Recording(hostile.HostileClient):
        async def flood(self) -> None:
            ran.append("flood")

        async def trespass(self) -> None:
            ran.append("trespass")
            if len(ran) >= 4:
                self.stopping = True

    async def no_ticket() -> str:
        raise AssertionError("not reached")

    seat = hostile.Seat(ticket=no_ticket, doc_url=str, trespass_url=str)
    stats = hostile.Stats()
    client = Recording(0, seat, stats, attacks=("flood", "trespass"))
    monkeypatch.setattr(hostile, "ROUND_PAUSE", 0.0)
    await client.run(stop_at=float("inf"))
    assert ran == ["flood", "trespass", "flood", "trespass"]
    assert stats.rounds == {"flood": 2, "trespass": 2}

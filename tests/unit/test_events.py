"""An essay's event backlog (actors.events.EventBacklog): numbered JSON events kept for `resume`,
bounded by count and bytes."""

import json
import uuid

from actors.events import EVENT_BACKLOG, EVENT_BACKLOG_BYTES, EventBacklog, encode_event


def no_feedback() -> dict:
    raise AssertionError("no feedback event was missed")


def backlog() -> EventBacklog:
    return EventBacklog(uuid.uuid4())


def test_events_are_numbered_json_and_resume_returns_what_was_missed() -> None:
    a = backlog()
    texts = [encode_event(a.next("comment", 0, text=f"c{i}")) for i in range(5)]
    first = json.loads(texts[0])
    assert first == {"type": "comment", "essay_id": str(a.essay_id), "seq": 1, "epoch": a.epoch,
                     "doc_seq": 0, "text": "c0"}
    assert a.after(2, a.epoch, no_feedback) == texts[2:]
    assert a.after(5, None, no_feedback) == []
    assert a.after(0, "another-epoch", no_feedback) is None


def test_backlog_is_bounded_by_bytes_and_count_and_older_resumes_resync() -> None:
    a = backlog()
    big = "x" * 1000
    for _ in range(100):
        a.next("comment", 0, note=big)
    assert a.kept_bytes <= EVENT_BACKLOG_BYTES
    assert a.kept_bytes == sum(len(text) for _, text in a.kept)
    oldest = a.kept[0][0]
    assert 100 - oldest + 1 == len(a.kept) >= EVENT_BACKLOG_BYTES // 1200
    assert a.after(oldest - 2, None, no_feedback) is None  # a gap: the client resyncs
    assert [json.loads(t)["seq"] for t in a.after(oldest - 1, None, no_feedback)] == list(range(oldest, 101))
    for i in range(EVENT_BACKLOG + 10):
        a.next("comment", 0, text=f"c{i}")
    assert len(a.kept) == EVENT_BACKLOG


def test_the_newest_event_is_kept_even_when_it_alone_is_over_the_byte_bound() -> None:
    a = backlog()
    a.next("comment", 0, note="y" * (EVENT_BACKLOG_BYTES + 1))
    assert [json.loads(t)["seq"] for t in a.after(0, None, no_feedback)] == [1]


def test_missed_saves_resume_as_the_latest_one() -> None:
    a = backlog()
    for words in (3, 5):
        a.next("saved", 0, word_count=words)                                        # seq 1, 2
    a.next("comment", 0, text="more detail here")                                   # seq 3
    a.next("saved", 0, word_count=9)                                                # seq 4
    resumed = [json.loads(t) for t in a.after(0, a.epoch, no_feedback)]
    assert [(e["seq"], e["type"]) for e in resumed] == [(3, "comment"), (4, "saved")]
    assert resumed[1]["word_count"] == 9 and a.kept_bytes == len(a.kept[0][1]) and len(a.kept) == 1
    assert [json.loads(t)["seq"] for t in a.after(2, a.epoch, no_feedback)] == [3, 4]


def test_missed_feedback_diffs_resume_as_one_full_set_at_the_latest_diffs_place() -> None:
    a = backlog()
    a.next("feedback", 0, items=[{"id": "a"}], removed=[], counts={"spelling": 1})  # seq 1
    a.next("feedback", 7, items=[{"id": "b"}], removed=["a"], counts={"style": 1})  # seq 2
    a.next("comment", 7, text="good start")                                        # seq 3
    a.next("feedback", 9, items=[{"id": "c"}], removed=[], counts={"style": 2})    # seq 4
    a.next("saved", 9, word_count=12)                                               # seq 5
    assert list(a.kept) == [(3, a.kept[0][1])]  # diffs and saves leave nothing in the backlog
    current = {"items": [{"id": "b"}, {"id": "c"}], "removed": [], "counts": {"style": 2}, "full": True}
    resumed = [json.loads(t) for t in a.after(1, a.epoch, lambda: current)]
    assert [(e["seq"], e["type"]) for e in resumed] == [(3, "comment"), (4, "feedback"), (5, "saved")]
    assert resumed[1] == {"type": "feedback", "essay_id": str(a.essay_id), "seq": 4, "epoch": a.epoch,
                          "doc_seq": 9, **current}
    assert [json.loads(t)["seq"] for t in a.after(4, a.epoch, no_feedback)] == [5]


def test_feedback_and_saves_take_no_backlog_however_many() -> None:
    a = backlog()
    for i in range(1000):
        a.next("feedback", 0, items=[], removed=[], counts={"style": i})
        a.next("saved", 0, word_count=i)
    assert a.kept is None and a.kept_bytes == 0
    current = {"items": [], "removed": [], "counts": {"style": 999}, "full": True}
    resumed = [json.loads(t) for t in a.after(0, a.epoch, lambda: current)]
    assert [(e["seq"], e["type"]) for e in resumed] == [(1999, "feedback"), (2000, "saved")]

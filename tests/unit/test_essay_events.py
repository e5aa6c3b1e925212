"""EssayActor's event backlog: numbered JSON events kept for `resume`, bounded by count and bytes."""

import json
import uuid

from actors.doc import EssayDoc
from actors.essay import EVENT_BACKLOG, EVENT_BACKLOG_BYTES, EssayActor, EssayMeta, encode_event


def no_feedback() -> dict:
    raise AssertionError("no feedback event was missed")


def actor() -> EssayActor:
    meta = EssayMeta(essay_id=uuid.uuid4(), owner_id=uuid.uuid4(), class_id=None, title="t")
    return EssayActor(meta=meta, doc=EssayDoc.from_state(None, []), seq=0, watermark=0)


def test_events_are_numbered_json_and_resume_returns_what_was_missed() -> None:
    a = actor()
    texts = [encode_event(a.next_event("comment", text=f"c{i}")) for i in range(5)]
    first = json.loads(texts[0])
    assert first == {"type": "comment", "essay_id": str(a.essay_id), "seq": 1, "epoch": a.epoch,
                     "doc_seq": 0, "text": "c0"}
    assert a.events_after(2, a.epoch, no_feedback) == texts[2:]
    assert a.events_after(5, None, no_feedback) == []
    assert a.events_after(0, "another-epoch", no_feedback) is None


def test_backlog_is_bounded_by_bytes_and_count_and_older_resumes_resync() -> None:
    a = actor()
    big = "x" * 1000
    for _ in range(100):
        a.next_event("comment", note=big)
    assert a.events_bytes <= EVENT_BACKLOG_BYTES
    assert a.events_bytes == sum(len(text) for _, text in a.events)
    oldest = a.events[0][0]
    assert 100 - oldest + 1 == len(a.events) >= EVENT_BACKLOG_BYTES // 1200
    assert a.events_after(oldest - 2, None, no_feedback) is None  # a gap: the client resyncs
    assert [json.loads(t)["seq"] for t in a.events_after(oldest - 1, None, no_feedback)] == list(range(oldest, 101))
    for i in range(EVENT_BACKLOG + 10):
        a.next_event("comment", text=f"c{i}")
    assert len(a.events) == EVENT_BACKLOG


def test_the_newest_event_is_kept_even_when_it_alone_is_over_the_byte_bound() -> None:
    a = actor()
    a.next_event("comment", note="y" * (EVENT_BACKLOG_BYTES + 1))
    assert [json.loads(t)["seq"] for t in a.events_after(0, None, no_feedback)] == [1]


def test_missed_saves_resume_as_the_latest_one() -> None:
    a = actor()
    for words in (3, 5):
        a.next_event("saved", word_count=words)                                        # seq 1, 2
    a.next_event("comment", text="more detail here")                                   # seq 3
    a.next_event("saved", word_count=9)                                                # seq 4
    resumed = [json.loads(t) for t in a.events_after(0, a.epoch, no_feedback)]
    assert [(e["seq"], e["type"]) for e in resumed] == [(3, "comment"), (4, "saved")]
    assert resumed[1]["word_count"] == 9 and a.events_bytes == len(a.events[0][1]) and len(a.events) == 1
    assert [json.loads(t)["seq"] for t in a.events_after(2, a.epoch, no_feedback)] == [3, 4]


def test_missed_feedback_diffs_resume_as_one_full_set_at_the_latest_diffs_place() -> None:
    a = actor()
    a.next_event("feedback", items=[{"id": "a"}], removed=[], counts={"spelling": 1})  # seq 1
    a.seq = 7
    a.next_event("feedback", items=[{"id": "b"}], removed=["a"], counts={"style": 1})  # seq 2
    a.next_event("comment", text="good start")                                        # seq 3
    a.seq = 9
    a.next_event("feedback", items=[{"id": "c"}], removed=[], counts={"style": 2})    # seq 4
    a.next_event("saved", word_count=12)                                               # seq 5
    assert list(a.events) == [(3, a.events[0][1])]  # diffs and saves leave nothing in the backlog
    current = {"items": [{"id": "b"}, {"id": "c"}], "removed": [], "counts": {"style": 2}, "full": True}
    resumed = [json.loads(t) for t in a.events_after(1, a.epoch, lambda: current)]
    assert [(e["seq"], e["type"]) for e in resumed] == [(3, "comment"), (4, "feedback"), (5, "saved")]
    assert resumed[1] == {"type": "feedback", "essay_id": str(a.essay_id), "seq": 4, "epoch": a.epoch,
                          "doc_seq": 9, **current}
    assert [json.loads(t)["seq"] for t in a.events_after(4, a.epoch, no_feedback)] == [5]


def test_feedback_and_saves_take_no_backlog_however_many() -> None:
    a = actor()
    for i in range(1000):
        a.next_event("feedback", items=[], removed=[], counts={"style": i})
        a.next_event("saved", word_count=i)
    assert a.events is None and a.events_bytes == 0
    current = {"items": [], "removed": [], "counts": {"style": 999}, "full": True}
    resumed = [json.loads(t) for t in a.events_after(0, a.epoch, lambda: current)]
    assert [(e["seq"], e["type"]) for e in resumed] == [(1999, "feedback"), (2000, "saved")]

"""EssayActor's event backlog: numbered JSON events kept for `resume`, bounded by count and bytes."""

import json
import uuid

from actors.doc import EssayDoc
from actors.essay import EVENT_BACKLOG, EVENT_BACKLOG_BYTES, EssayActor, EssayMeta


def actor() -> EssayActor:
    meta = EssayMeta(essay_id=uuid.uuid4(), owner_id=uuid.uuid4(), class_id=None, title="t")
    return EssayActor(meta=meta, doc=EssayDoc.from_state(None, []), seq=0, watermark=0)


def test_events_are_numbered_json_and_resume_returns_what_was_missed() -> None:
    a = actor()
    texts = [a.next_event("comment", text=f"c{i}") for i in range(5)]
    first = json.loads(texts[0])
    assert first == {"type": "comment", "essay_id": str(a.essay_id), "seq": 1, "epoch": a.epoch,
                     "doc_seq": 0, "text": "c0"}
    assert a.events_after(2, a.epoch) == texts[2:]
    assert a.events_after(5, None) == []
    assert a.events_after(0, "another-epoch") is None


def test_backlog_is_bounded_by_bytes_and_count_and_older_resumes_resync() -> None:
    a = actor()
    big = "x" * 1000
    for i in range(100):
        a.next_event("feedback", note=big)
    assert a.events_bytes <= EVENT_BACKLOG_BYTES
    assert a.events_bytes == sum(len(text) for _, text in a.events)
    oldest = a.events[0][0]
    assert 100 - oldest + 1 == len(a.events) >= EVENT_BACKLOG_BYTES // 1200
    assert a.events_after(oldest - 2, None) is None  # a gap: the client resyncs
    assert [json.loads(t)["seq"] for t in a.events_after(oldest - 1, None)] == list(range(oldest, 101))
    for i in range(EVENT_BACKLOG + 10):
        a.next_event("saved", word_count=i)
    assert len(a.events) == EVENT_BACKLOG


def test_the_newest_event_is_kept_even_when_it_alone_is_over_the_byte_bound() -> None:
    a = actor()
    a.next_event("feedback", note="y" * (EVENT_BACKLOG_BYTES + 1))
    assert [json.loads(t)["seq"] for t in a.events_after(0, None)] == [1]

"""actors.decisions: what a host decides, from an essay's state and the time (no clock, no I/O).

Times are plain numbers on the host's monotonic clock; the essays are real `LiveEssay`s with
real documents, typed into with real Yjs updates.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from pycrdt import Doc, Text

from actors import decisions
from actors.config import HostConfig
from actors.doc import EssayDoc
from actors.essay import EssayMeta, LiveEssay

CFG = HostConfig(local_pause_seconds=0.25, local_min_interval=2.0, llm_settle_seconds=15.0, compact_every=5,
                 compact_idle_seconds=2.0, revision_every_seconds=180.0, unload_idle_seconds=300.0,
                 class_row_interval=1.0)
WALL = datetime(2026, 12, 6, tzinfo=UTC)


class Typist:
    """A browser editor typing into `essay`: each word is one Yjs update applied at a time."""

    def __init__(self, essay: LiveEssay) -> None:
        self.essay = essay
        self.doc: Doc[Any] = Doc()
        self.text = self.doc.get("content", type=Text)

    def type(self, word: str, *, at: float) -> None:
        before = self.doc.get_state()
        self.text.insert(len(self.text), word)
        self.essay.apply(self.doc.get_update(before), now=at, wall=WALL, large_paste_chars=200)


def essay(*, class_id: uuid.UUID | None = None, **state: object) -> LiveEssay:
    meta = EssayMeta(essay_id=uuid.uuid4(), owner_id=uuid.uuid4(), class_id=class_id, title="t")
    return LiveEssay(meta=meta, doc=EssayDoc(), seq=0, watermark=0, **state)  # type: ignore[arg-type]


def test_tier1_is_due_at_the_pause_and_then_at_most_once_per_interval() -> None:
    e = essay()
    Typist(e).type("Hello ", at=100.0)
    assert decisions.tier1_due_at(e, CFG) == 100.25
    assert not decisions.tier1_due(e, 100.2, CFG) and decisions.tier1_due(e, 100.25, CFG)
    e.tier1_started(100.25)
    Typist(e).type("again ", at=100.5)  # typing goes on: the pause alone no longer decides
    assert decisions.tier1_due_at(e, CFG) == 102.25
    assert not decisions.tier1_due(e, 101.0, CFG)
    Typist(e).type("more ", at=103.0)  # a pause after the interval: due at that pause
    assert decisions.tier1_due_at(e, CFG) == 103.25


def test_a_stretched_interval_holds_tier1_back_while_typing_goes_on_but_not_once_the_student_stops() -> None:
    e = essay()
    cfg = replace(CFG, local_stop_seconds=1.0)
    Typist(e).type("Hello ", at=100.0)
    assert decisions.tier1_due_at(e, cfg, 8.0) == 100.25  # the first pause: at once, stretched or not
    e.tier1_started(100.25)
    for at in (100.5, 101.0, 101.5, 102.0, 102.5):  # a word every half second
        Typist(e).type("word ", at=at)
    assert decisions.tier1_due_at(e, cfg) == 102.75  # not stretched: the interval (2 s) has passed
    assert decisions.tier1_due_at(e, cfg, 8.0) == 103.5  # stretched: not before a second's stop...
    assert decisions.tier1_due_at(e, cfg, 2.0) == 102.75  # (the normal interval: unchanged)
    for at in (103.0, 103.5, 104.0, 104.5, 105.0, 105.5, 106.0, 106.5, 107.0, 107.5, 108.0):
        Typist(e).type("word ", at=at)
    assert decisions.tier1_due_at(e, cfg, 8.0) == 108.25  # ...or the stretched interval, typing on


def test_quiet_counts_from_the_last_edit_and_paragraphs_settle_after_the_settle_time() -> None:
    e = essay()
    assert decisions.until_quiet(e, 5.0, 2.0) == 0.0  # never typed here: quiet since the clock's zero
    Typist(e).type("Words ", at=50.0)
    assert decisions.until_quiet(e, 50.5, 2.0) == 1.5
    assert decisions.until_quiet(e, 52.0, 2.0) == 0.0
    assert not decisions.paragraphs_settled(e, 64.9, CFG) and decisions.paragraphs_settled(e, 65.0, CFG)


def test_an_analysis_of_the_text_the_feedback_already_describes_is_needed_only_with_the_llm_or_forced() -> None:
    e = essay()
    e.take_feedback([], "Some text. ")
    assert not decisions.analysis_needed(e, "Some text. ", run_llm=False, force=False)
    assert decisions.analysis_needed(e, "Some text. ", run_llm=True, force=False)
    assert decisions.analysis_needed(e, "Some text. ", run_llm=False, force=True)
    assert decisions.analysis_needed(e, "Some text. More ", run_llm=False, force=False)


def test_a_dashboard_row_is_due_when_changed_and_a_second_after_the_last() -> None:
    e = essay(class_id=uuid.uuid4())
    assert not decisions.row_due(e, 10.0, CFG)  # nothing changed
    assert e.row_changed()
    assert decisions.row_due(e, 10.0, CFG)
    e.row_published(10.0)
    e.row_changed()
    assert not decisions.row_due(e, 10.5, CFG) and decisions.row_due(e, 11.0, CFG)
    assert not essay().row_changed()  # no class: no row


def test_a_store_is_due_for_changed_feedback_many_updates_or_a_pause() -> None:
    e = essay()
    assert not decisions.compaction_due(e, 0.0, CFG)
    e.take_feedback([], "x")  # the same (empty) set: nothing to store
    assert not decisions.compaction_due(e, 0.0, CFG)
    e.feedback_dirty = True
    assert decisions.compaction_due(e, 0.0, CFG)
    e = essay()
    typist = Typist(e)
    for i in range(4):
        typist.type(f"w{i} ", at=10.0 + i * 0.1)
    assert not decisions.compaction_due(e, 10.4, CFG)  # typing, 4 updates past the snapshot
    assert decisions.compaction_due(e, 12.3, CFG)  # paused for compact_idle_seconds
    typist.type("w4 ", at=12.5)
    assert decisions.compaction_due(e, 12.5, CFG)  # compact_every updates, typing or not


def test_a_revision_is_due_every_few_minutes_of_changes_and_a_snapshot_when_anything_is_new() -> None:
    e = essay()
    Typist(e).type("First ", at=0.0)
    assert decisions.revision_due(e, 0.0, CFG)  # loaded without one: the first store makes one
    assert decisions.snapshot_due(e, revision=False)
    assert e.stored(e.seq, revision=True, now=1.0)  # saved something new
    assert not decisions.snapshot_due(e, revision=False)
    assert not decisions.revision_due(e, 500.0, CFG)  # nothing typed since
    Typist(e).type("second ", at=2.0)
    assert not decisions.revision_due(e, 180.0, CFG) and decisions.revision_due(e, 181.0, CFG)
    assert e.stored(e.seq, revision=False, now=3.0)  # a periodic store: the revision stays due
    assert decisions.revision_due(e, 181.0, CFG)
    assert not decisions.snapshot_due(e, revision=False)
    assert decisions.snapshot_due(e, revision=True)  # a forced revision writes a snapshot too


def test_an_essay_unloads_after_the_idle_time_with_no_socket_and_only_once_stored() -> None:
    e = essay()
    e.attach("node-a")
    assert not decisions.should_unload(e, 1e6, CFG)  # a socket keeps it
    e.detach("node-a", now=100.0)
    assert e.socket_nodes == {} and e.connections == 0
    assert not decisions.should_unload(e, 399.0, CFG) and decisions.should_unload(e, 400.0, CFG)
    Typist(e).type("late ", at=350.0)  # a REST write counts as activity
    assert not decisions.should_unload(e, 400.0, CFG) and decisions.should_unload(e, 650.0, CFG)
    assert not decisions.can_evict(e)  # its update is not in a snapshot yet
    e.stored(e.seq, revision=False, now=650.0)
    assert decisions.can_evict(e)
    e.attach(None)
    assert not decisions.can_evict(e)


def test_an_essay_is_at_rest_when_stored_published_and_open() -> None:
    e = essay(class_id=uuid.uuid4())
    assert not decisions.at_rest(e)  # no socket: a tick may unload it
    e.attach(None)
    assert decisions.at_rest(e)
    e.row_changed()
    assert not decisions.at_rest(e)
    e.row_published(0.0)
    Typist(e).type("x", at=0.0)
    assert not decisions.at_rest(e)

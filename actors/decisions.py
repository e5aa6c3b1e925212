"""What an essay host decides, as pure functions of one essay's state, the host's tunables and
the time.

`now` is the host's monotonic clock (seconds); nothing here reads a clock, sleeps, awaits or
writes: the host, `actors.scheduler` and `actors.compactor` ask, then act. Tests pass any `now`.
"""

from __future__ import annotations

from actors.config import HostConfig
from actors.essay import LiveEssay


def quiet_for(essay: LiveEssay, now: float) -> float:
    """Seconds since the essay's text last changed (since the clock's zero if it never did here)."""
    return now - (essay.last_edit_at or 0.0)


def until_quiet(essay: LiveEssay, now: float, pause: float) -> float:
    """Seconds until nothing will have been typed for `pause` seconds; 0 once that is so."""
    return max(0.0, pause - quiet_for(essay, now))


def tier1_due_at(essay: LiveEssay, config: HostConfig, interval: float | None = None) -> float:
    """When tier 1 (local rules) may next run for an essay typed in since its last run: once the
    student pauses for `local_pause_seconds`, and at most once per `local_min_interval` while
    typing goes on.

    `interval`: that interval stretched while the host is busy (`actors.pacing.Tier1Pacing`).
    It holds back only the reruns while typing goes on: a student quiet for `local_stop_seconds`
    has stopped, and gets tier 1 then (or at `local_min_interval`, if that is later)."""
    last_edit = essay.last_edit_at or 0.0
    due = max(last_edit + config.local_pause_seconds, essay.last_local_run + config.local_min_interval)
    if interval is not None and interval > config.local_min_interval:
        due = max(due, min(essay.last_local_run + interval, last_edit + config.local_stop_seconds))
    return due


def tier1_due(essay: LiveEssay, now: float, config: HostConfig, interval: float | None = None) -> bool:
    return now >= tier1_due_at(essay, config, interval)


def analysis_needed(essay: LiveEssay, text: str, *, run_llm: bool, force: bool) -> bool:
    """Whether an analysis of `text` (the settled text) has anything new to do: a tier-1 run
    whose text is the one the current feedback describes does not (only the word still being
    typed changed)."""
    return run_llm or force or text != essay.analyzed_text


def paragraphs_settled(essay: LiveEssay, now: float, config: HostConfig) -> bool:
    """Whether the student stopped for `llm_settle_seconds`: the paragraph still being written
    goes to the LLM too (before that the LLM holds `active_paragraphs`)."""
    return quiet_for(essay, now) >= config.llm_settle_seconds


def row_due(essay: LiveEssay, now: float, config: HostConfig) -> bool:
    """The dashboard row changed and none went out for `class_row_interval` (about one a second)."""
    return essay.class_dirty and now - essay.last_class_publish >= config.class_row_interval


def at_rest(essay: LiveEssay) -> bool:
    """Nothing for a host tick to do: stored, row published, and a socket keeps it loaded."""
    return (essay.seq <= essay.watermark and not essay.feedback_dirty and not essay.class_dirty
            and essay.connections > 0)


def should_unload(essay: LiveEssay, now: float, config: HostConfig) -> bool:
    """No document socket, and neither a socket nor typing for `unload_idle_seconds`: store it
    and let it go (it unloads once the store leaves nothing unsaved, see `can_evict`)."""
    idle_since = max(essay.idle_since, essay.last_edit_at or 0.0)
    return essay.connections == 0 and now - idle_since >= config.unload_idle_seconds


def can_evict(essay: LiveEssay) -> bool:
    """Still nothing open and everything stored (a socket or an update may have come meanwhile)."""
    return essay.connections == 0 and essay.seq == essay.watermark


def compaction_due(essay: LiveEssay, now: float, config: HostConfig) -> bool:
    """Whether a tick should store the essay: its feedback changed, or updates past the
    snapshot's watermark number `compact_every`, or typing paused for `compact_idle_seconds`."""
    if essay.seq <= essay.watermark:
        return essay.feedback_dirty
    quiet = essay.last_edit_at is None or now - essay.last_edit_at >= config.compact_idle_seconds
    return essay.seq - essay.watermark >= config.compact_every or quiet


def revision_due(essay: LiveEssay, now: float, config: HostConfig) -> bool:
    """Whether a store should also freeze a revision: the text moved since the last one, which
    is `revision_every_seconds` old (or there is none since the essay was loaded without one)."""
    return essay.seq > essay.revision_seq and (
        essay.last_revision_at is None or now - essay.last_revision_at >= config.revision_every_seconds)


def snapshot_due(essay: LiveEssay, *, revision: bool) -> bool:
    """Whether a store writes a snapshot (and its revision, when `revision`): there are updates
    past the watermark, or a revision is due. Otherwise only the feedback set may be."""
    return essay.seq > essay.watermark or revision

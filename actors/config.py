"""Plain configuration values for the actors layer, filled by the shells in serve_app.

Imports flow one way, db <- actors <- serve_app (pyproject's import-linter contract): the
Gateway's `serve_app.settings.Settings` reads the environment once per process and builds these
(`Settings.host_config()`, `.bus_config()`, `.analysis_config()`, `.host_shell_config()`;
`serve_app.jobs_wiring` fills `RunnerConfig`); code
in actors/ receives them and never imports the settings. Plain dataclasses of the standard
library only: Ray pickles a HostShellConfig into a host actor, which builds everything from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from db.crypto import Keyring

AIProvider = Literal["local", "openai"]


@dataclass
class HostConfig:
    """An essay host's tunables: feedback pauses, compaction, revisions, unloading, limits."""

    large_paste_chars: int = 200
    local_pause_seconds: float = 0.25
    # A student who types one update every half second "pauses" after each: tier 1 then reruns
    # at most once per this interval (still within `local_pause_seconds` of a real pause that
    # comes later than that), not after every update. 2 s, not 1: tier 1 was a fifth of a
    # host's CPU at 1,000 typists, and 2 s halves it (ops/loadtest/host_bench.py: 0.44 -> 0.38
    # ms of CPU per update); the rules' findings about a sentence being typed wait a second more.
    local_min_interval: float = 2.0
    # While the host is busy (`actors.pacing.Tier1Pacing`: its event loop's thread over
    # `tier1_busy_cpu_share` of a core, or its timers over `tier1_busy_lag_seconds` late, both
    # smoothed over a second) the interval above stretches, up to this: typing and acks come
    # before analysis. A student quiet for `local_stop_seconds` has stopped, not paused between
    # two words, and gets tier 1 then (`actors.decisions.tier1_due_at`), stretched or not.
    # Off unless `tier1_pacing` (a switch, so that lowering the min never turns it on): in an
    # alternated A/B at 300 continuous typists (2026-12-07 17:01-17:20 UTC, ops/loadtest/RESULTS.md
    # "Reruns 41-44") every run with pacing on (8 s max) had one ack stall of ~0.9-1.0 s (3 of 3)
    # and none without it (0 of 4, worst 193 ms); the cause is not found yet.
    tier1_pacing: bool = False
    local_max_interval: float = 8.0
    tier1_busy_cpu_share: float = 0.5
    tier1_busy_lag_seconds: float = 0.005
    local_stop_seconds: float = 1.0
    llm_pause_seconds: float = 2.0
    # The paragraph being written goes to the LLM once the student leaves it or stops for this long,
    # not after every sentence: that keeps tokens near one call per finished paragraph.
    llm_settle_seconds: float = 15.0
    compact_every: int = 200
    compact_idle_seconds: float = 2.0
    revision_every_seconds: float = 180.0
    unload_idle_seconds: float = 300.0
    tick_seconds: float = 0.25
    class_row_interval: float = 1.0
    commit_interval: float = 0.004
    # Live writes (sockets and REST alike) are refused beyond these: the text's length, and the
    # bytes of its update log, which is never pruned (replay needs it) and is replayed on load.
    max_essay_chars: int = 200_000
    max_log_bytes: int = 64 * 1024 * 1024
    # An essay host's lease on each essay it holds (actors.leases): renewed every third of this,
    # taken over by another host once it has run out (a host that stopped renewing: hung, cut off).
    lease_seconds: float = 30.0
    # SQLite: a group commit's COMMIT (the WAL fsync) and compaction batches run off the event loop.
    sqlite_commit_in_thread: bool = True


@dataclass(frozen=True, slots=True)
class BusConfig:
    """Which event bus a process uses (`actors.broadcast.make_bus`): Redis when `redis_url` is
    set, else the in-Ray hub (named actors in `ray_namespace`) or an in-process bus."""

    redis_url: str | None = None
    ray_namespace: str = "essaycoach"
    # Messages waiting in a bus outbox or in the hub for one subscriber (oldest dropped beyond).
    queue_max_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class AnalysisConfig:
    """The analysis provider and token budgets (`actors.analysis.service.build_engine`)."""

    provider: AIProvider = "local"
    base_url: str = "https://api.openai.com/v1"
    api_key: str = field(default="", repr=False)
    model: str = "gpt-4o-mini"
    token_budget_per_essay: int = 50_000
    token_budget_per_class: int = 2_000_000
    # ESSAYCOACH_ANALYSIS_PROCESS: big local-analysis jobs run in one rules-worker process per host
    # process (actors/analysis/worker.py), off the GIL of the host's event loop.
    process: bool = False

    def local_only(self) -> AnalysisConfig:
        """The same budgets with the local rules only (tier 1 never calls the LLM)."""
        return replace(self, provider="local")


@dataclass(frozen=True, slots=True)
class HostShellConfig:
    """Everything an essay host's Ray shell (`actors.ray_host.EssayHostShell`) builds its host from."""

    database_url: str
    bus: BusConfig
    host: HostConfig
    analysis: AnalysisConfig
    # The Serve app whose Analyzer deployment the host calls (in-process engine when absent).
    serve_app_name: str = "essaycoach"
    # ESSAYCOACH_DATA_KEY / _DATA_KEYS_OLD: the host's engine seals essay text with them (db/crypto.py).
    data_key: str = field(default="", repr=False)
    data_keys_old: str = field(default="", repr=False)
    # ESSAYCOACH_HOST_NICE: the host's nice value, at least (actors.process_tuning.lower_priority).
    nice: int = 0

    def keyring(self) -> Keyring | None:
        return Keyring.parse(self.data_key, self.data_keys_old)


@dataclass(frozen=True)
class RunnerConfig:
    """The submissions job runner's tunables (`serve_app.jobs.SubmissionRunner`)."""

    max_attempts: int = 3
    lease_seconds: float = 60.0
    poll_seconds: float = 0.5
    concurrency: int = 4
    retry_backoff_seconds: float = 2.0
    delivery_concurrency: int = 8
    # Tokens a requester may spend per UTC day across all processes (None: unlimited).
    user_tokens_per_day: int | None = None

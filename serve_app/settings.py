"""Process settings, read once at each entry point and passed down (never at import time).

Every variable has the prefix ``ESSAYCOACH_``. The defaults are the embedded mode: a SQLite file
under ``var/``, the in-Ray event hub instead of Redis, the local analysis provider. Dev mode
(``DEV_MODE``, off unless ``essaycoach run --dev``) adds a JWT secret generated once and kept in
``var/jwt_secret`` so restarts and all replicas agree, and webhook callbacks to private addresses.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from actors.config import AnalysisConfig, BusConfig, HostConfig, HostShellConfig
from db.crypto import Keyring

ROOT = Path(__file__).resolve().parent.parent
# Hosts and the bus hub are named actors in this namespace, whichever namespace their caller is in
# (Serve replicas run in "serve").
RAY_NAMESPACE = "essaycoach"


class Settings(BaseSettings):
    """All configuration of one process; see the README for what each variable means."""

    model_config = SettingsConfigDict(env_prefix="ESSAYCOACH_", extra="ignore")

    # Production-safe by default. `essaycoach run --dev` (what `make run` uses) turns it on: a JWT
    # secret generated into var/ and webhook callbacks to private addresses.
    dev_mode: bool = False
    var_dir: Path = ROOT / "var"
    database_url: str = ""
    # Encryption at rest of essay text and update logs (db/crypto.py, README "Privacy"): base64 of
    # 32 random bytes (`essaycoach data-key new`); old keys, comma-separated, stay readable.
    data_key: str = Field(default="", repr=False)
    data_keys_old: str = Field(default="", repr=False)
    redis_url: str | None = None
    jwt_secret: str = ""
    jwt_issuer: str = "essaycoach"
    jwt_audience: str = "essaycoach-api"
    access_token_seconds: int = 15 * 60
    refresh_token_seconds: int = 14 * 24 * 3600
    refresh_absolute_seconds: int = 30 * 24 * 3600
    ws_ticket_seconds: int = 60

    ai_provider: Literal["local", "openai"] = "local"
    ai_base_url: str = "https://api.openai.com/v1"
    ai_api_key: str = ""
    ai_model: str = "gpt-4o-mini"
    ai_token_budget_per_essay: int = 50_000
    ai_token_budget_per_class: int = 2_000_000
    # Big local-analysis jobs in one rules-worker process per host process (README "Configuration").
    analysis_process: bool = True
    # Tokens one user's submissions may spend per UTC day, counted from stored usage (0: no limit).
    ai_token_budget_per_user_per_day: int = Field(default=500_000, ge=0)
    # POST /submissions and POST /essays/{id}/submit per user: a bucket of this size refilled
    # evenly over an hour (serve_app/ratelimit.py).
    submissions_per_user_per_hour: int = Field(default=30, ge=1)
    # Coach chat questions per user (POST /essays/{id}/coach): a bucket of this size refilled
    # evenly over an hour, shared by replicas like the submissions bucket.
    coach_questions_per_user_per_hour: int = Field(default=60, ge=1)
    # GET /me/export per user (each reads every row of the user's).
    exports_per_user_per_hour: int = Field(default=10, ge=1)
    # POST /essays/import per user: each is a parse of up to MAX_UPLOAD_BYTES / MAX_UPLOAD_PAGES.
    imports_per_user_per_hour: int = Field(default=30, ge=1)

    # Essay host actors (the routing modulus). 0: one on SQLite, which has a single writer (two
    # host processes made each other wait in SQLite's busy handler), two on PostgreSQL.
    hosts: int = Field(default=0, ge=0, le=1024)
    # Custom Ray resources each essay host actor asks for, e.g. {"essay_host": 0.01} to keep the
    # hosts on the worker nodes that offer "essay_host" (JSON in the environment). Hosts ask for no
    # CPU and are spread over the nodes that can take them (Ray's SPREAD), so losing one node
    # restarts only its share of the hosts.
    host_resources: dict[str, float] = Field(default_factory=dict)
    max_essay_chars: int = 200_000
    max_essay_log_bytes: int = 64 * 1024 * 1024
    replay_max_bytes: int = 8 * 1024 * 1024
    max_body_bytes: int = 2 * 1024 * 1024
    # File uploads (POST .../import): the file's bytes, and a PDF's pages (serve_app/uploads.py).
    max_upload_bytes: int = 10 * 1024 * 1024
    max_upload_pages: int = 200
    max_ws_message_bytes: int = 1024 * 1024
    ws_messages_per_second: float = 60.0
    ws_burst: int = 200
    # Bounds a hostile or stalled client cannot push past (README "Live sockets"): bytes queued for
    # one socket (close 1013 beyond), one awareness message (close 1009 beyond), open sockets per
    # user on one replica (close 4429 beyond), tickets issued per user per minute (429 beyond).
    # The socket and ticket caps are sized to the web app (web/src): a view holds at most two
    # sockets (the editor and a review: the essay's doc and events; a teacher's live class: live,
    # plus class docs, one socket for the whole class, when its text is shown; an essay left with
    # unacknowledged edits keeps its two until they are acked), so a teacher watching a class with
    # five essays open in other tabs holds 12 and a student with four tabs 8; 32 is 16 such tabs
    # of one account on one replica. Every (re)connect takes a ticket: 64 a minute let all 32
    # reconnect at once (a Gateway restart) and each try once more. A hostile account within them
    # costs the Gateway half of what the previous 64 sockets and 120 tickets a minute did.
    ws_outbound_max_bytes: int = Field(default=4 * 1024 * 1024, ge=64 * 1024)
    ws_awareness_max_bytes: int = Field(default=4096, ge=64)
    ws_max_sockets_per_user: int = Field(default=32, ge=1)
    ws_tickets_per_user_per_minute: int = Field(default=64, ge=1)
    # Socket handshakes (ticket, user, essay or class: store work on the replica's loop) under
    # way at once per replica; more wait their turn (serve_app.realtime.limits.SocketAdmission).
    ws_handshakes_at_once: int = Field(default=8, ge=1)
    # Messages waiting in a bus outbox or in the hub for one subscriber (oldest dropped beyond;
    # the affected channels' sockets resync).
    bus_queue_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    # Spent/expired socket tickets and expired refresh tokens are deleted this often.
    store_purge_interval_seconds: float = Field(default=600.0, gt=0)
    # Threads (0: one per usable core) for CPU-heavy request work (argon2, uploads, replay texts),
    # each at a lower priority than the event loop's (serve_app.cpu_work).
    cpu_work_threads: int = Field(default=0, ge=0, le=256)
    # permessage-deflate on sockets: off, because Yjs frames are a few bytes (see
    # serve_app.fastpath.uvicorn_config); applies to the fast path's servers only.
    ws_compression: bool = False
    # Our hooks into Serve's and uvicorn's internals (serve_app/fastpath: the module doc names
    # them); off: plain Serve (and Serve's default proxy under `essaycoach run`).
    fast_path: bool = True
    large_paste_chars: int = 200
    feedback_local_pause_seconds: float = 0.25
    # Tier 1 reruns at most this often per essay while the student keeps typing with short gaps
    # (see HostConfig.local_min_interval).
    feedback_local_min_interval_seconds: float = 2.0
    # While the host's event loop is busy (smoothed over a second: its thread over this share of
    # a core, or its timers over this lag) that interval stretches up to the max: typing and
    # acks come before analysis (actors/pacing.py). A student quiet for the stop time still
    # gets tier 1 then. Off unless FEEDBACK_TIER1_PACING (see HostConfig.tier1_pacing).
    feedback_tier1_pacing: bool = False
    feedback_local_max_interval_seconds: float = 8.0
    feedback_busy_cpu_share: float = Field(default=0.5, gt=0)
    feedback_busy_lag_ms: float = Field(default=5.0, gt=0)
    feedback_local_stop_seconds: float = 1.0
    feedback_llm_pause_seconds: float = 2.0
    feedback_llm_settle_seconds: float = 15.0
    # Group commit of the update log: rows gathered for this long go in one transaction. Every
    # ack waits for its commit, so this is a floor under ack latency, and each commit costs CPU.
    commit_interval_ms: float = Field(default=4.0, gt=0, le=1000)
    # SQLite: COMMIT (the WAL fsync) in a thread of its own, not on the host's event loop (see
    # `db.engine.SqliteWriter`); false puts it back inline, for A/B runs on a given machine.
    sqlite_commit_in_thread: bool = True
    # How long an essay host's lease on an essay lasts unrenewed (renewed every third of it): after
    # a host hangs or is cut off, the longest its essays wait before another host may load them.
    host_lease_seconds: float = Field(default=30.0, ge=3, le=3600)
    # The essay hosts' nice value (at least; the Gateway runs at Ray's worker niceness, 0 under
    # `essaycoach run`). 0 by default: at 300 typists a host at 10 gained nothing once the Gateway
    # ran at 0, and at 1,000 (a saturated machine) it starved the host's commits (ack p99 465 ms
    # against 356 at 0); actors.process_tuning.lower_priority has the measurements.
    host_nice: int = Field(default=0, ge=0, le=19)
    # The time slice (ms) the Gateway replicas' threads and Serve's HAProxy ask the kernel for
    # (EEVDF, Linux 6.12+); 0: the kernel's default. actors.process_tuning.set_time_slice says why.
    latency_slice_ms: float = Field(default=0.0, ge=0, le=100)

    # Proxies whose X-Forwarded-For is believed (comma-separated CIDRs); empty: the TCP peer is
    # the client (serve_app/client_address.py says why that is the default).
    trusted_proxies: str = ""
    # Failed logins drain from a bucket per account and one per client address (serve_app/ratelimit.py).
    login_account_failure_burst: int = Field(default=5, ge=1)
    login_account_failure_drain_seconds: float = Field(default=60.0, gt=0)
    login_ip_failure_burst: int = Field(default=100, ge=1)
    login_ip_failure_drain_seconds: float = Field(default=6.0, gt=0)

    gateway_replicas_min: int = 1
    gateway_replicas_max: int = 4
    http_host: str = "127.0.0.1"
    # The built browser app (Vite's output) the Gateway serves at `/` (serve_app.web).
    web_dist: Path = ROOT / "web" / "dist"
    http_port: int = 8000
    # `essaycoach run`: how long a stop (SIGINT, SIGTERM) may take before what is left is killed.
    shutdown_seconds: float = Field(default=30.0, gt=0)
    # Serve's HAProxy stats page and Prometheus exporter: off (0) unless given a port, and then
    # bound to `haproxy_monitor_host` (Serve binds them on every interface at 8404 and 9101).
    haproxy_stats_port: int = Field(default=0, ge=0, le=65535)
    haproxy_metrics_port: int = Field(default=0, ge=0, le=65535)
    haproxy_monitor_host: str = "127.0.0.1"
    # `essaycoach run` on one machine: the port of Ray's metrics export (every process's application
    # metrics in one scrape; actors/metrics.py). 0: HTTP_PORT + 1000 (9000 by default). On a
    # cluster it is `ray start --metrics-export-port` (KubeRay: 8080) instead.
    metrics_port: int = Field(default=0, ge=0, le=65535)
    ray_namespace: str = RAY_NAMESPACE
    serve_app_name: str = "essaycoach"

    # Submissions job runner and webhooks (serve_app/jobs.py, serve_app/webhooks.py).
    submission_max_attempts: int = Field(default=3, ge=1, le=20)
    submission_lease_seconds: float = Field(default=60.0, gt=0)
    submission_poll_seconds: float = Field(default=0.5, gt=0)
    submission_concurrency: int = Field(default=4, ge=1, le=64)
    # Webhooks are signed with each requester's own secret (GET/POST /api/v1/me/webhook-secret).
    # Allow callback URLs on private/loopback/link-local addresses; None: allowed only in dev mode.
    webhook_allow_private: bool | None = None
    # Deliveries run in their own pool, outside the submission jobs' slots.
    webhook_concurrency: int = Field(default=8, ge=1, le=256)
    webhook_max_attempts: int = Field(default=6, ge=1, le=20)
    webhook_backoff_seconds: float = Field(default=1.0, ge=0)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite+aiosqlite:///{self.var_dir / 'essaycoach.db'}"
        if not self.hosts:
            self.hosts = 1 if self.is_sqlite else 2
        if not self.jwt_secret:
            if not self.dev_mode:
                raise ValueError("ESSAYCOACH_JWT_SECRET is required outside dev mode")
            self.jwt_secret = _dev_secret(self.var_dir)
        if len(self.jwt_secret.encode()) < 32:
            raise ValueError("ESSAYCOACH_JWT_SECRET must be at least 32 bytes")
        self.trusted_proxy_networks  # noqa: B018 - a bad CIDR fails at start, not at the first login
        self.keyring  # noqa: B018 - and so does a bad data key
        return self

    @property
    def trusted_proxy_networks(self) -> tuple[Any, ...]:
        from serve_app.client_address import parse_networks

        try:
            return parse_networks(self.trusted_proxies)
        except ValueError as exc:
            raise ValueError(f"ESSAYCOACH_TRUSTED_PROXIES: {exc}") from None

    @property
    def keyring(self) -> Keyring | None:
        """The data keys (None: essay text is stored as plaintext)."""
        return Keyring.parse(self.data_key, self.data_keys_old)

    # The actors layer's plain config values (actors/config.py); actors never import these settings.
    def host_config(self) -> HostConfig:
        """The essay hosts' tunables from these settings."""
        return HostConfig(large_paste_chars=self.large_paste_chars,
                          local_pause_seconds=self.feedback_local_pause_seconds,
                          local_min_interval=self.feedback_local_min_interval_seconds,
                          tier1_pacing=self.feedback_tier1_pacing,
                          local_max_interval=self.feedback_local_max_interval_seconds,
                          tier1_busy_cpu_share=self.feedback_busy_cpu_share,
                          tier1_busy_lag_seconds=self.feedback_busy_lag_ms / 1000,
                          local_stop_seconds=self.feedback_local_stop_seconds,
                          llm_pause_seconds=self.feedback_llm_pause_seconds,
                          llm_settle_seconds=self.feedback_llm_settle_seconds,
                          commit_interval=self.commit_interval_ms / 1000,
                          max_essay_chars=self.max_essay_chars, max_log_bytes=self.max_essay_log_bytes,
                          sqlite_commit_in_thread=self.sqlite_commit_in_thread,
                          lease_seconds=self.host_lease_seconds)

    def bus_config(self) -> BusConfig:
        return BusConfig(redis_url=self.redis_url, ray_namespace=self.ray_namespace,
                         queue_max_bytes=self.bus_queue_max_bytes)

    def analysis_config(self) -> AnalysisConfig:
        return AnalysisConfig(provider=self.ai_provider, base_url=self.ai_base_url, api_key=self.ai_api_key,
                              model=self.ai_model, token_budget_per_essay=self.ai_token_budget_per_essay,
                              token_budget_per_class=self.ai_token_budget_per_class,
                              process=self.analysis_process)

    def host_shell_config(self) -> HostShellConfig:
        """What an essay host's Ray shell is created with (pickled into the actor)."""
        return HostShellConfig(database_url=self.database_url, bus=self.bus_config(), host=self.host_config(),
                               analysis=self.analysis_config(), serve_app_name=self.serve_app_name,
                               data_key=self.data_key, data_keys_old=self.data_keys_old, nice=self.host_nice)

    @property
    def metrics_export_port(self) -> int:
        """Ray's metrics export port for a local cluster `essaycoach run` starts (`metrics_port`)."""
        if self.metrics_port:
            return self.metrics_port
        if self.http_port + 1000 > 65535:
            raise ValueError("set ESSAYCOACH_METRICS_PORT: HTTP_PORT + 1000 is not a port")
        return self.http_port + 1000

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def webhook_private_allowed(self) -> bool:
        return self.dev_mode if self.webhook_allow_private is None else self.webhook_allow_private


def _dev_secret(var_dir: Path) -> str:
    """Create the dev secret once; linking a finished temp file makes concurrent first starts agree."""
    var_dir.mkdir(parents=True, exist_ok=True)
    path = var_dir / "jwt_secret"
    if not path.exists():
        tmp = var_dir / f".jwt_secret.{os.getpid()}.{secrets.token_hex(4)}"
        tmp.write_text(secrets.token_urlsafe(48))
        tmp.chmod(0o600)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip()

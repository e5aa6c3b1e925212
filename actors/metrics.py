"""The metric catalogue: every application metric of EssayCoach Live, defined once, here.

Each metric is recorded in two places by the same call:

- **prometheus-client**, in the process's default registry. That is what a process shows by
  itself: `GET /metrics` on a Gateway replica, and everything at once when the whole service runs
  in one process (the tests' in-process app, `create_app()` under plain uvicorn), with no Ray.
- **Ray's metrics export** (`ray.util.metrics`), when the process is part of a Ray cluster (a
  Gateway or Analyzer replica, an essay host, the driver). Ray's per-node metrics agent gathers
  the application metrics of every worker process on its node and serves them on the node's
  metrics export port (`ray start --metrics-export-port`, KubeRay: 8080; `essaycoach run`:
  `ESSAYCOACH_METRICS_PORT`), each series labelled with its `WorkerId` and `NodeAddress`.
  One scrape of that port is the whole node: every Gateway replica, essay host and Analyzer
  replica; Prometheus finds the nodes of a cluster through the head's service discovery
  (`ops/prometheus/prometheus.yml`). Ray prefixes the names with `ray_`; the scrape config
  renames them back, so dashboards and alerts use the names below everywhere.

Why Ray's export rather than prometheus-client's multiprocess mode: the processes to gather are
Ray workers that Ray starts, restarts and places on nodes that come and go. Multiprocess mode
needs a shared directory per node that every process writes (`PROMETHEUS_MULTIPROC_DIR`, set
before each process starts and wiped between runs), an exporter process per node to read it, and
our own discovery of those exporters; it also has no live gauges across processes without
choosing a merge mode per gauge. Ray already runs an agent per node that does all of this, with
service discovery for the head, for KubeRay and for `make run` alike; what it cannot do is work
without Ray, which the first backend covers. Recording into both costs about 3 µs per call.

Names follow Prometheus conventions: `_total` counters, `_seconds` durations, base units.
Gauges are per process (sum or max them across `WorkerId` in queries, as each one's help says).

**Histograms reach Ray's export as three counters, gathered for up to a second.** Ray's
`Histogram` has only `observe`, one value per call: tags merged and checked and a call into the
core worker in the recording process (~2 µs), then, on the node's agent, one OpenTelemetry
record per observation, rebuilt from its bucket's midpoint. The ack and fan-out histograms alone
are ~1,000 observations a second on a Gateway at 300 continuous typists, on the loop that
forwards every keystroke. Gathering observations and replaying them later would still be one
call each, here and in the agent. So a histogram's Ray side is what a Prometheus histogram is
made of, kept by us: a counter
`<name>_bucket` with the histogram's labels plus `le` (cumulative, `+Inf` included, the `le`
values written as prometheus-client writes them), a counter `<name>_sum` and a counter
`<name>_count`. An observation adds to a per-bucket count and the sum in this process (~1 µs), and
the gathered counts go to Ray as a handful of increments per histogram and label set at most once
per `RAY_COUNTER_INTERVAL` (as counters do; `flush()` at once), whatever the rate. Ray's export
appends `_total` to a counter's name (`ray_essaycoach_ack_seconds_bucket_total`, `..._sum_total`,
`..._count_total`: `ray_exported_series`); both scrape configs in ops/prometheus drop it with the
`ray_` prefix, so Prometheus stores `essaycoach_ack_seconds_bucket{le=...}`, `_sum` and `_count`
exactly as from a histogram, and the dashboard's and alerts' `histogram_quantile` and
`_sum / _count` queries read them unchanged. It is truer than Ray's own histogram was: the sum is
the observed values' (Ray's agent summed bucket midpoints), and the buckets are sent largest
first, so a scrape that lands between two increments still sees `le` buckets that never decrease.
What a scrape of Ray's export lacks is the family's histogram TYPE line (it says counter), which
no query reads; and a bucket's series appears there only once an observation falls in it (Ray's
counter refuses an increment of 0), so for one `rate()` window after it appears that bucket
counts low. Observations are gathered without a lock: histograms and counters are recorded on
their process's event loop thread (every call site is); one recorded from another thread could
lose its Ray increment (never its prometheus-client one) to a flush running at that moment.
prometheus-client's side (`GET /metrics` of the process) is still recorded per
observation, at once, exactly.

Measured 2026-12-08 (2 CPUs, load 1.3-2.3, alternated old/new twice): one `observe` on an event
loop in a process connected to Ray, 2.49-2.55 µs -> 1.50-1.53 µs unlabelled, 3.66-3.73 ->
1.46-1.50 µs labelled (prometheus-client's own part is 0.73 µs; Ray's `Histogram.observe` alone
2.0 µs); what gathered goes in ~15 Ray increments per histogram and label set a second. In the
loadtest (300 continuous typists, 30 s, A B A B) the Gateway replica's CPU was 0.14/0.21 cores
before and 0.14/0.20 after, ack and fan-out p50/p99 unchanged within the runs' spread: ~1 ms of
CPU a second on a Gateway, below what that run resolves. Ray's metrics agent (DashboardAgent)
went from 0.02/0.03 to 0.01/0.01 cores: it no longer replays each observation.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client import Counter as PromCounter
from prometheus_client import Gauge as PromGauge
from prometheus_client import Histogram as PromHistogram
from prometheus_client.utils import floatToGoString

log = logging.getLogger("essaycoach.metrics")

_format_le: Callable[[float], str] = floatToGoString  # a bucket's `le` as prometheus-client writes it

Kind = Literal["counter", "gauge", "histogram"]

LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
SLOW_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric: its exported name, type, help text, label names and (histograms) buckets."""

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()


RAY_COUNTER_INTERVAL = 1.0
"""Seconds a counter's increments, or a histogram's observations, may gather before they go to
the Ray twin in one record (a histogram: one increment per bucket it moved, its sum and count).

Counters on the typing path count every update (updates, their bytes, bus deliveries: three a
typed update on a Gateway replica), and a record into `ray.util.metrics` (tags merged and
checked, then a call into Ray's core worker) cost more than the rest of the metric call; the
prometheus-client side still counts each one at once. Ray's agent reads its workers' metrics
every few seconds, so a second's gathering changes nothing a scrape of it sees beyond that
second. What gathered goes within the interval on its own (`_flush_later`); `flush()` sends it at once."""

_now = time.monotonic  # the clock of `RAY_COUNTER_INTERVAL` (tests replace it)
_UNSENT: set[_Child] = set()
"""Counters and histograms holding what their Ray twin has not been given yet."""


class _Child:
    """A metric with its label values bound: records into prometheus-client at once and, inside a
    Ray cluster, into the `ray.util.metrics` twin (counters and histograms: gathered up to
    `RAY_COUNTER_INTERVAL`; gauges at once)."""

    __slots__ = ("_metric", "_prom", "_tags", "_value", "_unsent", "_sent_at", "_bounds", "_counts", "_sum")

    def __init__(self, metric: Metric, values: tuple[str, ...]) -> None:
        self._metric = metric
        self._prom: Any = metric.prom.labels(*values) if values else metric.prom
        self._tags = dict(zip(metric.spec.labels, values, strict=True))
        self._value = 0.0  # gauges: Ray's gauge can only be set, so the value is kept here
        self._unsent = 0.0  # counters: increments the Ray twin has not been given yet
        self._sent_at = -math.inf
        # Histograms: observations the Ray twin has not been given yet, by bucket (the last: +Inf).
        self._bounds = metric.spec.buckets
        self._counts = [0] * (len(self._bounds) + 1)
        self._sum = 0.0

    def inc(self, amount: float = 1.0) -> None:
        if self._metric.spec.kind == "gauge":
            self.set(self._value + amount)
            return
        self._prom.inc(amount)
        if amount <= 0:  # Ray's counter refuses 0 (e.g. a call that used no tokens)
            return
        self._unsent += amount
        self._gathered()

    def observe(self, value: float) -> None:
        self._prom.observe(value)
        self._counts[bisect.bisect_left(self._bounds, value)] += 1  # `le` is inclusive
        self._sum += value
        self._gathered()

    def _gathered(self) -> None:
        now = _now()
        if now - self._sent_at >= RAY_COUNTER_INTERVAL:
            self._send(now)
        else:
            _UNSENT.add(self)
            _flush_later()

    def _send(self, now: float) -> None:
        self._sent_at = now
        _UNSENT.discard(self)
        if self._metric.spec.kind == "histogram":
            counts, self._counts = self._counts, [0] * len(self._counts)
            total, self._sum = self._sum, 0.0
            twin = self._metric.ray_twin()
            if twin is not None:
                twin.record(self._tags, counts, total)
            return
        amount, self._unsent = self._unsent, 0.0
        twin = self._metric.ray_twin()
        if twin is not None and amount > 0:
            twin.inc(amount, tags=self._tags)

    def dec(self, amount: float = 1.0) -> None:
        self.set(self._value - amount)

    def set(self, value: float) -> None:
        self._value = value
        self._prom.set(value)
        twin = self._metric.ray_twin()
        if twin is not None:
            twin.set(value, tags=self._tags)


def flush() -> None:
    """Give every counter's and histogram's gathered records to its Ray twin now (a process's
    last act, when it stops: what gathered in its last second would be lost)."""
    now = _now()
    for child in list(_UNSENT):
        child._send(now)


_flush_timer: asyncio.TimerHandle | None = None
_flush_loop: asyncio.AbstractEventLoop | None = None


def _flush_later() -> None:
    """Have the running event loop `flush` once `RAY_COUNTER_INTERVAL` from now (one timer per
    process at a time), so a counter or histogram that stopped moving still reaches Ray's export in full, in
    every process that counts (Gateway, host, Analyzer replica) with nothing to start or stop.
    Off a loop (a worker thread) the next increment on the loop, or `flush`, sends it."""
    global _flush_timer, _flush_loop
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    if _flush_timer is not None and _flush_loop is loop and not _flush_timer.cancelled() and not loop.is_closed():
        return  # already due on this loop (a timer left on a closed loop never runs: replace it)
    _flush_loop, _flush_timer = loop, loop.call_later(RAY_COUNTER_INTERVAL, _flush_due)


def _flush_due() -> None:
    global _flush_timer
    _flush_timer = None
    flush()


class Metric:
    """A catalogue entry, live: `labels(*values)` binds label values (cached), and an unlabelled
    metric records directly (`inc`, `dec`, `set`, `observe`)."""

    def __init__(self, spec: MetricSpec, registry: CollectorRegistry) -> None:
        self.spec = spec
        if spec.kind == "counter":
            self.prom: Any = PromCounter(spec.name, spec.help, spec.labels, registry=registry)
        elif spec.kind == "gauge":
            self.prom = PromGauge(spec.name, spec.help, spec.labels, registry=registry)
        else:
            self.prom = PromHistogram(spec.name, spec.help, spec.labels, registry=registry, buckets=spec.buckets)
        self._children: dict[tuple[str, ...], _Child] = {}
        self._twin: Any = None
        self._twin_session: object = None
        self._root = None if spec.labels else _Child(self, ())

    def labels(self, *values: str) -> _Child:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = _Child(self, tuple(str(v) for v in values))
        return child

    def _unlabelled(self) -> _Child:
        if self._root is None:
            raise ValueError(f"{self.spec.name} has labels {self.spec.labels}: call labels() first")
        return self._root

    def inc(self, amount: float = 1.0) -> None:
        self._unlabelled().inc(amount)

    def dec(self, amount: float = 1.0) -> None:
        self._unlabelled().dec(amount)

    def set(self, value: float) -> None:
        self._unlabelled().set(value)

    def observe(self, value: float) -> None:
        self._unlabelled().observe(value)

    def ray_twin(self) -> Any:
        """The `ray.util.metrics` twin while this process is connected to a Ray cluster (made on
        the first record there, again after a new `ray.init`), else None."""
        worker = _ray_worker()
        if worker is None or not worker.connected:
            return None
        session = getattr(worker, "core_worker", None)  # a new one after ray.shutdown() + ray.init()
        if self._twin is None or self._twin_session is not session:
            self._twin, self._twin_session = _make_ray_metric(self.spec), session
        return self._twin


_WORKER: Any = None


def _ray_worker() -> Any:
    """Ray's per-process worker object once Ray is imported (never imports Ray itself: a process
    without it records into prometheus-client only)."""
    global _WORKER
    if _WORKER is None:
        ray = sys.modules.get("ray")
        worker_module = getattr(getattr(ray, "_private", None), "worker", None)
        _WORKER = getattr(worker_module, "global_worker", None)
    return _WORKER


def _make_ray_metric(spec: MetricSpec) -> Any:
    from ray.util import metrics as ray_metrics

    if spec.kind == "counter":
        return ray_metrics.Counter(spec.name, spec.help, tag_keys=spec.labels)
    if spec.kind == "gauge":
        return ray_metrics.Gauge(spec.name, spec.help, tag_keys=spec.labels)
    return RayHistogram(spec, ray_metrics.Counter)


class RayHistogram:
    """A histogram's Ray twin: the counters `<name>_bucket` (labels + `le`), `<name>_sum` and
    `<name>_count`, given gathered observations (`record`) a few increments at a time (why: the
    module's docstring). `counter` makes a `ray.util.metrics.Counter` (tests pass a fake)."""

    def __init__(self, spec: MetricSpec, counter: Any) -> None:
        self.le = tuple(_format_le(b) for b in spec.buckets) + ("+Inf",)
        self.bucket = counter(f"{spec.name}_bucket", spec.help, tag_keys=(*spec.labels, "le"))
        self.sum = counter(f"{spec.name}_sum", spec.help, tag_keys=spec.labels)
        self.count = counter(f"{spec.name}_count", spec.help, tag_keys=spec.labels)
        self._bucket_tags: dict[tuple[str, ...], list[dict[str, str]]] = {}

    def record(self, tags: dict[str, str], counts: Sequence[int], total: float) -> None:
        """Add observations gathered under `tags`: `counts[i]` fell in bucket i (not cumulative;
        the last is over every bound), `total` is their sum."""
        observed = sum(counts)
        if observed <= 0:
            return
        key = tuple(tags.values())
        by_le = self._bucket_tags.get(key)
        if by_le is None:
            by_le = self._bucket_tags[key] = [{**tags, "le": le} for le in self.le]
        self.count.inc(observed, tags=tags)
        # Largest `le` first: a scrape between two increments still sees buckets that never
        # decrease with `le` (what `histogram_quantile` needs); each bucket counts everything at or below it.
        cumulative = observed
        for i in range(len(counts) - 1, -1, -1):
            if cumulative <= 0:
                break
            self.bucket.inc(cumulative, tags=by_le[i])
            cumulative -= counts[i]
        if total > 0:  # Ray's counter refuses 0 (observations of 0: a fan-out age on a clock ahead)
            self.sum.inc(total, tags=tags)


CATALOGUE: tuple[MetricSpec, ...] = (
    # --- Gateway: HTTP, sockets, documents --------------------------------------------------
    MetricSpec("essaycoach_http_requests_total", "counter", "HTTP requests, by route template and status",
               ("method", "route", "status")),
    MetricSpec("essaycoach_http_request_seconds", "histogram", "HTTP request latency", ("method", "route"),
               LATENCY_BUCKETS),
    MetricSpec("essaycoach_ws_open", "gauge", "Open websockets on this Gateway replica, by kind (sum across replicas)",
               ("socket",)),
    MetricSpec("essaycoach_ws_closed_total", "counter", "Websockets closed by the server, by kind and close code",
               ("socket", "code")),
    MetricSpec("essaycoach_doc_updates_total", "counter", "Document updates received and acknowledged"),
    MetricSpec("essaycoach_doc_update_bytes_total", "counter",
               "Bytes of document updates acknowledged (the update log's growth)"),
    MetricSpec("essaycoach_ack_seconds", "histogram",
               "Document update received by the Gateway -> durable ack sent to its writer",
               buckets=LATENCY_BUCKETS),
    MetricSpec("essaycoach_fanout_seconds", "histogram",
               "Document or awareness message built (the writer's Gateway on receipt; the host after commit, for "
               "other replicas) -> handed to a socket's handler on the delivering replica (wall clocks)",
               buckets=LATENCY_BUCKETS),
    MetricSpec("essaycoach_auth_failures_total", "counter",
               "Authentication refused: bad credentials or tokens (HTTP 401), bad socket tickets; by code",
               ("code",)),
    MetricSpec("essaycoach_rate_limited_total", "counter",
               "Requests refused by a rate limit (HTTP 429), by route and code", ("route", "code")),
    MetricSpec("essaycoach_host_stream_reconnects_total", "counter",
               "A Gateway replica's stream to an essay host was lost and opened again"),
    MetricSpec("essaycoach_host_stream_resends_total", "counter",
               "Updates a Gateway replica sent to an essay host again after its stream reconnected"),
    # --- Essay hosts --------------------------------------------------------------------------
    MetricSpec("essaycoach_essays_open", "gauge", "Essays loaded in an essay host", ("host",)),
    MetricSpec("essaycoach_host_restarts_total", "counter",
               "Essay host actors started again by Ray after a failure (max_restarts)", ("host",)),
    MetricSpec("essaycoach_tier1_interval_seconds", "gauge",
               "Seconds between an essay's tier-1 runs while typing goes on (stretched while the host is busy)",
               ("host",)),
    MetricSpec("essaycoach_essays_moved_total", "counter",
               "Essays an essay host gave up: handed over to another host, or its lease lost (fenced)",
               ("host", "reason")),
    MetricSpec("essaycoach_commit_seconds", "histogram",
               "Group commit of the update log: batch taken -> committed (store retries included)",
               buckets=LATENCY_BUCKETS),
    MetricSpec("essaycoach_commit_batch_rows", "histogram", "Update-log rows per group commit", buckets=BATCH_BUCKETS),
    MetricSpec("essaycoach_store_errors_total", "counter",
               "Failed writes to the store (retried or refused), by operation", ("operation",)),
    # --- Bus ---------------------------------------------------------------------------------
    MetricSpec("essaycoach_bus_published_total", "counter", "Messages published on the bus, by backend", ("bus",)),
    MetricSpec("essaycoach_bus_delivered_total", "counter", "Bus messages handed to a local subscriber (a socket)"),
    MetricSpec("essaycoach_bus_dropped_total", "counter",
               "Bus messages lost (a sender's outbox overflowed, a batch failed, the in-Ray hub dropped "
               "a slow subscriber's oldest: hub_overflow); their channels resync", ("reason",)),
    # --- AI --------------------------------------------------------------------------------------
    MetricSpec("essaycoach_ai_calls_total", "counter", "LLM calls made (or refused by the circuit breaker)",
               ("provider",)),
    MetricSpec("essaycoach_ai_errors_total", "counter", "LLM calls that failed, by provider and error code",
               ("provider", "code")),
    MetricSpec("essaycoach_ai_tokens_total", "counter", "Tokens the LLM reported (or we estimated), by kind",
               ("provider", "kind")),
    MetricSpec("essaycoach_ai_call_seconds", "histogram", "LLM call latency (retries included)", ("provider",),
               SLOW_BUCKETS),
    MetricSpec("essaycoach_ai_budget_refusals_total", "counter",
               "LLM calls not made because a token budget was spent, by budget", ("scope",)),
    MetricSpec("essaycoach_rules_worker_fallbacks_total", "counter",
               "Local-analysis jobs a host's rules worker could not do, run in the host process instead: the "
               "worker died twice (worker_failed) or the job raised in it (job_error: a bug, see the host log)",
               ("reason",)),
    # --- Submissions and webhooks ----------------------------------------------------------------
    MetricSpec("essaycoach_submission_queue_depth", "gauge",
               "Submissions waiting to run (the shared queue, as this runner last saw it: take the max)"),
    MetricSpec("essaycoach_submission_queue_age_seconds", "gauge",
               "Age of the oldest submission waiting to run (0 when none; take the max)"),
    MetricSpec("essaycoach_webhook_deliveries_total", "counter", "Webhook deliveries finished, by outcome",
               ("outcome",)),
)

_LIVE: dict[str, Metric] = {}


def metric(name: str) -> Metric:
    """The live catalogue metric `name` (registered in the default registry on first use)."""
    live = _LIVE.get(name)
    if live is None:
        spec = next((s for s in CATALOGUE if s.name == name), None)
        if spec is None:
            raise KeyError(f"{name} is not in the metric catalogue (actors/metrics.py)")
        live = _LIVE[name] = Metric(spec, REGISTRY)
    return live


def register_all() -> None:
    """Register every catalogue metric now, so a scrape lists each one (labelled metrics with no
    samples yet show their HELP and TYPE) before anything recorded it."""
    for spec in CATALOGUE:
        metric(spec.name)


def names() -> list[str]:
    return [spec.name for spec in CATALOGUE]


def exported_series(spec: MetricSpec) -> Sequence[str]:
    """The sample names Prometheus stores for `spec` (what queries may use)."""
    if spec.kind == "histogram":
        return (f"{spec.name}_bucket", f"{spec.name}_sum", f"{spec.name}_count")
    return (spec.name,)


def ray_exported_series(spec: MetricSpec) -> Sequence[str]:
    """The sample names a scrape of Ray's export shows for `spec` (before the scrape configs in
    ops/prometheus rename them to `exported_series`): Ray prefixes `ray_`, and a histogram's parts
    are Ray counters, to which its export appends `_total`."""
    if spec.kind == "histogram":
        return tuple(f"ray_{name}_total" for name in exported_series(spec))
    return (f"ray_{spec.name}",)

"""The metric catalogue (actors/metrics.py), what records into it, and the ops files that read it."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from actors import broadcast
from actors import metrics as metrics_module
from actors.analysis.llm import TokenBudget
from actors.broadcast import (
    LocalFanout,
    Outbox,
    Published,
    doc_message,
    doc_message_age,
    observe_fanout,
    split_doc_message,
)
from actors.committer import GroupCommitter
from actors.metrics import (
    CATALOGUE,
    Metric,
    RayHistogram,
    exported_series,
    metric,
    names,
    ray_exported_series,
    register_all,
)
from tests.fakes import metric_value as value

ROOT = Path(__file__).resolve().parents[2]
NAME = re.compile(r"\bessaycoach_[a-z0-9_]+\b")




def exported() -> set[str]:
    return {series for spec in CATALOGUE for series in exported_series(spec)}


def test_catalogue_names_are_unique_prometheus_names_with_sorted_buckets() -> None:
    assert len(names()) == len(set(names()))
    for spec in CATALOGUE:
        assert re.fullmatch(r"essaycoach_[a-z0-9_]+", spec.name), spec.name
        assert spec.name.endswith("_total") == (spec.kind == "counter"), spec.name
        if spec.kind == "histogram":
            assert list(spec.buckets) == sorted(set(spec.buckets)) and spec.buckets[0] > 0, spec.name


def _dashboard_queries() -> list[str]:
    dashboard = json.loads((ROOT / "ops/grafana/essaycoach.json").read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


def _alert_queries() -> list[str]:
    rules = yaml.safe_load((ROOT / "ops/prometheus/alerts.yml").read_text())
    return [r["expr"] for g in rules["groups"] for r in g["rules"]]


def test_every_metric_the_dashboard_and_the_alerts_use_is_in_the_catalogue() -> None:
    used = {n for q in _dashboard_queries() + _alert_queries() for n in NAME.findall(q)}
    assert used and used <= exported(), sorted(used - exported())


def test_the_alerts_cover_what_operators_page_on() -> None:
    rules = yaml.safe_load((ROOT / "ops/prometheus/alerts.yml").read_text())
    by_name = {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"]}
    needs = {"EssayCoachAckLatencyHigh": "essaycoach_ack_seconds_bucket",
             "EssayCoachFanoutLatencyHigh": "essaycoach_fanout_seconds_bucket",
             "EssayCoachAIErrorRateHigh": "essaycoach_ai_errors_total",
             "EssayCoachTokenBudgetExhaustion": "essaycoach_ai_budget_refusals_total",
             "EssayCoachSubmissionBacklog": "essaycoach_submission_queue_age_seconds",
             "EssayCoachHostRestarted": "essaycoach_host_restarts_total",
             "EssayCoachStoreErrors": "essaycoach_store_errors_total"}
    for alert, series in needs.items():
        assert series in by_name[alert], alert


def test_the_dashboard_shows_every_catalogue_metric() -> None:
    used = {n for q in _dashboard_queries() for n in NAME.findall(q)}
    missing = [s.name for s in CATALOGUE if not set(exported_series(s)) & used]
    assert not missing, missing


def _relabelled(rules: list[dict[str, Any]], name: str) -> str:
    """`name` after Prometheus's metric_relabel_configs `rules` (replace actions on __name__, in order)."""
    for rule in rules:
        assert rule["source_labels"] == ["__name__"] and rule["target_label"] == "__name__"
        matched = re.fullmatch(rule["regex"], name)  # Prometheus anchors relabel regexes
        if matched:
            name = matched.expand(rule["replacement"].replace("$1", r"\1"))
    return name


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus-cluster.yml"])
def test_scrape_configs_rename_rays_exported_names_to_the_catalogues(config: str) -> None:
    scrape = yaml.safe_load((ROOT / "ops/prometheus" / config).read_text())
    assert scrape["rule_files"] == ["alerts.yml"]
    (job,) = scrape["scrape_configs"]
    rules = job["metric_relabel_configs"]
    assert _relabelled(rules, "ray_essaycoach_ack_seconds_bucket_total") == "essaycoach_ack_seconds_bucket"
    for spec in CATALOGUE:  # a histogram's parts are Ray counters (`_total` appended); counters keep theirs
        renamed = [_relabelled(rules, name) for name in ray_exported_series(spec)]
        assert renamed == list(exported_series(spec)), spec.name
    assert _relabelled(rules, "ray_serve_num_http_requests_total") == "ray_serve_num_http_requests_total"


def test_every_metric_recorded_in_the_code_is_in_the_catalogue() -> None:
    """`metric("...")` raises for an unknown name only when the line runs: find them all now."""
    calls = re.compile(r"metric\(\s*\"([^\"]+)\"\s*\)")
    used = {name for folder in ("actors", "serve_app") for path in (ROOT / folder).rglob("*.py")
            for name in calls.findall(path.read_text())}
    assert len(used) > 20 and used <= set(names()), sorted(used - set(names()))


def test_a_scrape_of_the_process_lists_every_catalogue_metric() -> None:
    register_all()
    text = generate_latest(REGISTRY).decode()
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    for spec in CATALOGUE:
        assert types.get(spec.name) == spec.kind, spec.name


def test_gauges_go_up_and_down_and_labelled_metrics_need_their_labels() -> None:
    gauge = metric("essaycoach_essays_open").labels("test-host-gauge")
    gauge.inc()
    gauge.inc(2)
    gauge.dec()
    assert value("essaycoach_essays_open", {"host": "test-host-gauge"}) == 2
    with pytest.raises(ValueError, match="labels"):
        metric("essaycoach_essays_open").inc()
    with pytest.raises(KeyError, match="catalogue"):
        metric("essaycoach_no_such_metric")


class FakeWorker:
    def __init__(self, connected: bool) -> None:
        self.connected = connected
        self.core_worker = object()


def test_rays_export_is_used_only_while_the_process_is_connected_to_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """(This test process may have joined a Ray cluster in an earlier test: the worker is faked.)"""
    updates = Metric(next(s for s in CATALOGUE if s.name == "essaycoach_doc_updates_total"), CollectorRegistry())
    monkeypatch.setattr(metrics_module, "_make_ray_metric", lambda spec: ("twin of", spec.name))
    monkeypatch.setattr(metrics_module, "_ray_worker", lambda: None)  # Ray never imported
    assert updates.ray_twin() is None
    worker = FakeWorker(connected=False)  # imported, not connected (before ray.init, after shutdown)
    monkeypatch.setattr(metrics_module, "_ray_worker", lambda: worker)
    assert updates.ray_twin() is None
    worker.connected = True
    first = updates.ray_twin()
    assert first == ("twin of", "essaycoach_doc_updates_total") and updates.ray_twin() is first
    worker.core_worker = object()  # ray.shutdown() and ray.init() again: a new twin for the new session
    assert updates.ray_twin() is not first


class FakeRayCounter:
    """What `ray.util.metrics.Counter` accepts: increments above 0, with every tag key."""

    def __init__(self) -> None:
        self.recorded: list[tuple[float, dict[str, str]]] = []

    def inc(self, value: float, tags: dict[str, str]) -> None:
        if value <= 0:
            raise ValueError(f"value must be >0, got {value}")
        self.recorded.append((value, tags))


def test_inside_ray_a_counter_sends_increments_above_zero_with_their_tags(monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = metric("essaycoach_ai_tokens_total")
    twin = FakeRayCounter()
    monkeypatch.setattr(tokens, "ray_twin", lambda: twin)
    before = value("essaycoach_ai_tokens_total", {"provider": "fake", "kind": "completion"})
    tokens.labels("fake", "completion").inc(0)  # an answer with no completion tokens
    tokens.labels("fake", "completion").inc(7)
    metrics_module.flush()  # what a busy counter gathered meanwhile
    assert twin.recorded == [(7, {"provider": "fake", "kind": "completion"})]
    assert value("essaycoach_ai_tokens_total", {"provider": "fake", "kind": "completion"}) == before + 7


def test_inside_ray_a_busy_counter_gives_ray_its_increments_once_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every typed update counts three times on a Gateway replica: a Ray record per increment
    # cost more than the rest of the call, so increments gather for a second (prometheus-client
    # still sees each one).
    updates = Metric(metrics_module.MetricSpec("essaycoach_test_updates_total", "counter", "test"),
                     CollectorRegistry())
    twin = FakeRayCounter()
    monkeypatch.setattr(updates, "ray_twin", lambda: twin)
    now = [1000.0]
    monkeypatch.setattr(metrics_module, "_now", lambda: now[0])
    updates.inc()  # the first in a second goes at once
    for _ in range(99):
        now[0] += 0.005
        updates.inc(2)
    assert twin.recorded == [(1, {})]
    now[0] += 0.6  # a second after the first: everything gathered goes in one record
    updates.inc()
    assert twin.recorded == [(1, {}), (199, {})]
    updates.inc(5)
    metrics_module.flush()  # the process's housekeeping: what is left goes too
    assert twin.recorded == [(1, {}), (199, {}), (5, {})]
    assert updates.prom._value.get() == 205
    metrics_module.flush()  # nothing gathered: nothing sent
    assert len(twin.recorded) == 3


async def test_a_counter_that_stops_moving_reaches_ray_without_anyone_flushing(monkeypatch: pytest.MonkeyPatch) -> None:
    # An Analyzer replica counts a call's tokens and then may fall idle: its last increments
    # must not wait for the next call (nothing in that process flushes periodically).
    calls = Metric(metrics_module.MetricSpec("essaycoach_test_calls_total", "counter", "test"), CollectorRegistry())
    twin = FakeRayCounter()
    monkeypatch.setattr(calls, "ray_twin", lambda: twin)
    monkeypatch.setattr(metrics_module, "RAY_COUNTER_INTERVAL", 0.05)
    calls.inc()  # sent at once
    calls.inc(3)  # gathered: due within the interval
    assert twin.recorded == [(1, {})]
    async with asyncio.timeout(10):
        while len(twin.recorded) < 2:
            await asyncio.sleep(0.01)
    assert twin.recorded == [(1, {}), (3, {})]


class FakeRayCounters:
    """`ray.util.metrics.Counter` as a factory: every counter made, and each increment in order
    as (counter name, amount, tags); refuses increments of 0 or less, as Ray's does."""

    def __init__(self) -> None:
        self.recorded: list[tuple[str, float, dict[str, str]]] = []

    def __call__(self, name: str, description: str, tag_keys: tuple[str, ...]) -> Any:
        counters = self

        class Counter:
            def inc(self, value: float, tags: dict[str, str]) -> None:
                if value <= 0:
                    raise ValueError(f"value must be >0, got {value}")
                assert set(tags) == set(tag_keys), (name, tags)
                counters.recorded.append((name, value, dict(tags)))

        return Counter()

    def totals(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for name, amount, tags in self.recorded:
            key = (name, tuple(sorted(tags.items())))
            out[key] = out.get(key, 0) + amount
        return out


def _latency_histogram(name: str) -> tuple[Metric, CollectorRegistry, FakeRayCounters]:
    spec = metrics_module.MetricSpec(name, "histogram", "test", ("route",), metrics_module.LATENCY_BUCKETS)
    registry = CollectorRegistry()
    histogram, counters = Metric(spec, registry), FakeRayCounters()
    twin = RayHistogram(spec, counters)
    histogram.ray_twin = lambda: twin  # type: ignore[method-assign]
    return histogram, registry, counters


def test_inside_ray_a_busy_histogram_gives_ray_its_buckets_sum_and_count_once_a_second(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Ray's Histogram takes one observation a call (~30-50 us on a busy Gateway, 1,000 a second
    # at 300 typists): the observations gather, and Ray gets counters a scrape reads as the histogram.
    histogram, registry, counters = _latency_histogram("essaycoach_test_busy_seconds")
    now = [1000.0]
    monkeypatch.setattr(metrics_module, "_now", lambda: now[0])
    child = histogram.labels("/doc")
    child.observe(0.003)  # the first in a second goes at once
    assert counters.totals() == {
        ("essaycoach_test_busy_seconds_count", (("route", "/doc"),)): 1,
        ("essaycoach_test_busy_seconds_sum", (("route", "/doc"),)): 0.003,
        **{("essaycoach_test_busy_seconds_bucket", (("le", le), ("route", "/doc"))): 1
           for le in ("0.005", "0.01", "0.02", "0.05", "0.1", "0.2", "0.5", "1.0", "2.0", "5.0", "+Inf")}}
    sent = len(counters.recorded)
    values = [0.0, 0.001, 0.0015, 0.002, 0.05, 0.4, 7.5, 30.0] * 25  # 0, on a bound (le is inclusive), over them all
    for v in values:
        now[0] += 0.004
        child.observe(v)
    assert len(counters.recorded) == sent  # gathered, not sent
    now[0] += 0.2  # a second after the first: what gathered goes in one increment per moved bucket
    child.observe(0.02)
    assert len(counters.recorded) - sent == 2 + len(metrics_module.LATENCY_BUCKETS) + 1
    metrics_module.flush()
    prom = {(s.name, s.labels.get("le", "")): s.value for family in registry.collect() for s in family.samples
            if s.name.startswith("essaycoach_test_busy_seconds_") and not s.name.endswith("_created")}
    ray = {(name, dict(labels).get("le", "")): total for (name, labels), total in counters.totals().items()}
    assert prom.pop(("essaycoach_test_busy_seconds_sum", "")) == pytest.approx(
        ray.pop(("essaycoach_test_busy_seconds_sum", "")))
    assert ray == prom  # every bucket and the count: what a scrape of Ray's export shows is prometheus-client's
    assert prom[("essaycoach_test_busy_seconds_count", "")] == 202
    assert prom[("essaycoach_test_busy_seconds_bucket", "0.002")] == 25 * 4  # 0.002 is in (le), 0.003 is not
    sent = len(counters.recorded)
    metrics_module.flush()  # nothing gathered: nothing sent
    assert len(counters.recorded) == sent


def test_a_histograms_ray_buckets_are_sent_largest_first_so_no_scrape_sees_them_decrease() -> None:
    histogram, _, counters = _latency_histogram("essaycoach_test_order_seconds")
    child = histogram.labels("/doc")
    child.observe(0.004)  # sent at once
    seen: dict[str, float] = {}
    for name, amount, tags in counters.recorded:  # a scrape may land after any one increment
        if name.endswith("_bucket"):
            seen[tags["le"]] = seen.get(tags["le"], 0) + amount
            by_le = [seen.get(le, 0) for le in histogram.ray_twin().le]
            assert by_le == sorted(by_le), by_le


def test_an_observation_of_zero_reaches_rays_buckets_and_count_but_adds_nothing_to_its_sum() -> None:
    histogram, _, counters = _latency_histogram("essaycoach_test_zero_seconds")
    histogram.labels("/doc").observe(0.0)  # a fan-out age on a clock ahead of the writer's
    assert {(name, tags.get("le")) for name, _, tags in counters.recorded} == {
        ("essaycoach_test_zero_seconds_count", None),
        *(("essaycoach_test_zero_seconds_bucket", le) for le in histogram.ray_twin().le)}


def test_a_doc_message_carries_its_origin_and_the_time_it_was_built() -> None:
    message = doc_message("origin-1", b"\x00\x02update\nwith newline")
    assert split_doc_message(message) == ("origin-1", b"\x00\x02update\nwith newline")
    age = doc_message_age(message, now=time.time() + 0.25)
    assert age is not None and 0.2 < age < 5
    assert doc_message_age(message, now=0) == 0.0  # another node's clock ahead: never negative
    assert doc_message_age(b"origin\nupdate") is None  # an older peer's message: no time, no sample
    assert split_doc_message(b"origin\nupdate") == ("origin", b"update")


def test_fanout_is_observed_per_message_handed_to_another_socket() -> None:
    before = value("essaycoach_fanout_seconds_count")
    message = doc_message("a", b"x")
    for _ in range(3):  # one message handed to three sockets: observed once
        observe_fanout(message)
    observe_fanout(b"old-origin\nx")
    assert value("essaycoach_fanout_seconds_count") == before + 1
    observe_fanout(doc_message("a", b"y"))
    assert value("essaycoach_fanout_seconds_count") == before + 2


async def test_fanout_on_a_loop_is_observed_at_the_end_of_the_turn_not_in_the_hand_over() -> None:
    before = value("essaycoach_fanout_seconds_count")
    observe_fanout(doc_message("a", b"x"))
    observe_fanout(doc_message("a", b"y"))
    assert value("essaycoach_fanout_seconds_count") == before  # the next frame's hand-over comes first
    await asyncio.sleep(0)
    assert value("essaycoach_fanout_seconds_count") == before + 2


def test_fanout_samples_of_two_event_loops_are_each_observed_by_their_own_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loop A measures a message, then its turn is held open while loop B (another thread, as
    with Serve's threads) runs a whole turn: B observes only its own sample, A its own at the
    end of its turn."""
    seen: list[tuple[str, float]] = []

    class Recorder:
        def observe(self, age: float) -> None:
            seen.append((threading.current_thread().name, age))

    monkeypatch.setattr(broadcast, "_FANOUT", Recorder())
    now_us = time.time_ns() // 1000
    a_measured, b_done = threading.Event(), threading.Event()

    async def a() -> None:
        observe_fanout(f"a {now_us - 100_000_000}\nx".encode())  # 100 s old
        a_measured.set()
        b_done.wait(10)  # blocks loop A: its turn is not over while B runs

    async def b() -> None:
        a_measured.wait(10)
        observe_fanout(f"b {now_us - 200_000_000}\nx".encode())  # 200 s old
        await asyncio.sleep(0)  # B's turn ends: its samples are observed
        b_done.set()

    threads = [threading.Thread(target=asyncio.run, args=(main(),), name=name) for name, main in (("A", a), ("B", b))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert sorted((name, int(age // 50)) for name, age in seen) == [("A", 2), ("B", 4)]


def test_local_fanout_counts_each_handler_it_delivers_to() -> None:
    fanout = LocalFanout()
    got: list[bytes] = []
    fanout.add("essay:1", lambda _c, m: got.append(m))
    fanout.add("essay:1", lambda _c, m: got.append(m))
    before = value("essaycoach_bus_delivered_total")
    fanout.deliver("essay:1", b"m")
    fanout.deliver("essay:2", b"nobody")
    assert got == [b"m", b"m"] and value("essaycoach_bus_delivered_total") == before + 2


async def test_the_outbox_counts_publishes_overflow_drops_and_lost_batches() -> None:
    sent: list[list[Published]] = []
    results = [False]

    async def send(batch: list[Published]) -> bool:
        sent.append(batch)
        return results.pop(0) if results else True

    outbox = Outbox(send, name="test-bus-sender", limit=2)
    published = value("essaycoach_bus_published_total", {"bus": "test"})
    overflow = value("essaycoach_bus_dropped_total", {"reason": "overflow"})
    failed = value("essaycoach_bus_dropped_total", {"reason": "send_failed"})
    for i in range(3):  # the first is dropped at once: only 2 fit
        outbox.put((f"c{i}", b"m", None))
    for _ in range(50):
        if len(sent) >= 2:
            break
        await asyncio.sleep(0.01)
    outbox.close()
    assert value("essaycoach_bus_published_total", {"bus": "test"}) == published + 3
    assert value("essaycoach_bus_dropped_total", {"reason": "overflow"}) == overflow + 1
    assert value("essaycoach_bus_dropped_total", {"reason": "send_failed"}) == failed + 2  # the first batch
    assert [c for c, _, _ in sent[0]] == ["c1", "c2"]


def test_a_budget_refusal_is_counted_by_the_budget_that_refused() -> None:
    budget = TokenBudget(per_essay=100, per_class=150, total=5_000)
    before = {s: value("essaycoach_ai_budget_refusals_total", {"scope": s}) for s in ("essay", "class", "total")}
    assert budget.check("e", "c", 50)
    budget.record("e", "c", 90)
    assert not budget.check("e", "c", 50)
    assert not budget.check("other", "c", 70)
    assert not budget.check("third", None, 6_000)
    assert budget.refusing("e", "c", 5) is None
    after = {s: value("essaycoach_ai_budget_refusals_total", {"scope": s}) for s in before}
    assert after == {s: before[s] + 1 for s in before}


async def test_group_commit_records_batch_sizes_latency_and_store_errors() -> None:
    failures = [RuntimeError("store restarting")]

    async def write(rows: list[dict[str, Any]]) -> None:
        if failures:
            raise failures.pop()

    committer = GroupCommitter(write, interval=0.001, max_backoff=0.01)
    batches, errors = value("essaycoach_commit_batch_rows_count"), value(
        "essaycoach_store_errors_total", {"operation": "update_log"})
    rows = value("essaycoach_commit_batch_rows_sum")
    committed = value("essaycoach_commit_seconds_count")
    committer.start()
    await asyncio.gather(*(committer.submit({"n": i}) for i in range(3)))
    await committer.close()
    assert value("essaycoach_commit_batch_rows_count") == batches + 1
    assert value("essaycoach_commit_batch_rows_sum") == rows + 3
    assert value("essaycoach_commit_seconds_count") == committed + 1
    assert value("essaycoach_store_errors_total", {"operation": "update_log"}) == errors + 1

"""Settings defaults that depend on each other."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from serve_app.settings import Settings

SECRET = "s" * 40


@pytest.mark.parametrize(("url", "hosts", "expected"), [
    ("sqlite+aiosqlite:///var/x.db", 0, 1),  # SQLite: one writer process
    ("postgresql+asyncpg://u@h/db", 0, 2),
    ("sqlite+aiosqlite:///var/x.db", 3, 3),  # an explicit value wins
])
def test_host_count_follows_the_store(url: str, hosts: int, expected: int) -> None:
    settings = Settings(database_url=url, hosts=hosts, dev_mode=False, jwt_secret=SECRET)
    assert settings.hosts == expected


def test_host_tunables_reach_the_hosts_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESSAYCOACH_COMMIT_INTERVAL_MS", "10")
    monkeypatch.setenv("ESSAYCOACH_FEEDBACK_LOCAL_MIN_INTERVAL_SECONDS", "3")
    config = Settings(dev_mode=False, jwt_secret=SECRET).host_config()
    assert (config.commit_interval, config.local_min_interval) == (0.01, 3.0)
    defaults = Settings(dev_mode=False, jwt_secret=SECRET, commit_interval_ms=4).host_config()
    assert defaults.commit_interval == 0.004
    with pytest.raises(ValueError):
        Settings(dev_mode=False, jwt_secret=SECRET, commit_interval_ms=0)


def test_a_host_actor_gets_its_store_bus_and_analysis_settings_as_plain_values(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESSAYCOACH_AI_PROVIDER", "openai")
    monkeypatch.setenv("ESSAYCOACH_AI_API_KEY", "key-1")
    settings = Settings(dev_mode=False, jwt_secret=SECRET, database_url="postgresql+asyncpg://u@h/db",
                        redis_url="redis://r:6379/2", bus_queue_max_bytes=4096, ray_namespace="ns",
                        ai_token_budget_per_essay=7, serve_app_name="app-2", max_essay_chars=99)
    # Pickled into the Ray actor, which never imports serve_app (the import-linter contract).
    config = pickle.loads(pickle.dumps(settings.host_shell_config()))
    assert config.database_url == "postgresql+asyncpg://u@h/db" and config.serve_app_name == "app-2"
    assert (config.bus.redis_url, config.bus.ray_namespace, config.bus.queue_max_bytes) == ("redis://r:6379/2",
                                                                                             "ns", 4096)
    assert (config.analysis.provider, config.analysis.api_key, config.analysis.token_budget_per_essay) == (
        "openai", "key-1", 7)
    assert config.analysis.local_only().provider == "local" and config.host.max_essay_chars == 99
    assert "key-1" not in repr(config)
    assert config.nice == 0  # the Gateway's priority (actors.process_tuning.lower_priority)
    monkeypatch.setenv("ESSAYCOACH_HOST_NICE", "10")
    assert Settings(dev_mode=False, jwt_secret=SECRET).host_shell_config().nice == 10


def test_dev_mode_is_off_by_default_so_a_missing_jwt_secret_fails(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    monkeypatch.delenv("ESSAYCOACH_DEV_MODE", raising=False)
    monkeypatch.delenv("ESSAYCOACH_JWT_SECRET", raising=False)
    with pytest.raises(ValueError, match="JWT_SECRET is required"):
        Settings(var_dir=tmp_path)
    assert not Settings(var_dir=tmp_path, jwt_secret=SECRET).webhook_private_allowed


def test_run_dev_turns_dev_mode_on_for_the_process_and_its_replicas(monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Path) -> None:
    import argparse

    from serve_app.cli import _dev

    monkeypatch.setenv("ESSAYCOACH_DEV_MODE", "false")  # recorded, so the test's change is undone
    monkeypatch.delenv("ESSAYCOACH_JWT_SECRET", raising=False)
    _dev(argparse.Namespace(dev=True))
    settings = Settings(var_dir=tmp_path)
    assert settings.dev_mode and settings.webhook_private_allowed
    assert (tmp_path / "jwt_secret").read_text().strip() == settings.jwt_secret
    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    assert "essaycoach run --dev" in makefile  # the one-command run stays one command


def test_a_bad_trusted_proxy_cidr_fails_at_start() -> None:
    with pytest.raises(ValueError, match="TRUSTED_PROXIES"):
        Settings(dev_mode=False, jwt_secret=SECRET, trusted_proxies="10.0.0.0/99")


def test_tier1_pacing_is_off_by_default_and_lowering_the_min_does_not_turn_it_on() -> None:
    from actors.pacing import Tier1Pacing

    def busiest(settings: Settings) -> float:
        pacing = Tier1Pacing(settings.host_config())
        for _ in range(50):
            pacing.observe(1.0, 1.0)  # as busy as a host gets
        return pacing.interval

    for min_interval in (2.0, 1.0, 0.5):
        settings = Settings(dev_mode=False, jwt_secret=SECRET, feedback_local_min_interval_seconds=min_interval)
        assert busiest(settings) == min_interval
    on = Settings(dev_mode=False, jwt_secret=SECRET, feedback_tier1_pacing=True)
    assert busiest(on) == on.feedback_local_max_interval_seconds == 8.0
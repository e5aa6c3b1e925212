"""Settings defaults that depend on each other."""

from __future__ import annotations

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
    # What the host actors receive (settings travel as values) keeps the same count.
    assert Settings(**settings.model_dump(mode="json")).hosts == expected


def test_host_tunables_reach_the_hosts_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESSAYCOACH_COMMIT_INTERVAL_MS", "10")
    monkeypatch.setenv("ESSAYCOACH_FEEDBACK_LOCAL_MIN_INTERVAL_SECONDS", "3")
    config = Settings(dev_mode=False, jwt_secret=SECRET).host_config()
    assert (config.commit_interval, config.local_min_interval) == (0.01, 3.0)
    defaults = Settings(dev_mode=False, jwt_secret=SECRET, commit_interval_ms=4).host_config()
    assert defaults.commit_interval == 0.004
    with pytest.raises(ValueError):
        Settings(dev_mode=False, jwt_secret=SECRET, commit_interval_ms=0)


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

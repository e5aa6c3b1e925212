"""Settings defaults that depend on each other."""

from __future__ import annotations

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

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

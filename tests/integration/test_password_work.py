"""Registration and login hash and check passwords on the replica's CPU-work pool (serve_app.cpu_work),
below the event loop's priority: a class signing in together must not crowd out every socket's acks."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

import serve_app.api.auth as auth_api
from serve_app.cpu_work import NICE
from tests.fakes import PASSWORD, login

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="per-thread priority is Linux's")


def _recording(fn: Callable[..., Any], seen: list[tuple[str, int]]) -> Callable[..., Any]:
    def wrapped(*args: Any) -> Any:
        seen.append((threading.current_thread().name,
                     os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))
        return fn(*args)
    return wrapped


async def test_register_and_login_hash_on_low_priority_cpu_work_threads(
        client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, int]] = []
    monkeypatch.setattr(auth_api, "hash_password", _recording(auth_api.hash_password, seen))
    monkeypatch.setattr(auth_api, "verify_password", _recording(auth_api.verify_password, seen))
    email = f"pool-{uuid.uuid4().hex[:10]}@example.com"
    r = await client.post("/api/v1/auth/register",
                          json={"email": email, "password": PASSWORD, "name": "Pool", "role": "student"})
    assert r.status_code == 201, r.text
    assert (await login(client, email)).status_code == 200
    assert (await login(client, email, "wrong-" + PASSWORD)).status_code == 401
    loop_priority = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert len(seen) == 3
    assert all(name.startswith("cpu-work-passwords") and priority == min(19, loop_priority + NICE)
               for name, priority in seen)

"""The Gateway <-> host contract (actors/host_api.py): every implementation has every method with
the interface's signature, every method declares its retry rule, and RayHost honours it."""

from __future__ import annotations

import asyncio
import inspect
import typing
import uuid
from typing import Any

import pytest
from ray.exceptions import ActorDiedError, ActorUnavailableError

from actors.host import EssayHost
from actors.host_api import HostAPI, HostUnavailable, not_retried, operations, retry_safe_of
from actors.ray_host import EssayHostShell
from serve_app.hosts import EssayHosts, RayHost

IMPLEMENTATIONS = [EssayHost, EssayHostShell, RayHost]
# Public methods of the remote ends that are not host operations (lifecycle, plumbing). Everything
# else public there is reachable from a Gateway, so it must be in HostAPI with a retry rule.
# (EssayHost may have more public methods: the Gateway reaches it only through these two or HostAPI.)
NOT_OPERATIONS = {
    EssayHostShell: {"stream_address", "stats", "shutdown", "traced"},
    RayHost: {"handle", "stream", "close"},
}


def _shape(cls: type, name: str) -> tuple[list[tuple[str, Any, Any, Any]], Any]:
    """(name, kind, default, type) of each parameter but self, and the return type. Once a
    process has made `ray.remote(EssayHostShell)`, Ray's tracing hook has added a keyword-only
    `_ray_trace_ctx` to the shell's methods, in place: not part of the contract."""
    fn = getattr(cls, name)
    hints = typing.get_type_hints(fn)
    params = [p for p in list(inspect.signature(fn).parameters.values())[1:] if p.name != "_ray_trace_ctx"]
    return ([(p.name, p.kind, p.default, hints.get(p.name)) for p in params], hints.get("return"))


def test_every_operation_declares_a_retry_rule() -> None:
    ops = operations()
    assert "apply_update" in ops and "publish_event" in ops and len(ops) >= 22
    declared = {name: retry_safe_of(getattr(HostAPI, name)) for name in ops}
    # Counted or numbered on the host: a repeat would miscount sockets or number an event twice.
    assert {name for name, safe in declared.items() if not safe} == {
        "attach", "detach", "watch", "publish_event", "revision"}


def test_an_undeclared_method_is_refused() -> None:
    async def shiny_new_operation(self: Any) -> None: ...

    with pytest.raises(TypeError, match="declares no retry rule"):
        retry_safe_of(shiny_new_operation)
    assert retry_safe_of(not_retried(shiny_new_operation)) is False


@pytest.mark.parametrize("ray_wrapped", [False, True], ids=["plain", "after-ray.remote"])
@pytest.mark.parametrize("cls", IMPLEMENTATIONS, ids=lambda c: c.__name__)
def test_implementations_match_the_interface(cls: type, ray_wrapped: bool) -> None:
    if ray_wrapped:
        import ray

        ray.remote(EssayHostShell)  # as RayHosts does (no cluster needed): Ray patches the class
    for name in operations():
        assert inspect.iscoroutinefunction(getattr(cls, name)), f"{cls.__name__}.{name} is not async"
        assert _shape(cls, name) == _shape(HostAPI, name), f"{cls.__name__}.{name} differs from HostAPI"
    if cls in NOT_OPERATIONS:
        public = {n for n, v in vars(cls).items() if callable(v) and not n.startswith("_")}
        extra = public - set(operations()) - NOT_OPERATIONS[cls]
        assert not extra, f"{cls.__name__} has methods the interface does not declare: {sorted(extra)}"


class _RestartingHost:
    """A fake Ray actor handle: each remote call fails as "unavailable" `failures` times (a host
    restarting), then returns what the method name says."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        handle = self

        class Method:
            @staticmethod
            def remote(*args: Any, **kwargs: Any) -> Any:
                handle.calls.append(name)

                async def run() -> Any:
                    await asyncio.sleep(0)
                    if handle.failures > 0:
                        handle.failures -= 1
                        raise handle.error
                    return (b"diff", b"sv") if name == "sync" else None

                return run()

        return Method


@pytest.mark.parametrize("error", [ActorUnavailableError("restarting", None), ActorDiedError()],
                         ids=["unavailable", "died"])
async def test_a_safe_call_is_retried_across_a_restart(error: Exception) -> None:
    fake = _RestartingHost(failures=2, error=error)
    host = RayHost(lambda: fake, retry_for=5.0)
    assert await host.sync(uuid.uuid4(), b"\x00") == (b"diff", b"sv")
    assert fake.calls == ["sync"] * 3


async def test_a_non_idempotent_call_is_not_retried() -> None:
    essay = uuid.uuid4()
    for call in (lambda h: h.attach(essay, "node"), lambda h: h.publish_event(essay, "comment", body="x"),
                 lambda h: h.revision(essay, reason="submit"), lambda h: h.watch(f"essay:{essay}", 1)):
        fake = _RestartingHost(failures=1, error=ActorUnavailableError("restarting", None))
        with pytest.raises(HostUnavailable) as failed:
            await call(RayHost(lambda: fake, retry_for=5.0))  # noqa: B023  # called right here
        assert isinstance(failed.value.__cause__, ActorUnavailableError)
        assert len(fake.calls) == 1


async def test_a_safe_call_gives_up_after_the_retry_window() -> None:
    fake = _RestartingHost(failures=1_000, error=ActorUnavailableError("gone", None))
    with pytest.raises(HostUnavailable) as failed:  # the socket closes 1013, REST answers 503
        await RayHost(lambda: fake, retry_for=0.3).current(uuid.uuid4())
    assert isinstance(failed.value.__cause__, ActorUnavailableError)
    assert 2 <= len(fake.calls) < 1_000


async def test_other_errors_are_never_retried() -> None:
    fake = _RestartingHost(failures=1, error=ValueError("range outside the text"))
    with pytest.raises(ValueError):
        await RayHost(lambda: fake, retry_for=5.0).anchor_for(uuid.uuid4(), 5, 1)
    assert fake.calls == ["anchor_for"]


class _TwoHosts(EssayHosts):
    def __init__(self, hosts: list[Any]) -> None:
        self._objects = hosts
        self.hosts = len(hosts)

    def host(self, index: int) -> HostAPI:
        return typing.cast(HostAPI, self._objects[index])


async def test_class_wide_questions_go_to_every_host() -> None:
    class Host:
        def __init__(self, rows: list[dict[str, Any]], students: set[uuid.UUID]) -> None:
            self.rows, self.students, self.watched = rows, students, 0

        async def student_rows(self, class_id: uuid.UUID) -> list[dict[str, Any]]:
            return self.rows

        async def live_students(self, class_id: uuid.UUID) -> set[uuid.UUID]:
            return self.students

        async def watch(self, channel: str, delta: int) -> None:
            self.watched += delta

    a, b = uuid.uuid4(), uuid.uuid4()
    hosts = [Host([{"n": 1}], {a}), Host([{"n": 2}, {"n": 3}], {a, b})]
    router = _TwoHosts(hosts)
    cls = uuid.uuid4()
    assert sorted(r["n"] for r in await router.student_rows(cls)) == [1, 2, 3]
    assert await router.live_students(cls) == {a, b}
    await router.watch_class(cls, 1)
    assert [h.watched for h in hosts] == [1, 1]

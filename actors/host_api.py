"""The Gateway <-> essay host contract: one typed method per operation, each declaring whether a
call that failed as "host unavailable" may be sent again.

Three classes implement it with these exact signatures (tests/unit/test_host_api.py checks):
`actors.host.EssayHost` (the host itself; the Gateway's in-process hosts are these objects),
`actors.ray_host.EssayHostShell` (the Ray actor: its remote methods are these) and
`serve_app.hosts.RayHost` (a Gateway's client of one host actor: Ray calls, retried across a
host restart when the method is `@retry_safe`, and `apply_update` over the host stream,
`actors.host_stream`). The Gateway picks a host with `serve_app.hosts.EssayHosts.of(essay_id)`.

Retry declarations: every method carries `@retry_safe` (running it twice is the same as once:
reads, Yjs updates, which are no-ops when repeated, whole-text replaces, deletes) or
`@not_retried` (a second run would number an event twice or miscount a host's sockets; the
caller fails instead and its client reconnects). `retry_safe_of` raises for an undeclared
method, so a new method without a declaration fails the first call, and the test.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

_RETRY_ATTR = "__host_retry_safe__"


def retry_safe(method: F) -> F:
    """Running the method twice has the effect of running it once: retried across a restart."""
    setattr(method, _RETRY_ATTR, True)
    return method


def not_retried(method: F) -> F:
    """Not idempotent: a call that failed as "unavailable" may have run; never sent again."""
    setattr(method, _RETRY_ATTR, False)
    return method


class HostUnavailable(ConnectionError):
    """The essay's host did not answer within the Gateway's retry window: it is restarting, or
    its node is gone and Ray has not yet started it elsewhere. Nothing unacknowledged is lost (the
    client still holds it); the caller tries again later: sockets close 1013, REST answers 503."""


class EssayMoved(HostUnavailable):
    """The essay is another host's: a live host holds its lease and did not hand it over, or
    this host lost its lease (its write was fenced: not stored, not acknowledged). As with any
    `HostUnavailable`, the client reconnects and sends again what was not acknowledged."""


def retry_safe_of(method: Callable[..., Any]) -> bool:
    """The declaration of a `HostAPI` method (KeyError-like TypeError when it has none)."""
    declared = getattr(method, _RETRY_ATTR, None)
    if declared is None:
        raise TypeError(f"HostAPI.{getattr(method, '__name__', method)} declares no retry rule")
    return bool(declared)


class HostAPI(Protocol):
    """What a Gateway asks an essay host. Per-essay methods take the essay id first (the Gateway
    routes on it); `live_students`, `student_rows` and `watch` of a class channel go to every host."""

    # --- typing ---------------------------------------------------------------------------

    @retry_safe
    async def apply_update(self, essay_id: uuid.UUID, update: bytes, *, author_id: uuid.UUID | None,
                           origin: str, live: bool = True, node: str | None = None) -> int:
        """Apply, log and broadcast one Yjs update; the essay's seq once it is durable."""
        ...

    @retry_safe
    async def would_change(self, essay_id: uuid.UUID, update: bytes) -> bool:
        """Whether `update` carries anything the essay lacks."""
        ...

    @retry_safe
    async def set_text(self, essay_id: uuid.UUID, text: str, *, author_id: uuid.UUID | None) -> int:
        """Replace the whole text (a second replace with the same text changes nothing)."""
        ...

    @retry_safe
    async def sync(self, essay_id: uuid.UUID, state_vector: bytes) -> tuple[bytes, bytes]:
        """(the update a peer at `state_vector` lacks, the host's state vector)."""
        ...

    # --- reads ----------------------------------------------------------------------------

    @retry_safe
    async def read(self, essay_id: uuid.UUID) -> dict[str, Any] | None:
        """Text, word count and seq when the essay is loaded there; else None."""
        ...

    @retry_safe
    async def current(self, essay_id: uuid.UUID) -> dict[str, Any]:
        """Like `read`, loading the essay first."""
        ...

    @retry_safe
    async def feedback(self, essay_id: uuid.UUID) -> dict[str, Any]:
        ...

    @retry_safe
    async def analyze_now(self, essay_id: uuid.UUID) -> dict[str, Any]:
        ...

    @retry_safe
    async def score_now(self, essay_id: uuid.UUID, rubric: dict[str, Any]) -> list[dict[str, Any]]:
        ...

    @retry_safe
    async def anchor_for(self, essay_id: uuid.UUID, start: int, end: int) -> dict[str, Any]:
        ...

    @retry_safe
    async def resolve(self, essay_id: uuid.UUID, anchors: list[str | None]) -> list[tuple[int, int] | None]:
        ...

    @retry_safe
    async def event_state(self, essay_id: uuid.UUID) -> dict[str, Any]:
        ...

    @retry_safe
    async def events_after(self, essay_id: uuid.UUID, last_seq: int, epoch: str | None) -> list[str] | None:
        ...

    @retry_safe
    async def live_students(self, class_id: uuid.UUID) -> set[uuid.UUID]:
        ...

    @retry_safe
    async def student_rows(self, class_id: uuid.UUID) -> list[dict[str, Any]]:
        ...

    # --- deletion -------------------------------------------------------------------------

    @retry_safe
    async def drop(self, essay_id: uuid.UUID) -> None:
        ...

    @retry_safe
    async def release(self, essay_id: uuid.UUID) -> None:
        ...

    @retry_safe
    async def hand_over(self, essay_id: uuid.UUID) -> None:
        """Another host was asked to load the essay (it is routed there now): flush it, unload it,
        give up its lease and close its sockets (1013), so that host can take it."""
        ...

    # --- counted or numbered: never sent twice ----------------------------------------------

    @not_retried
    async def attach(self, essay_id: uuid.UUID, node: str | None = None) -> None:
        ...

    @not_retried
    async def detach(self, essay_id: uuid.UUID, node: str | None = None) -> None:
        ...

    @not_retried
    async def watch(self, channel: str, delta: int) -> None:
        ...

    @not_retried
    async def publish_event(self, /, essay_id: uuid.UUID, type_: str, **payload: Any) -> None:
        """Number and publish an event (`self` positional-only: a payload may use any key)."""
        ...

    @not_retried
    async def revision(self, essay_id: uuid.UUID, *, reason: str) -> int:
        """Freeze a revision now; its number."""
        ...


def operations() -> list[str]:
    """Every operation of the interface, in declaration order."""
    return [name for name, value in vars(HostAPI).items() if not name.startswith("_") and callable(value)]

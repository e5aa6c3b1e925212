"""An essay host's leases: one writer per essay even while the number of hosts changes.

Routing is a hash modulo the host count (`actors.routing`), so a new `ESSAYCOACH_HOSTS` sends an
essay to another host while the old one may still hold it loaded. The store decides who writes
(`db.repositories.leases`): a host takes the essay's lease before it loads it, and every write of
the essay (group commit, compaction) checks in its own transaction that the lease is still held
with the token it was loaded under, else writes nothing for that essay (fencing).

When the lease is another live host's, this host asks that one to hand the essay over
(`HostAPI.hand_over`: it flushes, unloads, releases and closes the essay's sockets with 1013) and
tries once more; if the lease is still taken the caller gets `EssayMoved` (sockets close 1013,
REST answers 503 with Retry-After) and the client tries again. A host that cannot be reached
keeps its leases until they run out (`HostConfig.lease_seconds`); a host that crashed and was
restarted under the same name takes its earlier process's leases at once (a named Ray actor
runs once, so that process is gone; were it merely cut off, its token is stale and its writes
are refused). Leases are renewed every third of `lease_seconds` and released on unload and stop.
Host clocks must agree to well within `lease_seconds` (expiry compares this host's wall clock
with the one that renewed).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from actors.host_api import EssayMoved
from db.repositories import documents
from db.repositories import leases as leases_repo
from db.repositories.leases import Holder

log = logging.getLogger("essaycoach.leases")

HandOver = Callable[[str, uuid.UUID], Awaitable[None]]
"""Asks host `name` to hand essay `essay_id` over (`HostAPI.hand_over` on the host of that name)."""
Store = Callable[..., Awaitable[Any]]  # `EssayHost._store(work)`: one write transaction
HAND_OVER_TIMEOUT = 10.0


class LeaseRefused(LookupError):
    """`acquire` met a lease another live host holds (`holder`)."""

    def __init__(self, holder: Holder | None) -> None:
        super().__init__(f"held by {holder.name if holder else 'another host'}")
        self.holder = holder


class EssayLeases:
    """One host's side of the essay leases: take (asking the holder to hand over), fence, renew,
    release. `store(work)` runs `work(connection)` as one of the host's write transactions."""

    def __init__(self, *, name: str, store: Store, seconds: float, wallclock: Callable[[], datetime],
                 hand_over: HandOver | None = None) -> None:
        self.holder = Holder(name, uuid.uuid4().hex)
        self.store = store
        self.seconds = seconds
        self.wallclock = wallclock
        self.hand_over = hand_over

    def _expiry(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.seconds)

    async def acquire(self, essay_id: uuid.UUID) -> int:
        """The essay's lease for this host (its token), after asking a live holder to hand it over;
        `EssayMoved` when it is still taken; `LookupError` when there is no such essay."""
        try:
            return await self._try(essay_id)
        except LeaseRefused as refused:
            if self.hand_over is None or refused.holder is None:
                raise EssayMoved(f"essay {essay_id} is open on another host") from None
            try:
                async with asyncio.timeout(HAND_OVER_TIMEOUT):  # `wait_for` (3.11) can drop a cancellation
                    await self.hand_over(refused.holder.name, essay_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # unreachable, or no such host any more: its lease runs out
                log.warning("hand-over refused or failed",
                            extra={"essay_id": str(essay_id), "holder": refused.holder.name, "error": repr(exc)})
        try:
            return await self._try(essay_id)
        except LeaseRefused as refused:
            who = refused.holder.name if refused.holder else "another host"
            raise EssayMoved(f"essay {essay_id} is open on {who}; try again shortly") from None

    async def _try(self, essay_id: uuid.UUID) -> int:
        def work(conn: Any) -> int | Holder | None:
            now = self.wallclock()
            token = leases_repo.acquire(conn, essay_id=essay_id, holder=self.holder, now=now,
                                        expires_at=self._expiry(now))
            return token if token is not None else leases_repo.holder_of(conn, essay_id=essay_id)

        try:
            got: int | Holder | None = await self.store(work)
        except IntegrityError:  # the lease row's foreign key: no such essay
            raise LookupError(str(essay_id)) from None
        if isinstance(got, int):
            return got
        raise LeaseRefused(got)

    def fence(self, conn: Any, leases: Sequence[tuple[uuid.UUID, int]]) -> list[bool]:
        """In the caller's write transaction: for each (essay id, token) of `leases`, whether the
        essay is still ours under that token (write it: no other host can take it before the
        transaction ends) or not (fenced: write nothing of it). An essay may come twice with two
        tokens (unloaded and loaded again while a batch gathered): only its current one is ours."""
        held = leases_repo.fence(conn, holder=self.holder, leases=set(leases))
        return [lease in held for lease in leases]

    def append_fenced(self, conn: Any, rows: list[dict[str, Any]]) -> dict[int, BaseException]:
        """A group commit's rows (each with its essay's token under "lease", which is no column),
        in the caller's transaction: the rows of essays still ours are written; the others, by
        index, are refused."""
        held = self.fence(conn, [(row["essay_id"], row["lease"]) for row in rows])
        documents.append_updates(conn, rows=[row for row, ours in zip(rows, held) if ours])
        return self._refused(rows, held)

    async def append_fenced_at_once(self, conn: AsyncConnection,
                                    rows: list[dict[str, Any]]) -> dict[int, BaseException]:
        """`append_fenced` on PostgreSQL in one statement on an AUTOCOMMIT connection (committed
        when it returns): `documents.append_fenced_at_once`."""
        held = await documents.append_fenced_at_once(conn, holder=self.holder.name, instance=self.holder.instance,
                                                     rows=rows)
        return self._refused(rows, [(row["essay_id"], row["lease"]) in held for row in rows])

    @staticmethod
    def _refused(rows: list[dict[str, Any]], held: list[bool]) -> dict[int, BaseException]:
        return {i: EssayMoved(f"essay {row['essay_id']} moved to another host; not saved here")
                for i, (row, ours) in enumerate(zip(rows, held)) if not ours}

    async def renew(self, tokens: Mapping[uuid.UUID, int]) -> set[uuid.UUID]:
        """Extend these leases; the essays whose lease is no longer ours (another host took it)."""
        if not tokens:
            return set()

        def work(conn: Any) -> set[tuple[uuid.UUID, int]]:
            return leases_repo.fence(conn, holder=self.holder, leases=tokens.items(),
                                     expires_at=self._expiry(self.wallclock()))

        held: set[tuple[uuid.UUID, int]] = await self.store(work)
        return set(tokens) - {essay_id for essay_id, _ in held}

    async def release(self, tokens: Mapping[uuid.UUID, int]) -> None:
        """Give these leases up (unloaded essays, or all of them on stop): free for any host."""
        if tokens:
            await self.store(lambda conn: leases_repo.release(conn, holder=self.holder, leases=tokens.items()))

    async def release_named(self, essay_id: uuid.UUID) -> None:
        """Give up the essay's lease held under this host's name by any of its processes (hand-over)."""
        await self.store(lambda conn: leases_repo.release_named(conn, name=self.holder.name, essay_ids=[essay_id]))

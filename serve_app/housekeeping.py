"""Periodic store purge run by every Gateway replica: used-up socket tickets and expired refresh tokens.

Spent socket tickets are deleted a few minutes after they expire (the per-user ticket limit counts in rate
buckets, `serve_app.ratelimit`, not ticket rows); refresh tokens an hour after they expire (their JWT is refused by its
own `exp` from then on, so nothing reads the row). Every replica purges on its own schedule, with
jitter; two purges at once delete disjoint or no rows, so they need no coordination.
"""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.repositories import users
from db.types import utcnow

log = logging.getLogger("essaycoach.housekeeping")

REFRESH_GRACE = timedelta(hours=1)
"""Expired refresh tokens stay this long (clock skew between replicas)."""
TICKET_GRACE = timedelta(minutes=5)
"""Spent tickets' rows stay this long past their expiry: the row is what refuses a ticket's second
use, and a replica whose clock runs behind still takes the ticket for unexpired meanwhile."""


async def purge_once(sessions: async_sessionmaker[AsyncSession], *, now: datetime | None = None) -> tuple[int, int]:
    """Delete what is no longer needed; (tickets, refresh tokens) deleted."""
    now = now or utcnow()
    async with sessions() as session:
        tickets = await users.purge_tickets(session, expired_before=now - TICKET_GRACE)
        tokens = await users.purge_refresh_tokens(session, expired_before=now - REFRESH_GRACE)
        await session.commit()
    return tickets, tokens


async def purge_periodically(sessions: async_sessionmaker[AsyncSession], *, interval: float) -> None:
    """`purge_once` every `interval` seconds (+-10% jitter), until cancelled; failures are logged
    and retried at the next turn (a store restart must not end the loop)."""
    while True:
        await asyncio.sleep(interval * random.uniform(0.9, 1.1))
        try:
            tickets, tokens = await purge_once(sessions)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("store purge failed; retrying at the next interval")
            continue
        if tickets or tokens:
            log.info("store purged", extra={"tickets": tickets, "refresh_tokens": tokens})

"""Periodic store purge run by every Gateway replica: used-up socket tickets and expired refresh tokens.

Tickets are kept past their expiry only as long as the per-user ticket limit counts them (a
minute after issue); refresh tokens until an hour after they expire (their JWT is refused by its
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

TICKET_RATE_WINDOW = timedelta(seconds=60)
"""`WS_TICKETS_PER_USER_PER_MINUTE` counts tickets issued within this window (serve_app.api.auth)."""
REFRESH_GRACE = timedelta(hours=1)
"""Expired refresh tokens stay this long (clock skew between replicas)."""


async def purge_once(sessions: async_sessionmaker[AsyncSession], *, ticket_seconds: int,
                     now: datetime | None = None) -> tuple[int, int]:
    """Delete what is no longer needed; (tickets, refresh tokens) deleted."""
    now = now or utcnow()
    # A ticket issued at t expires at t + ticket_seconds and is counted until t + 60 s.
    tickets_before = min(now, now - TICKET_RATE_WINDOW + timedelta(seconds=ticket_seconds))
    async with sessions() as session:
        tickets = await users.purge_tickets(session, expired_before=tickets_before)
        tokens = await users.purge_refresh_tokens(session, expired_before=now - REFRESH_GRACE)
        await session.commit()
    return tickets, tokens


async def purge_periodically(sessions: async_sessionmaker[AsyncSession], *, ticket_seconds: int,
                             interval: float) -> None:
    """`purge_once` every `interval` seconds (+-10% jitter), until cancelled; failures are logged
    and retried at the next turn (a store restart must not end the loop)."""
    while True:
        await asyncio.sleep(interval * random.uniform(0.9, 1.1))
        try:
            tickets, tokens = await purge_once(sessions, ticket_seconds=ticket_seconds)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("store purge failed; retrying at the next interval")
            continue
        if tickets or tokens:
            log.info("store purged", extra={"tickets": tickets, "refresh_tokens": tokens})

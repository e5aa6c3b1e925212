"""Users, refresh-token families and socket tickets."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import bindparam, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import RefreshToken, User, WsTicket
from db.repositories.pagination import Page, paginate


async def get(session: AsyncSession, *, user_id: uuid.UUID) -> User | None:
    return await session.get(User, user_id)


async def get_many(session: AsyncSession, *, user_ids: set[uuid.UUID]) -> dict[uuid.UUID, User]:
    """The users with these ids that still exist, by id (one query)."""
    if not user_ids:
        return {}
    return {u.id: u for u in await session.scalars(select(User).where(User.id.in_(user_ids)))}


async def get_by_email(session: AsyncSession, *, email: str) -> User | None:
    return await session.scalar(select(User).where(User.email == email.lower()))


async def create(session: AsyncSession, *, email: str, name: str, role: str, password_hash: str) -> User:
    user = User(email=email.lower(), name=name, role=role, password_hash=password_hash)
    session.add(user)
    await session.flush()
    return user


async def add_refresh(
    session: AsyncSession, *, jti: uuid.UUID, family_id: uuid.UUID, user_id: uuid.UUID,
    expires_at: datetime, family_expires_at: datetime,
) -> RefreshToken:
    token = RefreshToken(id=jti, family_id=family_id, user_id=user_id, expires_at=expires_at,
                         family_expires_at=family_expires_at)
    session.add(token)
    await session.flush()
    return token


async def spend_refresh(session: AsyncSession, *, jti: uuid.UUID, now: datetime) -> bool:
    """Mark a live token spent; False when it was already spent or revoked (atomic across replicas)."""
    result = await session.execute(
        update(RefreshToken)
        .where(RefreshToken.id == jti, RefreshToken.spent_at.is_(None), RefreshToken.revoked_at.is_(None))
        .values(spent_at=now)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]  # an UPDATE's result is a CursorResult


async def get_refresh(session: AsyncSession, *, jti: uuid.UUID) -> RefreshToken | None:
    return await session.get(RefreshToken, jti)


async def revoke_family(session: AsyncSession, *, family_id: uuid.UUID, now: datetime) -> None:
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )


async def add_ticket(
    session: AsyncSession, *, token_hash: str, user_id: uuid.UUID, expires_at: datetime
) -> None:
    session.add(WsTicket(token_hash=token_hash, user_id=user_id, expires_at=expires_at))
    await session.flush()


class TicketHolder(NamedTuple):
    """What a socket's handshake needs of the user whose ticket it spent (not the ORM row)."""

    user_id: uuid.UUID
    role: str
    suspended: bool


_LIVE = (WsTicket.token_hash == bindparam("ticket"), WsTicket.used_at.is_(None),
         WsTicket.expires_at > bindparam("at", type_=WsTicket.expires_at.type))
# Built once: a handshake runs both (a burst of them runs them hundreds of times a second).
_LIVE_TICKET = (select(WsTicket.user_id, User.role, User.suspended_at)
                .join(User, User.id == WsTicket.user_id).where(*_LIVE))
_SPEND_TICKET = (update(WsTicket).where(*_LIVE).values(used_at=bindparam("at")).returning(WsTicket.user_id)
                 .execution_options(synchronize_session=False))  # no ticket object in the session to update


async def spend_ticket(session: AsyncSession, *, token_hash: str, now: datetime) -> TicketHolder | None:
    """The ticket's user if it was unspent and unexpired, spent by one conditional UPDATE so it
    works once across replicas. An unknown, expired or spent ticket is only read: a flood of
    bogus tickets must not queue on the store's writer (SQLite has one). The read brings the
    user's role and suspension with it, so the handshake needs no query of its own for them."""
    params = {"ticket": token_hash, "at": now}
    live = (await session.execute(_LIVE_TICKET, params)).first()
    if live is None:
        return None
    user_id = await session.scalar(_SPEND_TICKET, params)
    if user_id is None:  # spent meanwhile, on another replica
        return None
    return TicketHolder(user_id, live.role, live.suspended_at is not None)


async def purge_tickets(session: AsyncSession, *, expired_before: datetime) -> int:
    """Delete tickets (spent or not) that expired before `expired_before`; the number deleted."""
    result = await session.execute(delete(WsTicket).where(WsTicket.expires_at < expired_before))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def purge_refresh_tokens(session: AsyncSession, *, expired_before: datetime) -> int:
    """Delete refresh tokens that expired before `expired_before`; the number deleted. An expired
    token is refused by its own signature's `exp` before the store is asked, so neither rotation
    nor reuse detection needs its row."""
    result = await session.execute(delete(RefreshToken).where(RefreshToken.expires_at < expired_before))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def revoke_all_refresh(session: AsyncSession, *, user_id: uuid.UUID, now: datetime) -> int:
    """Revoke every live refresh token of the user (all families); returns how many."""
    result = await session.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def search(
    session: AsyncSession, *, q: str | None, role: str | None, limit: int, cursor: str | None
) -> Page[User]:
    """Users whose email or name contains `q` (case-insensitive), optionally of one role."""
    stmt = select(User)
    if q:
        pattern = "%" + q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        stmt = stmt.where(or_(func.lower(User.email).like(pattern, escape="\\"),
                              func.lower(User.name).like(pattern, escape="\\")))
    if role:
        stmt = stmt.where(User.role == role)
    return await paginate(session, stmt, model=User, limit=limit, cursor=cursor)

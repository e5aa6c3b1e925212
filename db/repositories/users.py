"""Users, refresh-token families and socket tickets."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import bindparam, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
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


class TicketHolder(NamedTuple):
    """What a socket's handshake needs of the user whose ticket it spent (not the ORM row)."""

    user_id: uuid.UUID
    role: str
    suspended: bool


# Built once: a handshake runs both (a burst of them runs them hundreds of times a second).
_HOLDER = select(User.role, User.suspended_at).where(User.id == bindparam("user_id"))
_SPENDS = {dialect: (insert_for(WsTicket)
                     .values(token_hash=bindparam("ticket"), user_id=bindparam("user_id"),
                             expires_at=bindparam("expires_at", type_=WsTicket.expires_at.type),
                             used_at=bindparam("at", type_=WsTicket.used_at.type))
                     .on_conflict_do_nothing(index_elements=[WsTicket.token_hash])
                     .returning(WsTicket.token_hash))
           for dialect, insert_for in (("postgresql", postgresql.insert), ("sqlite", sqlite.insert))}


async def spend_ticket(session: AsyncSession, *, token_hash: str, user_id: uuid.UUID, expires_at: datetime,
                       now: datetime) -> TicketHolder | None:
    """Spend a genuine ticket (`serve_app.auth.check_ticket` vouched for its user and expiry) of
    `user_id`: its holder, or None when it was spent before (here or on another replica) or its
    user is gone. Issuing a ticket stored nothing; spending it inserts its hash, and the primary
    key lets one insert succeed across replicas (`ON CONFLICT DO NOTHING`: a replay is no error).
    The user's role and suspension are read first; a suspended user's ticket is returned
    unspent (`suspended`): it writes nothing, the handshake refuses it."""
    holder = (await session.execute(_HOLDER, {"user_id": user_id})).first()
    if holder is None:
        return None
    if holder.suspended_at is not None:
        return TicketHolder(user_id, holder.role, True)
    spend = _SPENDS[session.get_bind().dialect.name]
    params = {"ticket": token_hash, "user_id": user_id, "expires_at": expires_at, "at": now}
    try:
        spent = await session.scalar(spend, params)
    except IntegrityError:  # the user was deleted after the read above (their rows cascade)
        return None
    if spent is None:  # spent before
        return None
    return TicketHolder(user_id, holder.role, False)


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

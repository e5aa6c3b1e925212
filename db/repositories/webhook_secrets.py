"""Per-user webhook signing secrets."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import WebhookSecret
from db.repositories import upsert


async def get(session: AsyncSession, *, user_id: uuid.UUID) -> WebhookSecret | None:
    return await session.scalar(select(WebhookSecret).where(WebhookSecret.user_id == user_id)
                                .execution_options(populate_existing=True))


async def ensure(session: AsyncSession, *, user_id: uuid.UUID, secret: str, now: datetime) -> WebhookSecret:
    """The user's secret, storing `secret` first if they have none (concurrent callers agree)."""
    await session.execute(upsert.insert(session, WebhookSecret)
                          .values(user_id=user_id, secret=secret, created_at=now)
                          .on_conflict_do_nothing(index_elements=[WebhookSecret.user_id]))
    stored = await get(session, user_id=user_id)
    assert stored is not None
    return stored


async def replace(session: AsyncSession, *, user_id: uuid.UUID, secret: str, now: datetime) -> WebhookSecret:
    """Rotate: `secret` signs every delivery from now on."""
    await session.execute(upsert.insert(session, WebhookSecret)
                          .values(user_id=user_id, secret=secret, created_at=now)
                          .on_conflict_do_update(index_elements=[WebhookSecret.user_id],
                                                 set_={"secret": secret, "created_at": now}))
    stored = await get(session, user_id=user_id)
    assert stored is not None
    return stored

"""The append-only audit log: admin actions and teachers' overrides (who, what, target, when).

Only `append` and reads exist here; nothing updates or deletes a row (PostgreSQL refuses it too).
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import AuditEvent
from db.repositories.pagination import Page, paginate


async def append(
    session: AsyncSession, *, actor_id: uuid.UUID | None, action: str, target_type: str, target_id: Any,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Add an event in the caller's transaction, so the action and its record commit together."""
    event = AuditEvent(actor_id=actor_id, action=action, target_type=target_type, target_id=str(target_id),
                       details=details or {})
    session.add(event)
    await session.flush()
    return event


async def list_events(
    session: AsyncSession, *, actor_id: uuid.UUID | None, action: str | None, limit: int, cursor: str | None
) -> Page[AuditEvent]:
    stmt = select(AuditEvent)
    if actor_id is not None:
        stmt = stmt.where(AuditEvent.actor_id == actor_id)
    if action is not None:
        stmt = stmt.where(AuditEvent.action == action)
    return await paginate(session, stmt, model=AuditEvent, limit=limit, cursor=cursor)

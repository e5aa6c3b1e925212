"""Administration (role `admin`; `essaycoach create-admin` makes the first one).

- `GET /admin/users?q=&role=`: paginated search by email or name.
- `POST /admin/users/{id}/suspend`: the account stops at once: its access tokens answer 401
  `account_suspended` (the user row is read on every request anyway, so this costs no query), every
  refresh-token family is revoked, login answers 403 `account_suspended`, socket tickets are
  refused, and its open sockets on every replica close with 4401.
- `POST /admin/users/{id}/reactivate`: lifts it (the user logs in again; old refresh tokens stay revoked).
- `PATCH /admin/users/{id}` `{role}`: change the role. An admin cannot suspend or demote themself
  (409 `self_action`), so an installation cannot lose its last admin that way.
- `GET /admin/audit?actor=&action=`: the append-only audit log, oldest first, paginated; each
  event carries `actor_name` / `actor_email` (the actor as they are now; null once deleted).
- `DELETE /admin/users/{id}`: delete a student and everything of theirs (serve_app/api/privacy.py).

Each action is recorded in the audit log in the same transaction as the change.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import Field

from db.models import User
from db.repositories import audit, users
from db.types import utcnow
from serve_app.deps import ContextDep, PageDep, SessionDep, require_role
from serve_app.errors import Conflict, NotFound
from serve_app.realtime.control import close_sockets
from serve_app.realtime.protocol import CloseCode
from serve_app.schemas import Body, Out, PageOut, dump

router = APIRouter(prefix="/admin", tags=["admin"])

Admin = Annotated[User, Depends(require_role("admin"))]


class AdminUserOut(Out):
    id: uuid.UUID
    email: str
    name: str
    role: str
    created_at: datetime
    suspended_at: datetime | None


class RoleIn(Body):
    role: Literal["student", "teacher", "admin"]


class AuditEventOut(Out):
    id: int
    actor_id: uuid.UUID | None
    actor_name: str | None = Field(None, description="The actor's current name (null: no actor, or since deleted)")
    actor_email: str | None = None
    action: str
    target_type: str
    target_id: str
    details: dict[str, Any]
    created_at: datetime


async def target_user(session: SessionDep, admin: User, user_id: uuid.UUID, what: str) -> User:
    user = await users.get(session, user_id=user_id)
    if user is None:
        raise NotFound("no such user")
    if user.id == admin.id:
        raise Conflict(f"an admin cannot {what} their own account", code="self_action")
    return user


@router.get("/users", response_model=PageOut[AdminUserOut])
async def list_users(
    session: SessionDep, admin: Admin, page: PageDep,
    q: Annotated[str | None, Query(max_length=200, description="part of the email or name")] = None,
    role: Annotated[Literal["student", "teacher", "admin"] | None, Query()] = None,
) -> dict[str, Any]:
    result = await users.search(session, q=q, role=role, limit=page.limit, cursor=page.cursor)
    return {"items": [dump(AdminUserOut, u) for u in result.items], "next_cursor": result.next_cursor}


@router.post("/users/{user_id}/suspend", response_model=AdminUserOut)
async def suspend_user(user_id: uuid.UUID, ctx: ContextDep, session: SessionDep, admin: Admin) -> dict[str, Any]:
    user = await target_user(session, admin, user_id, "suspend")
    now = utcnow()
    revoked = 0
    if user.suspended_at is None:
        user.suspended_at = now
        revoked = await users.revoke_all_refresh(session, user_id=user.id, now=now)
        await audit.append(session, actor_id=admin.id, action="user.suspend", target_type="user",
                           target_id=user.id, details={"revoked_refresh_tokens": revoked})
    out = dump(AdminUserOut, user)
    await session.commit()
    await close_sockets(ctx.hosts.bus, user_id=user_id, code=CloseCode.BAD_TICKET, reason="account suspended")
    return out


@router.post("/users/{user_id}/reactivate", response_model=AdminUserOut)
async def reactivate_user(user_id: uuid.UUID, session: SessionDep, admin: Admin) -> dict[str, Any]:
    user = await target_user(session, admin, user_id, "reactivate")
    if user.suspended_at is not None:
        user.suspended_at = None
        await audit.append(session, actor_id=admin.id, action="user.reactivate", target_type="user",
                           target_id=user.id, details={})
    out = dump(AdminUserOut, user)
    await session.commit()
    return out


@router.patch("/users/{user_id}", response_model=AdminUserOut)
async def change_role(user_id: uuid.UUID, body: RoleIn, session: SessionDep, admin: Admin) -> dict[str, Any]:
    user = await target_user(session, admin, user_id, "change the role of")
    if user.role != body.role:
        await audit.append(session, actor_id=admin.id, action="user.role", target_type="user", target_id=user.id,
                           details={"from": user.role, "to": body.role})
        user.role = body.role
    out = dump(AdminUserOut, user)
    await session.commit()
    return out


@router.get("/audit", response_model=PageOut[AuditEventOut])
async def list_audit(
    session: SessionDep, admin: Admin, page: PageDep,
    actor: Annotated[uuid.UUID | None, Query(description="the acting user's id")] = None,
    action: Annotated[str | None, Query(max_length=64, description="e.g. user.suspend, roster.remove")] = None,
) -> dict[str, Any]:
    """The audit log, oldest first; each event names its actor as they are now (one more query)."""
    result = await audit.list_events(session, actor_id=actor, action=action, limit=page.limit, cursor=page.cursor)
    actors = await users.get_many(session, user_ids={e.actor_id for e in result.items if e.actor_id is not None})
    items = []
    for e in result.items:
        who = actors.get(e.actor_id) if e.actor_id is not None else None
        items.append(AuditEventOut.model_validate(e).model_copy(
            update={"actor_name": who.name if who else None, "actor_email": who.email if who else None}))
    return {"items": [i.model_dump(mode="json") for i in items], "next_cursor": result.next_cursor}

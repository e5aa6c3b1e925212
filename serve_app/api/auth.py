"""Accounts and tokens: register, token, refresh (rotating, reuse-detecting), logout, ws-ticket, me."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Request, Response
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError

from db.models import User
from db.repositories import users
from serve_app.auth import (
    DUMMY_HASH,
    check_password_policy,
    decode_refresh,
    hash_password,
    issue_access,
    issue_refresh,
    new_ticket,
    verify_password,
)
from serve_app.deps import Context, ContextDep, CurrentUser, SessionDep
from serve_app.errors import Conflict, Forbidden, InvalidCredentials, InvalidToken, RateLimited, ValidationFailed
from serve_app.schemas import RefreshIn, RegisterIn, TicketOut, TokenIn, TokenOut, UserOut, dump

router = APIRouter(tags=["auth"])


def _now() -> datetime:
    return datetime.now(UTC)


@router.post("/auth/register", status_code=201, response_model=UserOut)
async def register(body: RegisterIn, ctx: ContextDep, session: SessionDep) -> dict[str, object]:
    check_password_policy(body.password, email=body.email, name=body.name)
    if await users.get_by_email(session, email=body.email):
        raise Conflict("an account with this email already exists", code="email_taken")
    # argon2 costs ~50 ms of CPU: off the event loop, below its priority (serve_app.cpu_work).
    password_hash = await ctx.passwords.run(hash_password, body.password)
    try:
        user = await users.create(session, email=body.email, name=body.name, role=body.role,
                                  password_hash=password_hash)
        await session.commit()
    except IntegrityError:  # a concurrent registration won the race for this email
        raise Conflict("an account with this email already exists", code="email_taken") from None
    return dump(UserOut, user)


async def _token_body(request: Request) -> TokenIn:
    """JSON `{email, password}` or an OAuth2 password form (`username`, `password`) for Swagger."""
    ctype = request.headers.get("content-type", "")
    try:
        if ctype.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()
            return TokenIn(email=str(form.get("username", "")), password=str(form.get("password", "")))
        return TokenIn.model_validate_json(await request.body())
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ValidationFailed(f"{where}: {first['msg']}") from None


async def _issue_pair(ctx: Context, session: SessionDep, user: User, family_id: uuid.UUID,
                      family_expires_at: datetime) -> TokenOut:
    now = _now()
    jti = uuid.uuid4()
    expires_at = min(now + timedelta(seconds=ctx.settings.refresh_token_seconds), family_expires_at)
    await users.add_refresh(session, jti=jti, family_id=family_id, user_id=user.id,
                            expires_at=expires_at, family_expires_at=family_expires_at)
    return TokenOut(
        access_token=issue_access(ctx.settings, user_id=user.id, role=user.role, now=now),
        refresh_token=issue_refresh(ctx.settings, user_id=user.id, jti=jti, family_id=family_id,
                                    expires_at=expires_at, now=now),
        expires_in=ctx.settings.access_token_seconds,
    )


@router.post(
    "/auth/token", response_model=TokenOut,
    openapi_extra={"requestBody": {"content": {
        "application/json": {"schema": TokenIn.model_json_schema()},
        "application/x-www-form-urlencoded": {"schema": {
            "type": "object", "required": ["username", "password"],
            "properties": {"username": {"type": "string"}, "password": {"type": "string"}}}},
    }}},
)
async def token(request: Request, ctx: ContextDep, session: SessionDep) -> TokenOut:
    body = await _token_body(request)
    account = body.email.lower()
    ip = ctx.client_address(request.scope)
    wait = await ctx.throttle.wait(ip=ip, account=account)
    if wait:
        raise RateLimited("too many failed logins; try again later", retry_after=wait)
    user = await users.get_by_email(session, email=account)
    ok = await ctx.passwords.run(verify_password, user.password_hash if user else DUMMY_HASH, body.password)
    if user is None or not ok:
        await ctx.throttle.failed(ip=ip, account=account)
        raise InvalidCredentials()
    if user.suspended_at is not None:
        raise Forbidden("the account is suspended; contact an administrator", code="account_suspended")
    family_expires_at = _now() + timedelta(seconds=ctx.settings.refresh_absolute_seconds)
    pair = await _issue_pair(ctx, session, user, uuid.uuid4(), family_expires_at)
    await session.commit()
    return pair


@router.post("/auth/refresh", response_model=TokenOut)
async def refresh(body: RefreshIn, ctx: ContextDep, session: SessionDep) -> TokenOut:
    claims = decode_refresh(ctx.settings, body.refresh_token)
    now = _now()
    if not await users.spend_refresh(session, jti=claims.jti, now=now):
        stored = await users.get_refresh(session, jti=claims.jti)
        if stored is not None:
            # A spent token came back: someone holds a copy. Revoke every token of the family.
            await users.revoke_family(session, family_id=stored.family_id, now=now)
            await session.commit()
        raise InvalidToken("refresh token was already used or revoked; log in again")
    stored = await users.get_refresh(session, jti=claims.jti)
    user = await users.get(session, user_id=claims.user_id)
    if stored is None or user is None or stored.family_expires_at <= now:
        raise InvalidToken("refresh token has expired; log in again")
    pair = await _issue_pair(ctx, session, user, stored.family_id, stored.family_expires_at)
    await session.commit()
    return pair


@router.post("/auth/logout", status_code=204)
async def logout(body: RefreshIn, ctx: ContextDep, session: SessionDep, user: CurrentUser) -> Response:
    claims = decode_refresh(ctx.settings, body.refresh_token)
    if claims.user_id == user.id:
        await users.revoke_family(session, family_id=claims.family_id, now=_now())
        await session.commit()
    return Response(status_code=204)


@router.post("/auth/ws-ticket", response_model=TicketOut)
async def ws_ticket(ctx: ContextDep, user: CurrentUser) -> TicketOut:
    """A socket ticket; at most `WS_TICKETS_PER_USER_PER_MINUTE` per user: a bucket of that size
    per user, drained evenly over the minute (`ctx.tickets_limit`: shared by replicas through
    Redis when configured, else this replica's memory; concurrent requests may overshoot by
    their number). The ticket is
    signed with its user and expiry (`serve_app.auth.new_ticket`): issuing it writes nothing to
    the store; the handshake that spends it does (one row)."""
    limit = ctx.tickets_limit
    if limit is not None:
        wait = await limit.wait(str(user.id))
        if wait:
            raise RateLimited("too many socket tickets; open fewer sockets", retry_after=wait)
    ttl = ctx.settings.ws_ticket_seconds
    raw = new_ticket(ctx.settings, user_id=user.id, expires_at=_now() + timedelta(seconds=ttl))
    if limit is not None:
        await limit.hit(str(user.id))
    return TicketOut(ticket=raw, expires_in=ttl)


@router.get("/me", response_model=UserOut)
async def me(user: CurrentUser) -> dict[str, object]:
    return dump(UserOut, user)



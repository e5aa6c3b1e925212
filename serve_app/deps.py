"""FastAPI dependencies: the per-process context, a session, the caller, pagination."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from db.models import User
from db.repositories import users
from serve_app.auth import decode_access
from serve_app.client_address import Network, scope_client_address
from serve_app.cpu_work import CpuWork
from serve_app.errors import Forbidden, InvalidToken, Unauthorized
from serve_app.observability import Metrics
from serve_app.ratelimit import BucketStore, LoginThrottle, RateLimit
from serve_app.settings import Settings

if TYPE_CHECKING:
    from serve_app.hosts import EssayHosts


@dataclass
class Context:
    """Everything one Gateway replica holds; built in the app's lifespan, never at import."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    throttle: LoginThrottle
    hosts: EssayHosts  # the essay hosts (serve_app.hosts)
    metrics: Metrics
    clock: Callable[[], float]
    submission_runner: Any = None
    buckets: BucketStore | None = None
    trusted_proxies: tuple[Network, ...] = ()
    submissions_limit: RateLimit | None = None
    tickets_limit: RateLimit | None = None
    coach_limit: RateLimit | None = None
    # The coach chat's answerer (actors.analysis.coach.Coach), built in the lifespan.
    coach: Any = None
    # CPU-heavy request work at a priority below the loop's (serve_app.cpu_work): argon2 in a
    # lane of its own, uploads' text extraction and replay texts in the other.
    passwords: CpuWork = field(default_factory=lambda: CpuWork(name="cpu-work-passwords"))
    cpu: CpuWork = field(default_factory=CpuWork)

    def client_address(self, scope: Any) -> str:
        """The caller's address: the peer, or X-Forwarded-For through trusted proxies only."""
        return scope_client_address(scope, self.trusted_proxies)


async def get_context(request: Request) -> Context:
    return request.app.state.ctx  # type: ignore[no-any-return]


ContextDep = Annotated[Context, Depends(get_context)]


async def get_session(ctx: ContextDep) -> AsyncIterator[AsyncSession]:
    async with ctx.sessions() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]

# OAuth2 password flow in the OpenAPI document, so Swagger's Authorize button logs in.
_bearer = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)


async def get_current_user(
    ctx: ContextDep, session: SessionDep,
    token: Annotated[str | None, Depends(_bearer)],
) -> User:
    if not token:
        raise Unauthorized("send an access token as 'Authorization: Bearer <token>'")
    claims = decode_access(ctx.settings, token)
    user = await users.get(session, user_id=claims.user_id)
    if user is None:
        raise InvalidToken("the token's user no longer exists")
    # The row is loaded for every request anyway, so a suspension stops access tokens at once at
    # no extra cost (sockets are closed by the suspension itself, not checked per frame).
    if user.suspended_at is not None:
        raise InvalidToken("the account is suspended", code="account_suspended")
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


def require_role(*roles: str) -> Callable[[User], Awaitable[User]]:
    async def check(user: CurrentUser) -> User:
        if user.role not in roles and user.role != "admin":
            raise Forbidden(f"this needs the {' or '.join(roles)} role")
        return user

    return check


Teacher = Annotated[User, Depends(require_role("teacher"))]
Student = Annotated[User, Depends(require_role("student"))]


@dataclass(frozen=True)
class PageParams:
    limit: int
    cursor: str | None


async def page_params(
    limit: Annotated[int, Query(ge=1, le=200, description="Page size")] = 50,
    cursor: Annotated[str | None, Query(max_length=512, description="next_cursor of the previous page")] = None,
) -> PageParams:
    return PageParams(limit, cursor)


PageDep = Annotated[PageParams, Depends(page_params)]


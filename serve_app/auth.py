"""Passwords (argon2id) and tokens (HS256 JWT). Pure functions over a `Settings`; no I/O.

Access and refresh tokens are told apart by the `typ` claim, so neither can stand in for the
other. Refresh tokens also carry `jti` and `fam` (their rotation family) for reuse detection.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from zxcvbn import matching

from serve_app.errors import InvalidToken, ValidationFailed
from serve_app.settings import Settings

ALGORITHM = "HS256"
ACCESS = "access"
REFRESH = "refresh"

# OWASP's argon2id floor: m = 19 MiB, t = 2, p = 1.
HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
# A hash of a throwaway password so unknown-email logins spend the same time as real ones.
DUMMY_HASH = HASHER.hash("not-a-real-password-at-all")


def hash_password(password: str) -> str:
    return HASHER.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return HASHER.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def check_password_policy(password: str, *, email: str = "", name: str = "") -> None:
    """8..128 characters, not one of the 30,000 most common passwords, not the email or name."""
    if not 8 <= len(password) <= 128:
        raise ValidationFailed("password must be 8 to 128 characters long")
    lowered = password.lower()
    if lowered in matching.RANKED_DICTIONARIES["passwords"]:
        raise ValidationFailed("password is too common; choose a less guessable one",
                               errors=[{"loc": ["body", "password"], "msg": "too common"}])
    local = email.split("@", 1)[0].lower()
    if lowered in {local, email.lower(), name.lower()}:
        raise ValidationFailed("password must not be your email or name")


@dataclass(frozen=True)
class AccessClaims:
    user_id: uuid.UUID
    role: str


@dataclass(frozen=True)
class RefreshClaims:
    user_id: uuid.UUID
    jti: uuid.UUID
    family_id: uuid.UUID
    expires_at: datetime


def _encode(settings: Settings, claims: dict[str, Any]) -> str:
    return jwt.encode(claims, settings.jwt_secret, algorithm=ALGORITHM)


def _decode(settings: Settings, token: str, typ: str) -> dict[str, Any]:
    try:
        claims = jwt.decode(
            token,
            settings.jwt_secret,
            algorithms=[ALGORITHM],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            options={"require": ["exp", "iat", "iss", "aud", "sub", "typ"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise InvalidToken("token has expired") from exc
    except jwt.PyJWTError as exc:
        raise InvalidToken("token is invalid") from exc
    if claims.get("typ") != typ:
        raise InvalidToken(f"expected an {typ} token")
    return claims


def issue_access(settings: Settings, *, user_id: uuid.UUID, role: str, now: datetime) -> str:
    return _encode(settings, {
        "iss": settings.jwt_issuer, "aud": settings.jwt_audience, "sub": str(user_id),
        "role": role, "typ": ACCESS, "iat": now,
        "exp": now + timedelta(seconds=settings.access_token_seconds),
    })


def issue_refresh(
    settings: Settings, *, user_id: uuid.UUID, jti: uuid.UUID, family_id: uuid.UUID, expires_at: datetime,
    now: datetime,
) -> str:
    return _encode(settings, {
        "iss": settings.jwt_issuer, "aud": settings.jwt_audience, "sub": str(user_id),
        "typ": REFRESH, "jti": str(jti), "fam": str(family_id), "iat": now, "exp": expires_at,
    })


def decode_access(settings: Settings, token: str) -> AccessClaims:
    claims = _decode(settings, token, ACCESS)
    try:
        return AccessClaims(uuid.UUID(claims["sub"]), str(claims["role"]))
    except (KeyError, ValueError) as exc:
        raise InvalidToken("token is invalid") from exc


def decode_refresh(settings: Settings, token: str) -> RefreshClaims:
    claims = _decode(settings, token, REFRESH)
    try:
        return RefreshClaims(
            uuid.UUID(claims["sub"]), uuid.UUID(claims["jti"]), uuid.UUID(claims["fam"]),
            datetime.fromtimestamp(claims["exp"], UTC),
        )
    except (KeyError, ValueError) as exc:
        raise InvalidToken("token is invalid") from exc


@dataclass(frozen=True)
class TicketClaims:
    """What a genuine, unexpired socket ticket says: whose it is and until when it works."""

    user_id: uuid.UUID
    expires_at: datetime


def new_ticket(settings: Settings, *, user_id: uuid.UUID, expires_at: datetime) -> str:
    """A socket ticket for `user_id`, working until `expires_at`. Issuing it writes nothing.

    The ticket carries its user id, its expiry and an HMAC tag over both (keyed from the JWT
    secret, shared by every replica): `check_ticket` refuses a made-up, altered or expired ticket
    without asking the store, so a flood of bogus handshakes costs neither reads nor the store's
    single writer. Single use is the handshake's: it spends the ticket by inserting its hash
    (`users.spend_ticket`; the primary key refuses a second spend, on any replica).

    Format: 24 random URL-safe characters (144 bits: two tickets never share a hash), the user id
    (16 bytes, 22 URL-safe base64 characters), the expiry (unix seconds, 8 hex digits), the tag
    (24 characters); 78 in all, opaque to clients. Tickets of the previous format (56 characters,
    each stored as a row when issued) are refused by their length: one in flight at an upgrade
    fails once, and its client fetches a fresh ticket when it reconnects, as after any refusal.
    """
    user = base64.urlsafe_b64encode(user_id.bytes).decode().rstrip("=")
    body = secrets.token_urlsafe(_TICKET_RANDOM_BYTES) + user + f"{int(expires_at.timestamp()):08x}"
    return body + _ticket_tag(settings, body)


def check_ticket(settings: Settings, raw: str, *, now: datetime) -> TicketClaims | None:
    """The ticket's user and expiry when `raw` is one of our tickets and has not expired, else
    None (no I/O). Whether it was spent, and whether its user may still open sockets, is the
    store's business."""
    if len(raw) != _TICKET_CHARS or not raw.isascii() or not _TICKET_ALPHABET.issuperset(raw):
        return None
    body, tag = raw[:_TICKET_BODY_CHARS], raw[_TICKET_BODY_CHARS:]
    if not hmac.compare_digest(tag, _ticket_tag(settings, body)):
        return None
    expires_at = datetime.fromtimestamp(int(body[-8:], 16), UTC)
    if expires_at <= now:
        return None
    user = body[_TICKET_RANDOM_CHARS:_TICKET_RANDOM_CHARS + _TICKET_USER_CHARS]
    return TicketClaims(uuid.UUID(bytes=base64.urlsafe_b64decode(user + "==")), expires_at)


def _ticket_tag(settings: Settings, body: str) -> str:
    key = hmac.new(settings.jwt_secret.encode(), b"ws-ticket", hashlib.sha256).digest()
    return base64.urlsafe_b64encode(hmac.new(key, body.encode(), hashlib.sha256).digest()[:18]).decode()


_TICKET_RANDOM_BYTES = 18  # 24 URL-safe characters, 144 random bits
_TICKET_RANDOM_CHARS = 24
_TICKET_USER_CHARS = 22  # a UUID's 16 bytes in URL-safe base64, unpadded
_TICKET_BODY_CHARS = _TICKET_RANDOM_CHARS + _TICKET_USER_CHARS + 8  # random part, user id, expiry (8 hex digits)
_TICKET_CHARS = _TICKET_BODY_CHARS + 24  # HMAC-SHA256 tag, 18 bytes in URL-safe base64
_TICKET_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def ticket_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()

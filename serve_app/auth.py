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


def new_ticket(settings: Settings, *, expires_at: datetime) -> tuple[str, str]:
    """A socket ticket and the hash under which it is stored (the raw ticket is never stored).

    The ticket carries its expiry and an HMAC tag (keyed from the JWT secret, shared by every
    replica): `check_ticket` refuses a made-up or expired ticket without asking the store, so a
    flood of bogus handshakes costs neither reads nor the store's single writer.
    """
    body = secrets.token_urlsafe(_TICKET_RANDOM_BYTES) + f"{int(expires_at.timestamp()):08x}"
    raw = body + _ticket_tag(settings, body)
    return raw, ticket_hash(raw)


def check_ticket(settings: Settings, raw: str, *, now: datetime) -> datetime | None:
    """The ticket's expiry when `raw` is one of our tickets and has not expired, else None (no I/O).
    Whether it was spent is the store's business."""
    if len(raw) != _TICKET_CHARS or not raw.isascii() or not _TICKET_ALPHABET.issuperset(raw):
        return None
    body, tag = raw[:_TICKET_BODY_CHARS], raw[_TICKET_BODY_CHARS:]
    if not hmac.compare_digest(tag, _ticket_tag(settings, body)):
        return None
    expires_at = datetime.fromtimestamp(int(body[-8:], 16), UTC)
    return expires_at if expires_at > now else None


def _ticket_tag(settings: Settings, body: str) -> str:
    key = hmac.new(settings.jwt_secret.encode(), b"ws-ticket", hashlib.sha256).digest()
    return base64.urlsafe_b64encode(hmac.new(key, body.encode(), hashlib.sha256).digest()[:18]).decode()


_TICKET_RANDOM_BYTES = 18  # 24 URL-safe characters, 144 random bits
_TICKET_BODY_CHARS = 24 + 8  # random part, expiry (unix seconds, 8 hex digits)
_TICKET_CHARS = _TICKET_BODY_CHARS + 24  # HMAC-SHA256 tag, 18 bytes in URL-safe base64
_TICKET_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def ticket_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()

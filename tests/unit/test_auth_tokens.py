"""Token and password functions of serve_app.auth, without a store or an app."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest

from serve_app.auth import (
    check_password_policy,
    check_ticket,
    decode_access,
    decode_refresh,
    hash_password,
    issue_access,
    issue_refresh,
    new_ticket,
    ticket_hash,
    verify_password,
)
from serve_app.errors import InvalidToken, ValidationFailed
from serve_app.settings import Settings

SECRET = "unit-secret-" + "z" * 60  # >= 64 bytes, so HS512 below is refused for its algorithm alone
NOW = datetime.now(UTC)
USER = uuid.uuid4()


@pytest.fixture(autouse=True)
def _now() -> None:
    """Tokens here are issued "now" and expire in 15 minutes: taking the time at import made them
    expire when the unit tests ran more than 15 minutes into a `make test` (after tests/e2e and
    tests/integration)."""
    global NOW
    NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    var: Path = tmp_path_factory.mktemp("var")
    return Settings(jwt_secret=SECRET, dev_mode=False, var_dir=var, database_url="sqlite+aiosqlite://")


def _segments(token: str) -> tuple[dict[str, object], dict[str, object], str]:
    def load(part: str) -> dict[str, object]:
        return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))  # type: ignore[no-any-return]

    header, payload, signature = token.split(".")
    return load(header), load(payload), signature


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def _refresh(settings: Settings, **kw: object) -> str:
    args: dict[str, object] = {"user_id": USER, "jti": uuid.uuid4(), "family_id": uuid.uuid4(),
                               "expires_at": NOW + timedelta(days=1), "now": NOW}
    args.update(kw)
    return issue_refresh(settings, **args)  # type: ignore[arg-type]


def test_access_token_round_trips(settings: Settings) -> None:
    # Issued now, not at NOW (import time): a whole-suite run can outlive the token's 15 minutes.
    token = issue_access(settings, user_id=USER, role="teacher", now=datetime.now(UTC))
    claims = decode_access(settings, token)
    assert claims.user_id == USER and claims.role == "teacher"


def test_refresh_token_round_trips_with_its_family(settings: Settings) -> None:
    jti, fam = uuid.uuid4(), uuid.uuid4()
    claims = decode_refresh(settings, _refresh(settings, jti=jti, family_id=fam))
    assert (claims.user_id, claims.jti, claims.family_id) == (USER, jti, fam)


def test_alg_none_is_refused(settings: Settings) -> None:
    _, payload, _ = _segments(issue_access(settings, user_id=USER, role="student", now=NOW))
    token = _b64({"alg": "none", "typ": "JWT"}) + "." + _b64(payload) + "."
    with pytest.raises(InvalidToken):
        decode_access(settings, token)


def test_other_hmac_algorithm_is_refused(settings: Settings) -> None:
    _, payload, _ = _segments(issue_access(settings, user_id=USER, role="student", now=NOW))
    token = jwt.encode(payload, SECRET, algorithm="HS512")
    with pytest.raises(InvalidToken):
        decode_access(settings, token)


def test_tampered_payload_is_refused(settings: Settings) -> None:
    header, payload, signature = _segments(issue_access(settings, user_id=USER, role="student", now=NOW))
    payload["role"] = "admin"
    token = f"{_b64(header)}.{_b64(payload)}.{signature}"
    with pytest.raises(InvalidToken):
        decode_access(settings, token)


def test_expired_access_token_is_refused(settings: Settings) -> None:
    token = issue_access(settings, user_id=USER, role="student", now=NOW - timedelta(hours=1))
    with pytest.raises(InvalidToken, match="expired"):
        decode_access(settings, token)


@pytest.mark.parametrize("claim", ["aud", "iss"])
def test_wrong_audience_or_issuer_is_refused(settings: Settings, claim: str) -> None:
    _, payload, _ = _segments(issue_access(settings, user_id=USER, role="student", now=NOW))
    payload[claim] = "someone-else"
    with pytest.raises(InvalidToken):
        decode_access(settings, jwt.encode(payload, SECRET, algorithm="HS256"))


@pytest.mark.parametrize("claim", ["exp", "aud", "sub", "typ"])
def test_token_missing_a_required_claim_is_refused(settings: Settings, claim: str) -> None:
    _, payload, _ = _segments(issue_access(settings, user_id=USER, role="student", now=NOW))
    del payload[claim]
    with pytest.raises(InvalidToken):
        decode_access(settings, jwt.encode(payload, SECRET, algorithm="HS256"))


def test_refresh_token_is_not_an_access_token(settings: Settings) -> None:
    with pytest.raises(InvalidToken):
        decode_access(settings, _refresh(settings))


def test_access_token_is_not_a_refresh_token(settings: Settings) -> None:
    with pytest.raises(InvalidToken):
        decode_refresh(settings, issue_access(settings, user_id=USER, role="student", now=NOW))


def test_subject_that_is_not_a_uuid_is_refused(settings: Settings) -> None:
    _, payload, _ = _segments(issue_access(settings, user_id=USER, role="student", now=NOW))
    payload["sub"] = "1 OR 1=1"
    with pytest.raises(InvalidToken):
        decode_access(settings, jwt.encode(payload, SECRET, algorithm="HS256"))


def test_password_hash_verifies_only_the_right_password() -> None:
    stored = hash_password("violet-Harbor-93!")
    assert stored.startswith("$argon2id$")
    assert verify_password(stored, "violet-Harbor-93!")
    assert not verify_password(stored, "violet-Harbor-94!")
    assert not verify_password("not a hash", "violet-Harbor-93!")


@pytest.mark.parametrize("password", ["short", "x" * 129, "password123", "Qwerty123", "iloveyou"])
def test_password_policy_refuses_short_long_and_common(password: str) -> None:
    with pytest.raises(ValidationFailed):
        check_password_policy(password)


def test_password_policy_refuses_the_email_or_name() -> None:
    with pytest.raises(ValidationFailed):
        check_password_policy("Jonathan.Harker", email="jonathan.harker@example.com")
    with pytest.raises(ValidationFailed):
        check_password_policy("mina murray", name="Mina Murray")


def test_password_policy_accepts_a_strong_password() -> None:
    check_password_policy("violet-Harbor-93!", email="a@example.com", name="A")


def test_ticket_is_spent_under_its_hash_and_two_tickets_differ(settings: Settings) -> None:
    raw = new_ticket(settings, user_id=USER, expires_at=NOW + timedelta(seconds=60))
    other = new_ticket(settings, user_id=USER, expires_at=NOW + timedelta(seconds=60))
    assert raw not in ticket_hash(raw) and ticket_hash(raw) != ticket_hash(other)
    assert raw != other and len(raw) >= 32


def test_a_ticket_is_checked_without_the_store_made_up_tampered_or_expired_ones_fail(settings: Settings) -> None:
    expires = (NOW + timedelta(seconds=60)).replace(microsecond=0)
    raw = new_ticket(settings, user_id=USER, expires_at=expires)
    claims = check_ticket(settings, raw, now=NOW)
    assert claims is not None and (claims.user_id, claims.expires_at) == (USER, expires)
    assert check_ticket(settings, raw, now=expires) is None  # expired
    flipped = raw[:5] + ("A" if raw[5] != "A" else "B") + raw[6:]
    later = raw[:46] + f"{int(expires.timestamp()) + 3600:08x}" + raw[54:]  # a longer life, same tag
    assert len(later) == len(raw)
    for forged in (flipped, later, raw[:-1], raw + "A", secrets.token_urlsafe(60)[:78], "ä" * 78):
        assert check_ticket(settings, forged, now=NOW) is None
    other_secret = settings.model_copy(update={"jwt_secret": "another-secret-" + "y" * 40})
    assert check_ticket(other_secret, raw, now=NOW) is None


def test_a_ticket_with_another_user_s_id_put_in_is_refused(settings: Settings) -> None:
    raw = new_ticket(settings, user_id=USER, expires_at=NOW + timedelta(seconds=60))
    victim = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    forged = raw[:24] + victim + raw[46:]
    assert len(forged) == len(raw) and forged != raw
    assert check_ticket(settings, forged, now=NOW) is None


def test_a_ticket_of_the_previous_format_is_refused_by_its_shape(settings: Settings) -> None:
    """56 characters, random part + expiry + tag, no user id: one in flight at the upgrade fails
    once and its client asks a fresh ticket."""
    body = secrets.token_urlsafe(18) + f"{int((NOW + timedelta(seconds=60)).timestamp()):08x}"
    key = hmac.new(settings.jwt_secret.encode(), b"ws-ticket", hashlib.sha256).digest()
    old = body + base64.urlsafe_b64encode(hmac.new(key, body.encode(), hashlib.sha256).digest()[:18]).decode()
    assert len(old) == 56
    assert check_ticket(settings, old, now=NOW) is None

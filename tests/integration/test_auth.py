"""Accounts and tokens over the API: registration rules, token attacks, refresh rotation and reuse,
logout, socket tickets and /me (login throttling: test_login_throttle.py)."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import jwt
import pytest

from serve_app.auth import issue_access, issue_refresh
from serve_app.settings import Settings
from tests.conftest import TEST_SECRET
from tests.fakes import PASSWORD, assert_problem, login, register, register_with

ME = "/api/v1/me"


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def _claims(settings: Settings, user_id: str, **overrides: object) -> dict[str, object]:
    now = datetime.now(UTC)
    claims: dict[str, object] = {
        "iss": settings.jwt_issuer, "aud": settings.jwt_audience, "sub": user_id, "role": "teacher",
        "typ": "access", "iat": now, "exp": now + timedelta(minutes=5),
    }
    claims.update(overrides)
    return claims


async def _me_with(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.get(ME, headers={"Authorization": f"Bearer {token}"})


# --- registration -------------------------------------------------------------------------


async def test_register_returns_the_user_without_secrets(client: httpx.AsyncClient) -> None:
    email = f"New-{uuid.uuid4().hex[:8]}@Example.com"
    r = await register_with(client, email=email, name="Ada", role="teacher")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["email"] == email.lower()
    assert body["role"] == "teacher" and body["name"] == "Ada"
    assert set(body) >= {"id", "email", "name", "role", "created_at"}
    assert not any("password" in key for key in body)


async def test_register_refuses_admin_role(client: httpx.AsyncClient) -> None:
    assert_problem(await register_with(client, role="admin"), 422, "validation_failed")


async def test_register_refuses_common_password(client: httpx.AsyncClient) -> None:
    body = assert_problem(await register_with(client, password="password123"), 422, "validation_failed")
    assert "common" in body["detail"]


async def test_register_refuses_password_equal_to_email(client: httpx.AsyncClient) -> None:
    local = f"zq{uuid.uuid4().hex[:10]}"
    r = await register_with(client, email=f"{local}@example.com", password=local)
    assert_problem(r, 422, "validation_failed")


@pytest.mark.parametrize("password", ["Sh0rt!x", "x" * 129])
async def test_register_refuses_password_outside_8_to_128_chars(client: httpx.AsyncClient, password: str) -> None:
    assert_problem(await register_with(client, password=password), 422, "validation_failed")


@pytest.mark.parametrize("email", ["not-an-email", "a@", "@example.com", ""])
async def test_register_refuses_malformed_email(client: httpx.AsyncClient, email: str) -> None:
    assert_problem(await register_with(client, email=email), 422, "validation_failed")


async def test_register_duplicate_email_is_409_whatever_the_case(client: httpx.AsyncClient) -> None:
    email = f"dup-{uuid.uuid4().hex[:8]}@example.com"
    assert (await register_with(client, email=email)).status_code == 201
    assert_problem(await register_with(client, email=email), 409, "email_taken")
    assert_problem(await register_with(client, email=email.upper()), 409, "email_taken")


async def test_password_is_used_exactly_as_typed(client: httpx.AsyncClient) -> None:
    email = f"spaces-{uuid.uuid4().hex[:8]}@example.com"
    password = "  violet Harbor 93  "
    assert (await register_with(client, email=email, password=password)).status_code == 201
    assert (await login(client, email, password)).status_code == 200
    assert_problem(await login(client, email, password.strip()), 401, "invalid_credentials")


# --- login ----------------------------------------------------------------------------------


async def test_login_with_wrong_password_or_unknown_email_is_the_same_401(client: httpx.AsyncClient) -> None:
    user = await register(client)
    wrong = assert_problem(await login(client, user.email, "wrong-password-77"), 401, "invalid_credentials")
    unknown = assert_problem(await login(client, f"nobody-{uuid.uuid4().hex}@example.com"), 401,
                             "invalid_credentials")
    assert wrong["detail"] == unknown["detail"]


async def test_login_returns_bearer_pair(client: httpx.AsyncClient) -> None:
    user = await register(client)
    r = await login(client, user.email.upper())
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 15 * 60
    assert body["access_token"] and body["refresh_token"] and body["access_token"] != body["refresh_token"]


async def test_login_accepts_oauth2_password_form(client: httpx.AsyncClient) -> None:
    user = await register(client)
    r = await client.post("/api/v1/auth/token", data={"username": user.email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    assert (await _me_with(client, r.json()["access_token"])).json()["id"] == user.id


# --- token attacks --------------------------------------------------------------------------


async def test_missing_token_is_401_with_www_authenticate(client: httpx.AsyncClient) -> None:
    r = await client.get(ME)
    assert_problem(r, 401, "unauthorized")
    assert r.headers["www-authenticate"] == "Bearer"


async def test_alg_none_token_is_refused(client: httpx.AsyncClient, settings: Settings) -> None:
    user = await register(client)
    claims = _claims(settings, user.id)
    unsigned = jwt.encode(claims, None, algorithm="none")  # type: ignore[arg-type]
    assert_problem(await _me_with(client, unsigned), 401, "invalid_token")
    handmade = _b64({"alg": "none", "typ": "JWT"}) + "." + _b64(
        {**claims, "iat": 0, "exp": 2**40}) + "."
    assert_problem(await _me_with(client, handmade), 401, "invalid_token")


async def test_tampered_payload_is_refused(client: httpx.AsyncClient) -> None:
    student = await register(client, "student")
    other = await register(client, "teacher")
    header, payload, signature = student.access_token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = other.id
    claims["role"] = "admin"
    forged = f"{header}.{_b64(claims)}.{signature}"
    assert_problem(await _me_with(client, forged), 401, "invalid_token")


async def test_token_signed_with_another_secret_is_refused(client: httpx.AsyncClient, settings: Settings) -> None:
    user = await register(client)
    token = jwt.encode(_claims(settings, user.id), "another-secret-" + "y" * 40, algorithm="HS256")
    assert_problem(await _me_with(client, token), 401, "invalid_token")


async def test_expired_access_token_is_refused(client: httpx.AsyncClient, settings: Settings) -> None:
    user = await register(client)
    old = datetime.now(UTC) - timedelta(hours=1)
    token = issue_access(settings, user_id=uuid.UUID(user.id), role=user.role, now=old)
    body = assert_problem(await _me_with(client, token), 401, "invalid_token")
    assert "expired" in body["detail"]


@pytest.mark.parametrize("claim", [{"aud": "someone-else"}, {"iss": "someone-else"}])
async def test_token_for_another_audience_or_issuer_is_refused(
    client: httpx.AsyncClient, settings: Settings, claim: dict[str, str]
) -> None:
    user = await register(client)
    token = jwt.encode(_claims(settings, user.id, **claim), TEST_SECRET, algorithm="HS256")
    assert_problem(await _me_with(client, token), 401, "invalid_token")


async def test_refresh_token_cannot_be_used_as_access_token(client: httpx.AsyncClient) -> None:
    user = await register(client)
    assert_problem(await _me_with(client, user.refresh_token), 401, "invalid_token")


async def test_access_token_cannot_be_used_as_refresh_token(client: httpx.AsyncClient) -> None:
    user = await register(client)
    r = await client.post("/api/v1/auth/refresh", json={"refresh_token": user.access_token})
    assert_problem(r, 401, "invalid_token")


async def test_expired_refresh_token_is_refused(client: httpx.AsyncClient, settings: Settings) -> None:
    user = await register(client)
    old = datetime.now(UTC) - timedelta(days=1)
    token = issue_refresh(settings, user_id=uuid.UUID(user.id), jti=uuid.uuid4(), family_id=uuid.uuid4(),
                          expires_at=old + timedelta(minutes=1), now=old)
    assert_problem(await client.post("/api/v1/auth/refresh", json={"refresh_token": token}), 401,
                   "invalid_token")


async def test_well_signed_refresh_token_never_issued_is_refused(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    user = await register(client)
    now = datetime.now(UTC)
    token = issue_refresh(settings, user_id=uuid.UUID(user.id), jti=uuid.uuid4(), family_id=uuid.uuid4(),
                          expires_at=now + timedelta(days=1), now=now)
    assert_problem(await client.post("/api/v1/auth/refresh", json={"refresh_token": token}), 401,
                   "invalid_token")


# --- refresh rotation, reuse, logout -----------------------------------------------------------


async def _refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/api/v1/auth/refresh", json={"refresh_token": token})


async def test_refresh_rotates_and_spends_the_old_token(client: httpx.AsyncClient) -> None:
    user = await register(client)
    r = await _refresh(client, user.refresh_token)
    assert r.status_code == 200, r.text
    pair = r.json()
    assert pair["refresh_token"] != user.refresh_token
    assert (await _me_with(client, pair["access_token"])).json()["id"] == user.id
    assert_problem(await _refresh(client, user.refresh_token), 401, "invalid_token")


async def test_refresh_reuse_revokes_the_whole_family(client: httpx.AsyncClient) -> None:
    user = await register(client)
    second = (await _refresh(client, user.refresh_token)).json()["refresh_token"]
    third = (await _refresh(client, second)).json()["refresh_token"]
    # The first token comes back (stolen copy): the newest token of its family dies with it.
    assert_problem(await _refresh(client, user.refresh_token), 401, "invalid_token")
    assert_problem(await _refresh(client, third), 401, "invalid_token")


async def test_refresh_reuse_leaves_other_logins_alive(client: httpx.AsyncClient) -> None:
    user = await register(client)
    other_login = (await login(client, user.email)).json()["refresh_token"]
    await _refresh(client, user.refresh_token)
    await _refresh(client, user.refresh_token)
    assert (await _refresh(client, other_login)).status_code == 200


async def test_logout_revokes_the_refresh_family(client: httpx.AsyncClient) -> None:
    user = await register(client)
    rotated = (await _refresh(client, user.refresh_token)).json()
    r = await client.post("/api/v1/auth/logout", json={"refresh_token": rotated["refresh_token"]},
                          headers={"Authorization": f"Bearer {rotated['access_token']}"})
    assert r.status_code == 204
    assert_problem(await _refresh(client, rotated["refresh_token"]), 401, "invalid_token")


async def test_logout_cannot_revoke_another_users_session(client: httpx.AsyncClient) -> None:
    victim = await register(client)
    attacker = await register(client)
    r = await client.post("/api/v1/auth/logout", json={"refresh_token": victim.refresh_token},
                          headers=attacker.headers)
    assert r.status_code == 204
    assert (await _refresh(client, victim.refresh_token)).status_code == 200


async def test_logout_needs_an_access_token(client: httpx.AsyncClient) -> None:
    user = await register(client)
    r = await client.post("/api/v1/auth/logout", json={"refresh_token": user.refresh_token})
    assert_problem(r, 401, "unauthorized")


# --- ws-ticket and /me ------------------------------------------------------------------------


async def test_ws_ticket_is_fresh_opaque_and_short_lived(client: httpx.AsyncClient) -> None:
    user = await register(client)
    first = await client.post("/api/v1/auth/ws-ticket", headers=user.headers)
    second = await client.post("/api/v1/auth/ws-ticket", headers=user.headers)
    assert first.status_code == 200, first.text
    assert set(first.json()) == {"ticket", "expires_in"}
    assert first.json()["expires_in"] == 60
    assert len(first.json()["ticket"]) >= 32
    assert first.json()["ticket"] != second.json()["ticket"]
    assert_problem(await client.post("/api/v1/auth/ws-ticket"), 401, "unauthorized")


async def test_me_returns_the_caller(client: httpx.AsyncClient) -> None:
    user = await register(client, "teacher", name="Ms Me")
    body = (await client.get(ME, headers=user.headers)).json()
    assert body["id"] == user.id and body["email"] == user.email
    assert body["role"] == "teacher" and body["name"] == "Ms Me"
    assert "created_at" in body
    assert not any("password" in key for key in body)

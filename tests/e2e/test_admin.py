"""The admin pages in the browser (issue 16): an admin finds a student, suspends them (their open
editor's socket closes at once) and sees the entry in the audit log; changes a role; deletes a
student after typing their email. Non-admins never reach /admin. At 768 px, hostile names as text."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from playwright.async_api import expect

from tests.e2e.conftest import Service, screenshot
from tests.e2e.ui import by_id, doc_socket_closed, editor, fill, login
from tests.fakes import PASSWORD, make_admin, make_essay, register

HOSTILE_NAME = '<img src=x onerror="window.pwned = 1"> Ann'


def database_url(service: Service) -> str:
    """The service's SQLite store (conftest's service_env: <work>/var/essaycoach.db)."""
    return f"sqlite+aiosqlite:///{service.log.parent / 'var' / 'essaycoach.db'}"


async def test_admin_suspends_a_student_and_sees_it_in_the_audit_log(api: httpx.AsyncClient, app_built: Service,
                                                                     new_context: Any) -> None:
    admin = await make_admin(api, database_url(app_built))
    student = await register(api, "student", name=HOSTILE_NAME)
    essay = await make_essay(api, student, text="My own essay.")
    writer = await (await new_context(width=768)).new_page()
    closed = doc_socket_closed(writer, essay["id"])
    await login(writer, student.email)
    await writer.goto(f"/essays/{essay['id']}")
    await editor(writer)
    assert await writer.locator('[data-testid="nav-admin"]').count() == 0

    page = await (await new_context(width=768)).new_page()
    await login(page, admin.email)
    await by_id(page, "nav-admin").click()
    await page.wait_for_url("**/admin")
    await fill(page, "admin-search", student.email)
    await by_id(page, "admin-search-submit").click()
    row = by_id(page, "admin-user-row", user_id=student.id)
    await expect(row).to_contain_text(HOSTILE_NAME)
    await expect(by_id(page, "admin-user-row")).to_have_count(1)

    await by_id(row, "admin-suspend").click()
    dialog = page.locator('dialog[open][data-testid="confirm-dialog"]')
    await expect(by_id(dialog, "confirm-cancel")).to_be_focused()
    await screenshot(page, "40-tablet-admin-suspend-dialog")
    await by_id(dialog, "confirm-ok").click()
    await expect(row).to_have_attribute("data-suspended", "true")
    await expect(by_id(row, "admin-user-status")).to_contain_text("suspended")
    await asyncio.wait_for(closed, 10)  # the student's editor socket, closed by the server (4401)
    r = await api.post("/api/v1/auth/token", json={"email": student.email, "password": PASSWORD})
    assert r.status_code == 403 and r.json()["code"] == "account_suspended"

    await by_id(page, "audit-action").select_option("user.suspend")
    entry = by_id(page, "audit-row", action="user.suspend", target_id=student.id)
    await expect(entry).to_contain_text(admin.id)
    await screenshot(page, "41-tablet-admin-audit-log")

    await by_id(row, "admin-reactivate").click()
    await by_id(dialog, "confirm-ok").click()
    await expect(row).to_have_attribute("data-suspended", "false")
    assert (await api.post("/api/v1/auth/token", json={"email": student.email, "password": PASSWORD})).status_code == 200
    for p in (writer, page):
        assert await p.evaluate("window.pwned === undefined")
        assert await p.locator("img[src='x']").count() == 0


async def test_admin_changes_a_role_and_deletes_a_student_after_typing_their_email(
        api: httpx.AsyncClient, app_built: Service, new_context: Any) -> None:
    admin = await make_admin(api, database_url(app_built))
    teacher_to_be = await register(api, "student", name="Tara Promoted")
    leaver = await register(api, "student", name="Leo Leaving")
    page = await (await new_context(width=768)).new_page()
    await login(page, admin.email)
    await page.goto("/admin")

    await fill(page, "admin-search", teacher_to_be.email)
    await by_id(page, "admin-search-submit").click()
    row = by_id(page, "admin-user-row", user_id=teacher_to_be.id)
    await by_id(row, "admin-user-role").select_option("teacher")
    dialog = page.locator('dialog[open][data-testid="confirm-dialog"]')
    await by_id(dialog, "confirm-ok").click()
    await expect(by_id(row, "admin-user-role")).to_have_value("teacher")
    me = await api.get("/api/v1/me", headers=teacher_to_be.headers)
    assert me.json()["role"] == "teacher"

    await fill(page, "admin-search", leaver.email)
    await by_id(page, "admin-search-submit").click()
    row = by_id(page, "admin-user-row", user_id=leaver.id)
    await by_id(row, "admin-delete").click()
    ok = by_id(dialog, "confirm-ok")
    await expect(ok).to_be_disabled()
    await fill(dialog, "confirm-typed", teacher_to_be.email)
    await expect(ok).to_be_disabled()
    await fill(dialog, "confirm-typed", leaver.email)
    await screenshot(page, "42-tablet-admin-delete-student")
    await ok.click()
    await expect(row).to_have_count(0)
    r = await api.post("/api/v1/auth/token", json={"email": leaver.email, "password": PASSWORD})
    assert r.status_code == 401
    await by_id(page, "audit-action").select_option("user.delete")
    await expect(by_id(page, "audit-row", action="user.delete", target_id=leaver.id)).to_be_visible()

    # A teacher never reaches the admin page.
    teacher_page = await (await new_context()).new_page()
    await login(teacher_page, teacher_to_be.email)
    await teacher_page.goto("/admin")
    await teacher_page.wait_for_url("**/classes")
    # The nav renders a task after the shell (web/src/App.vue): wait for it before looking for the link.
    await expect(teacher_page.locator('[data-testid="nav-signout"]')).to_be_visible()
    assert await teacher_page.locator('[data-testid="nav-admin"]').count() == 0

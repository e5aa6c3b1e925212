"""Roster control in the browser (issue 16): a teacher removes a student from the class screen
(a confirmation dialog, keyboard first) and at once the student's open editor socket closes and
their card leaves the live class view; the join code rotates, co-teachers come and go by account
id, and the class archives; an extension given on the class screen reaches the student's open
editor and the live card. At 768 px, with a hostile student name. Set-up goes through REST."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from playwright.async_api import expect

from tests.e2e.conftest import screenshot
from tests.e2e.ui import by_id, doc_socket_closed, editor, fill, login
from tests.fakes import join, make_assignment, make_class, make_essay, register

HOSTILE_NAME = '<img src=x onerror="window.pwned = 1"> Sam'


async def test_teacher_removes_a_student_whose_editor_and_live_card_go_at_once(api: httpx.AsyncClient,
                                                                               new_context: Any) -> None:
    teacher = await register(api, "teacher", name="Ms Rivera")
    cls = await make_class(api, teacher, "English 9")
    assignment = await make_assignment(api, teacher, cls["id"])
    student = await register(api, "student", name=HOSTILE_NAME)
    stays = await register(api, "student", name="Lee Stays")
    for who in (student, stays):
        await join(api, who, cls["join_code"])
    essay = await make_essay(api, student, assignment["id"], text="Phones belong in classrooms.")

    writer = await (await new_context(width=768)).new_page()
    closed = doc_socket_closed(writer, essay["id"])
    await login(writer, student.email)
    await writer.goto(f"/essays/{essay['id']}")
    await editor(writer)

    teacher_context = await new_context(width=768)
    live = await teacher_context.new_page()
    await login(live, teacher.email)
    await live.goto(f"/classes/{cls['id']}/live")
    await expect(by_id(live, "live-card", student_id=student.id)).to_be_visible()
    page = await teacher_context.new_page()
    await page.goto(f"/classes/{cls['id']}")
    row = by_id(page, "roster-row", student_id=student.id)
    await expect(row).to_contain_text(HOSTILE_NAME)  # text, not markup

    # Keyboard: focus the row's Remove button, Enter opens the dialog with Cancel focused; Escape cancels.
    await by_id(row, "roster-remove").focus()
    await page.keyboard.press("Enter")
    dialog = page.locator('dialog[open][data-testid="confirm-dialog"]')
    await expect(dialog).to_be_visible()
    await expect(dialog).to_contain_text(HOSTILE_NAME)
    await expect(by_id(dialog, "confirm-cancel")).to_be_focused()
    await screenshot(page, "30-tablet-remove-student-dialog")
    await page.keyboard.press("Escape")
    await expect(dialog).to_have_count(0)
    assert not closed.done()
    await expect(row).to_be_visible()

    await by_id(row, "roster-remove").click()
    await by_id(dialog, "confirm-ok").click()
    await expect(dialog).to_have_count(0)
    await expect(row).to_have_count(0)
    await expect(by_id(page, "roster-row", student_id=stays.id)).to_be_visible()
    await asyncio.wait_for(closed, 10)  # the student's doc socket, closed by the server (4404)
    await expect(by_id(live, "live-card", student_id=student.id)).to_have_count(0)
    await expect(by_id(writer, "essay-refused")).to_contain_text("removed from this essay's class")
    await screenshot(live, "31-tablet-live-view-after-removal")
    r = await api.get(f"/api/v1/essays/{essay['id']}", headers=teacher.headers)
    assert r.status_code == 404
    for p in (writer, live, page):
        assert await p.evaluate("window.pwned === undefined")
        assert await p.locator("img[src='x']").count() == 0


async def test_teacher_rotates_the_code_adds_a_co_teacher_and_archives(api: httpx.AsyncClient,
                                                                       new_context: Any) -> None:
    teacher = await register(api, "teacher", name="Ms Rivera")
    co = await register(api, "teacher", name="Mr Co")
    cls = await make_class(api, teacher, "History 10")
    page = await (await new_context(width=768)).new_page()
    await login(page, teacher.email)
    await page.goto(f"/classes/{cls['id']}")
    await expect(by_id(page, "class-join-code")).to_have_text(cls["join_code"])

    await by_id(page, "rotate-join-code").click()
    dialog = page.locator('dialog[open][data-testid="confirm-dialog"]')
    await expect(dialog).to_contain_text(cls["join_code"])
    await by_id(dialog, "confirm-ok").click()
    await expect(by_id(page, "class-join-code")).not_to_have_text(cls["join_code"])
    new_code = (await by_id(page, "class-join-code").inner_text()).strip()
    late = await register(api, "student")
    r = await api.post("/api/v1/classes/join", json={"join_code": cls["join_code"]}, headers=late.headers)
    assert r.status_code == 404
    await join(api, late, new_code)

    await fill(page, "teacher-add-id", co.id)
    await by_id(page, "teacher-add").click()
    co_row = by_id(page, "teacher-row", teacher_id=co.id)
    await expect(co_row).to_contain_text("Mr Co")
    assert (await api.get(f"/api/v1/classes/{cls['id']}/students", headers=co.headers)).status_code == 200
    await screenshot(page, "32-tablet-class-co-teacher")
    co_live = await (await new_context()).new_page()
    await login(co_live, co.email)
    await co_live.goto(f"/classes/{cls['id']}/live")
    await expect(co_live.get_by_role("status").filter(has_text="Connection: open")).to_be_visible()
    await by_id(co_row, "teacher-remove").click()
    await by_id(dialog, "confirm-ok").click()
    await expect(co_row).to_have_count(0)
    # Their open live view is closed by the server at once (4404) and says why.
    await expect(by_id(co_live, "live-refused")).to_contain_text("no longer")
    assert (await api.get(f"/api/v1/classes/{cls['id']}/students", headers=co.headers)).status_code == 404

    await by_id(page, "class-archive").click()
    await by_id(dialog, "confirm-ok").click()
    await expect(by_id(page, "class-archived")).to_be_visible()
    await expect(by_id(page, "create-assignment-submit")).to_have_count(0)
    await screenshot(page, "33-tablet-class-archived")
    await by_id(page, "class-unarchive").click()
    await expect(by_id(page, "class-archived")).to_have_count(0)


async def test_teacher_extends_a_late_student_who_sees_it_in_the_open_editor(api: httpx.AsyncClient,
                                                                              new_context: Any) -> None:
    teacher = await register(api, "teacher", name="Ms Rivera")
    cls = await make_class(api, teacher, "English 9")
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    r = await api.post(f"/api/v1/classes/{cls['id']}/assignments", headers=teacher.headers,
                       json={"title": "Overdue essay", "prompt": "Argue.", "due_at": past})
    assert r.status_code == 201, r.text
    assignment = r.json()
    student = await register(api, "student", name="Lee Late")
    await join(api, student, cls["join_code"])
    essay = await make_essay(api, student, assignment["id"], text="Started late.")

    writer = await (await new_context(width=768)).new_page()
    await login(writer, student.email)
    await writer.goto(f"/essays/{essay['id']}")
    await editor(writer)
    await expect(by_id(writer, "essay-due")).to_contain_text("Due")
    await expect(by_id(writer, "essay-due")).not_to_contain_text("your extension")

    page = await (await new_context(width=768)).new_page()
    await login(page, teacher.email)
    await page.goto(f"/classes/{cls['id']}")
    item = by_id(page, "assignment-item", assignment_id=assignment["id"])
    panel = by_id(item, "extensions")
    await panel.locator("summary").click()
    await by_id(panel, "extension-student").select_option(student.id)
    # The browser's local time, as a datetime-local input takes it.
    await by_id(panel, "extension-due").fill((datetime.now() + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M"))
    await by_id(panel, "extension-save").click()
    await expect(by_id(panel, "extension-row", student_id=student.id)).to_contain_text("Lee Late")
    await screenshot(page, "34-tablet-extension-given")

    # Pushed to the student's open editor (the events socket's `deadline` event).
    await expect(by_id(writer, "essay-deadline")).to_contain_text("Your teacher gave you an extension")
    await writer.goto(f"/classes/{cls['id']}")
    await expect(by_id(writer, "assignment-due")).to_contain_text("(your extension)")
    await page.goto(f"/classes/{cls['id']}/live")
    badge = by_id(by_id(page, "live-card", student_id=student.id), "live-card-deadline")
    await expect(badge).to_have_attribute("data-status", "on_time")
    await expect(badge).to_contain_text("extended until")
    await screenshot(page, "35-tablet-live-card-extended")

"""Steps through the web app by the selectors of /work/notes/WEB_CONTRACT.md (`data-testid`)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from playwright.async_api import Locator, Page, expect

from tests.fakes import PASSWORD

FEEDBACK_TIMEOUT = 20_000  # ms: the first analysis of a new essay also opens it on its host
SAVE_TIMEOUT = 30_000  # ms: includes a reconnect's backoff after an interruption


def by_id(page: Page | Locator, test_id: str, **attrs: str) -> Locator:
    """`[data-testid=test_id][data-<k>=v ...]`."""
    selector = f'[data-testid="{test_id}"]' + "".join(f'[data-{k.replace("_", "-")}="{v}"]' for k, v in attrs.items())
    return page.locator(selector)


async def fill(page: Page | Locator, test_id: str, value: str) -> None:
    """Fill a field by test id: the element itself if it is the control, else the control inside
    it (a component library may put the attribute on its wrapper)."""
    target = by_id(page, test_id)
    inner = target.locator("input, textarea")
    await (inner.first if await inner.count() else target).fill(value)


async def register(page: Page, *, name: str, email: str, role: str, password: str = PASSWORD) -> None:
    await page.goto("/register")
    await fill(page, "register-name", name)
    await fill(page, "register-email", email)
    await fill(page, "register-password", password)
    await by_id(page, "register-role").select_option(role)
    await by_id(page, "register-submit").click()
    await page.wait_for_url("**/classes")
    await expect(by_id(page, "nav-user")).to_contain_text(name)


async def login(page: Page, email: str, password: str = PASSWORD) -> None:
    await page.goto("/login")
    await fill(page, "login-email", email)
    await fill(page, "login-password", password)
    await by_id(page, "login-submit").click()
    await page.wait_for_url("**/classes")


def essay_id_of(page: Page) -> str:
    match = re.search(r"/essays/([0-9a-f-]{36})", page.url)
    assert match, page.url
    return match.group(1)


async def editor(page: Page) -> Locator:
    """The student's CodeMirror content element, once the document is synced (`saved`)."""
    content = by_id(page, "editor").locator(".cm-content")
    await expect(content).to_be_visible()
    await expect(by_id(page, "save-status")).to_have_attribute("data-state", "saved", timeout=SAVE_TIMEOUT)
    return content


async def type_at_end(page: Page, text: str, *, delay: float = 15) -> None:
    """Click into the editor, move to the end of the text and type like a person."""
    content = by_id(page, "editor").locator(".cm-content")
    await content.click()
    await page.keyboard.press("Control+End")
    await page.keyboard.type(text, delay=delay)


async def wait_saved(page: Page, timeout: float = SAVE_TIMEOUT) -> None:
    await expect(by_id(page, "save-status")).to_have_attribute("data-state", "saved", timeout=timeout)


def number_in(text: str) -> int:
    match = re.search(r"\d+", text.replace(",", ""))
    assert match, text
    return int(match.group())


async def essay_text(api: Any, account: Any, essay_id: str) -> str:
    r = await api.get(f"/api/v1/essays/{essay_id}", headers=account.headers)
    assert r.status_code == 200, r.text
    return str(r.json()["text"])


def doc_socket_closed(page: Page, essay_id: str) -> asyncio.Future[bool]:
    """Resolves when a doc socket the page opens on the essay closes (call before opening it):
    the server closing a student's editor, seen from the browser."""
    closed: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def on_socket(ws: Any) -> None:
        if f"/ws/essays/{essay_id}/doc" in ws.url:
            ws.on("close", lambda _ws: closed.done() or closed.set_result(True))

    page.on("websocket", on_socket)
    return closed

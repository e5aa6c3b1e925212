"""End-to-end fixtures: the service started as `make run` starts it, and Debian's Chromium.

- `service`: `.venv/bin/essaycoach run` (local Ray cluster, Serve's HAProxy ingress, SQLite) as a
  subprocess in its own session, on free ports, in a temporary var dir; ready when `/readyz`
  answers 200; stopped with SIGINT (it flushes the essay hosts and ends its Ray cluster), then
  by pid (ops.loadtest.procs). Its log is kept next to the screenshots when a test fails.
- `browser`: Playwright driving `/usr/bin/chromium` (`ESSAYCOACH_E2E_CHROMIUM` overrides); no
  browser is ever downloaded.
- web/dist: built here (`npm ci && npm run build`) if missing (`make test` builds it first anyway).
  Browser scenarios skip only while web/ has no package.json (no app to build).

The service, its client and the browser live as long as tests/e2e runs (package scope): the rest of
the suite does not share the machine with a second Ray cluster. Screenshots of every main screen
go to var/e2e-screenshots/ (not committed), with the service's log.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from ops.loadtest import procs

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "web"
SCREENSHOTS = ROOT / "var" / "e2e-screenshots"
CHROMIUM = os.environ.get("ESSAYCOACH_E2E_CHROMIUM", "/usr/bin/chromium")
START_TIMEOUT = 300.0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.e2e)


def web_dist() -> Path | None:
    """The built app, building it if web/ has sources but no build; None if there is no app."""
    dist = Path(os.environ.get("ESSAYCOACH_WEB_DIST", WEB / "dist"))
    if (dist / "index.html").is_file():
        return dist
    if not (WEB / "package.json").is_file():
        return None
    for cmd in (["npm", "ci", "--no-audit", "--no-fund"], ["npm", "run", "build"]):
        subprocess.run(cmd, cwd=WEB, check=True, timeout=900)
    assert (dist / "index.html").is_file(), f"`npm run build` made no {dist / 'index.html'}"
    return dist


def service_env(var_dir: Path, port: int, dist: Path | None) -> dict[str, str]:
    """`make run`'s environment, on our own ports and store: nothing inherited that points at
    another cluster or database."""
    keep = {k: v for k, v in os.environ.items()
            if not k.startswith(("ESSAYCOACH_", "RAY_")) and k != "VIRTUAL_ENV"}
    return {
        **keep,
        "PYTHONPATH": str(ROOT),
        "RAY_AUTH_MODE": "disabled",
        "ESSAYCOACH_VAR_DIR": str(var_dir),
        "ESSAYCOACH_DATABASE_URL": f"sqlite+aiosqlite:///{var_dir / 'essaycoach.db'}",
        "ESSAYCOACH_HTTP_PORT": str(port),
        "ESSAYCOACH_WEB_DIST": str(dist if dist is not None else var_dir / "no-web-build"),
        # Every account in these tests signs in from 127.0.0.1 (30/min per IP by default).
        # Serve's fixed default ports would clash with another cluster on this machine.
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(procs.free_port()),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(procs.free_port()),
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(procs.free_port()),
        "ESSAYCOACH_METRICS_PORT": str(procs.free_port()),
        "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(procs.free_port()),
    }


@dataclass
class Service:
    """The running service: its base URL, process and log."""

    base: str
    proc: Any
    log: Path
    dist: Path | None

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""


def wait_ready(service: Service, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=5) as client:
        while time.monotonic() < deadline:
            if service.proc.poll() is not None:
                raise ServiceExited(f"essaycoach run exited ({service.proc.returncode}):\n{service.log_tail()}")
            try:
                if client.get(f"{service.base}/readyz").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
    raise TimeoutError(f"essaycoach run was not ready in {timeout:.0f}s:\n{service.log_tail()}")


@pytest.fixture(scope="session")
def dist() -> Path | None:
    return web_dist()


@pytest.fixture(scope="package")
def service(dist: Path | None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    shutil.rmtree(SCREENSHOTS, ignore_errors=True)  # this run's screens only
    running = start_service(dist, tmp_path_factory)
    try:
        yield running
    finally:
        procs.stop(running.proc, grace=60)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(running.log, SCREENSHOTS / "server.log")


def start_service(dist: Path | None, tmp_path_factory: pytest.TempPathFactory, attempts: int = 2) -> Service:
    """Start `essaycoach run` and wait until it is ready. A start whose process exits on its own
    (Ray's "node timed out during startup" on a machine busy with other work) is tried once
    more, and says so on stderr; a failure to become ready in time is not."""
    for attempt in range(1, attempts + 1):
        work = tmp_path_factory.mktemp("e2e-service")
        var_dir = work / "var"
        var_dir.mkdir()
        port = procs.free_port()
        cmd = [str(ROOT / ".venv" / "bin" / "essaycoach"), "run", "--dev"]  # as make run starts it
        proc = procs.start(cmd, env=service_env(var_dir, port, dist), cwd=ROOT, log_path=work / "server.log")
        running = Service(base=f"http://127.0.0.1:{port}", proc=proc, log=work / "server.log", dist=dist)
        try:
            wait_ready(running, START_TIMEOUT)
            return running
        except ServiceExited:
            procs.stop(proc, grace=10)
            if attempt == attempts:
                raise
            print(f"essaycoach run exited during start-up; starting it again:\n{running.log_tail(1500)}",
                  file=sys.stderr)
        except BaseException:
            procs.stop(proc, grace=10)
            raise
    raise AssertionError("unreachable")


class ServiceExited(RuntimeError):
    """`essaycoach run` ended before it was ready."""


@pytest.fixture(scope="package")
def app_built(dist: Path | None, request: pytest.FixtureRequest) -> Service:
    if dist is None:  # checked before the service starts: no cluster for a skip
        pytest.skip("web/ has no package.json: there is no web app to drive yet")
    return request.getfixturevalue("service")  # type: ignore[no-any-return]


@pytest.fixture(scope="package")
async def api(service: Service) -> AsyncIterator[httpx.AsyncClient]:
    """A REST client on the service (set-up the browser need not click through)."""
    async with httpx.AsyncClient(base_url=service.base, timeout=60) as client:
        yield client


@pytest.fixture(scope="package")
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM)
        yield chromium
        await chromium.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"report_{report.when}", report)  # for fixtures: did the test body fail?
    return report


@pytest.fixture
async def new_context(browser: Any, app_built: Service, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """Make browser contexts (one per person: separate cookies and storage) on the service.

    Every page's console errors and uncaught exceptions are kept; afterwards they go to
    var/e2e-screenshots/<test>.console.log, a failed test also gets a screenshot of each open
    page, and a Content-Security-Policy violation fails the test (the app must run under it)."""
    contexts: list[Any] = []
    console: list[str] = []

    def watch(page: Any) -> None:
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))

    async def make(width: int = 1280) -> Any:
        context = await browser.new_context(base_url=app_built.base, viewport={"width": width, "height": 860})
        context.set_default_timeout(15_000)
        context.on("page", watch)
        contexts.append(context)
        return context

    yield make
    name = request.node.name
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    failed = getattr(request.node, "report_call", None) is not None and request.node.report_call.failed
    if failed:
        for i, page in enumerate(p for c in contexts for p in c.pages):
            await page.screenshot(path=str(SCREENSHOTS / f"failed-{name}-{i}.png"), full_page=True)
    for context in contexts:
        await context.close()
    (SCREENSHOTS / f"{name}.console.log").write_text("\n".join(console) + "\n")
    violations = [line for line in console if "Content Security Policy" in line]
    assert not violations, f"the page broke its CSP: {violations}"


async def screenshot(page: Any, name: str) -> None:
    """Save the page as var/e2e-screenshots/<name>.png for a reviewer."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)

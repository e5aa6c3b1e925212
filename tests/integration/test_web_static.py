"""The browser app served by the Gateway at `/` (serve_app.web), through the app factory, against a
dist folder made here (not the real Vite build)."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import brotli
import httpx
import pytest

from serve_app.app import create_app
from tests.conftest import make_settings

INDEX = (b'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>EssayCoach Live</title>'
         b'<script type="module" crossorigin src="/assets/index-Ab12Cd34.js"></script>'
         b'<link rel="stylesheet" crossorigin href="/assets/index-Ef56Gh78.css"></head>'
         b'<body><div id="app"></div></body></html>\n') + b"<!-- padding -->\n" * 30
BUNDLE = b"export const greeting = 'hello from the bundle';\n" * 400
STYLE = b".fb-mark.fb-spelling { text-decoration: underline wavy red; }\n" * 50
HTML = {"accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


def make_dist(root: Path) -> Path:
    dist = root / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_bytes(INDEX)
    (dist / "assets" / "index-Ab12Cd34.js").write_bytes(BUNDLE)
    (dist / "assets" / "index-Ef56Gh78.css").write_bytes(STYLE)
    (dist / "favicon.ico").write_bytes(b"\x00\x00\x01\x00" + b"\x00" * 60)
    (dist / ".env").write_text("SECRET=in-dist-dotfile\n")
    (root / "secret.txt").write_text("outside the dist folder\n")
    (dist / "assets" / "escape.js").symlink_to(root / "secret.txt")
    return dist


def app_for(root: Path, dist: Path) -> Any:
    settings = make_settings(f"sqlite+aiosqlite:///{root / 'unused.db'}", root, web_dist=dist)
    return create_app(settings)  # the static part needs no lifespan: no store is touched


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    return make_dist(tmp_path)


@pytest.fixture
async def client(tmp_path: Path, dist: Path) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app_for(tmp_path, dist))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


async def raw_get(app: Any, raw_path: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One GET straight through ASGI with the path exactly as given (an HTTP client would
    normalise `..` away before sending)."""
    from urllib.parse import unquote_to_bytes

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": unquote_to_bytes(raw_path).decode("latin-1"), "raw_path": raw_path,
             "root_path": "", "query_string": b"", "server": ("test", 80), "client": ("127.0.0.1", 1),
             "headers": [(k.encode(), v.encode()) for k, v in (headers or HTML).items()]}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = sent[0]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body


async def test_root_serves_index_with_security_headers_and_no_cache(client: httpx.AsyncClient) -> None:
    r = await client.get("/", headers=HTML)
    assert r.status_code == 200
    assert r.content == INDEX
    assert r.headers["content-type"].startswith("text/html")
    assert r.headers["cache-control"] == "no-cache"
    csp = dict(d.strip().split(" ", 1) for d in r.headers["content-security-policy"].split(";"))
    assert csp["script-src"] == "'self'"  # no inline scripts, no eval, no other origin
    assert csp["connect-src"] == "'self'"
    assert csp["object-src"] == "'none'" and csp["frame-ancestors"] == "'none'"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"] == "strict-origin-when-cross-origin"
    assert r.headers["etag"]
    assert (await client.get("/index.html", headers=HTML)).content == INDEX


async def test_spa_route_falls_back_to_index_for_html_navigation(client: httpx.AsyncClient) -> None:
    r = await client.get("/classes/5b0a3c1e-0000-4000-8000-000000000000/live", headers=HTML)
    assert r.status_code == 200 and r.content == INDEX
    assert r.headers["cache-control"] == "no-cache"
    assert "script-src 'self'" in r.headers["content-security-policy"]
    head = await client.head("/essays/abc/review", headers=HTML)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["etag"] == r.headers["etag"]


async def test_spa_route_without_html_accept_is_404(client: httpx.AsyncClient) -> None:
    r = await client.get("/classes/abc", headers={"accept": "application/json"})
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"


async def test_unknown_api_and_socket_paths_stay_problem_json_404(client: httpx.AsyncClient) -> None:
    for path in ("/api/v1/no-such-thing", "/api/v1/classes/abc/nothing", "/api", "/ws/essays/x/nothing"):
        r = await client.get(path, headers=HTML)
        assert r.status_code == 404, path
        assert r.headers["content-type"] == "application/problem+json", path
        assert r.json()["code"] == "not_found", path


async def test_api_routes_keep_their_answers(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/openapi.json", headers=HTML)
    assert r.status_code == 200 and r.json()["info"]["title"] == "EssayCoach Live"
    wrong_method = await client.delete("/api/v1/openapi.json", headers=HTML)
    assert wrong_method.status_code == 405
    assert wrong_method.headers["content-type"] == "application/problem+json"
    post = await client.post("/classes/abc", headers=HTML)
    assert post.status_code == 404 and post.headers["content-type"] == "application/problem+json"


async def test_missing_asset_is_404_not_index(client: httpx.AsyncClient) -> None:
    for path in ("/assets/index-Gone0000.js", "/assets/nested/thing", "/logo.png", "/robots.txt"):
        r = await client.get(path, headers=HTML)
        assert r.status_code == 404, path
        assert r.content != INDEX


async def test_hashed_assets_are_immutable(client: httpx.AsyncClient) -> None:
    r = await client.get("/assets/index-Ab12Cd34.js", headers={"accept-encoding": "identity"})
    assert r.status_code == 200 and r.content == BUNDLE
    assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert r.headers["content-type"] == "text/javascript; charset=utf-8"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "content-encoding" not in r.headers
    assert r.headers["vary"] == "Accept-Encoding"
    assert "content-security-policy" not in r.headers  # only documents carry the page policy
    css = await client.get("/assets/index-Ef56Gh78.css")
    assert css.headers["content-type"] == "text/css; charset=utf-8"
    icon = await client.get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["cache-control"] == "no-cache"


async def _raw(client: httpx.AsyncClient, path: str, encoding: str) -> tuple[httpx.Response, bytes]:
    async with client.stream("GET", path, headers={"accept-encoding": encoding, **HTML}) as r:
        raw = b"".join([chunk async for chunk in r.aiter_raw()])
    return r, raw


@pytest.mark.parametrize("path,original", [("/assets/index-Ab12Cd34.js", BUNDLE), ("/", INDEX),
                                           ("/assets/index-Ef56Gh78.css", STYLE)])
async def test_brotli_and_gzip_by_accept_encoding(client: httpx.AsyncClient, path: str, original: bytes) -> None:
    r, raw = await _raw(client, path, "gzip, deflate, br, zstd")
    assert r.headers["content-encoding"] == "br" and r.headers["vary"] == "Accept-Encoding"
    assert brotli.decompress(raw) == original and len(raw) < len(original)
    assert r.headers["content-length"] == str(len(raw))
    r, raw = await _raw(client, path, "gzip")
    assert r.headers["content-encoding"] == "gzip"
    assert gzip.decompress(raw) == original
    r, raw = await _raw(client, path, "br;q=0, gzip;q=0.5")
    assert r.headers["content-encoding"] == "gzip"
    r, raw = await _raw(client, path, "identity")
    assert "content-encoding" not in r.headers and raw == original


async def test_precompressed_sibling_is_sent_as_is(client: httpx.AsyncClient, dist: Path) -> None:
    # A build that precompresses: the .br beside the file is what goes out (its own bytes prove it).
    marker = b"// the precompressed variant\n" * 20
    (dist / "assets" / "index-Ab12Cd34.js.br").write_bytes(brotli.compress(marker))
    r, raw = await _raw(client, "/assets/index-Ab12Cd34.js", "br")
    assert r.headers["content-encoding"] == "br"
    assert brotli.decompress(raw) == marker


async def test_etag_revalidation_answers_304(client: httpx.AsyncClient) -> None:
    for path in ("/", "/assets/index-Ab12Cd34.js", "/classes/abc"):
        first = await client.get(path, headers={**HTML, "accept-encoding": "br"})
        again = await client.get(path, headers={**HTML, "accept-encoding": "br",
                                                "if-none-match": first.headers["etag"]})
        assert again.status_code == 304, path
        assert again.content == b""
        assert again.headers["etag"] == first.headers["etag"]
        assert again.headers["cache-control"] == first.headers["cache-control"]
    br = await client.get("/", headers={**HTML, "accept-encoding": "br"})
    plain = await client.get("/", headers={**HTML, "accept-encoding": "identity"})
    assert br.headers["etag"] != plain.headers["etag"]  # one tag per representation
    stale = await client.get("/", headers={**HTML, "if-none-match": '"something-else"'})
    assert stale.status_code == 200


async def test_a_changed_file_gets_a_new_etag(client: httpx.AsyncClient, dist: Path) -> None:
    before = await client.get("/", headers=HTML)
    (dist / "index.html").write_bytes(INDEX.replace(b"EssayCoach Live", b"EssayCoach Live 2"))
    after = await client.get("/", headers=HTML)
    assert after.headers["etag"] != before.headers["etag"]
    assert b"EssayCoach Live 2" in after.content


@pytest.mark.parametrize("raw_path", [b"/../secret.txt", b"/assets/../../secret.txt", b"/%2e%2e/secret.txt",
                                      b"/assets/%2e%2e/%2e%2e/secret.txt", b"/assets/..%2f..%2fsecret.txt",
                                      b"/assets/escape.js", b"/.env", b"/assets/..\\..\\secret.txt",
                                      b"//etc/passwd", b"/assets//etc/passwd"])
async def test_path_traversal_is_refused(tmp_path: Path, dist: Path, raw_path: bytes) -> None:
    status, headers, body = await raw_get(app_for(tmp_path, dist), raw_path)
    assert status == 404, (raw_path, body[:200])
    assert b"outside the dist folder" not in body and b"in-dist-dotfile" not in body
    assert b"root:" not in body


async def test_not_built_page_says_how_to_build(tmp_path: Path) -> None:
    transport = httpx.ASGITransport(app=app_for(tmp_path, tmp_path / "no-dist"))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        for path in ("/", "/classes"):
            r = await c.get(path, headers=HTML)
            assert r.status_code == 503
            assert "not built" in r.text and "npm run build" in r.text and "make web" in r.text
            assert r.headers["cache-control"] == "no-store"
            assert "script-src 'self'" in r.headers["content-security-policy"]
        assert (await c.get("/assets/index.js", headers=HTML)).status_code == 404
        assert (await c.get("/api/v1/openapi.json")).status_code == 200

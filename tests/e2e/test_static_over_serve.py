"""The web app's static serving through the real ingress (`essaycoach run`: Ray Serve behind
HAProxy, the replicas' socket fast path installed): `/` and the SPA routes reach our app, not a
Serve 404, with the headers the plain-app tests check (tests/integration/test_web_static.py).
Also the real build (`npm run build`) itself: it precompresses what the Gateway compresses."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import brotli
import httpx

from serve_app.web import COMPRESSIBLE, MAX_CACHED_FILE_BYTES, MIN_COMPRESS_BYTES
from tests.e2e.conftest import Service

HTML = {"accept": "text/html,application/xhtml+xml,*/*;q=0.8", "accept-encoding": "gzip, br"}


async def test_root_and_spa_routes_are_served_through_serve_and_haproxy(api: httpx.AsyncClient,
                                                                       service: Service) -> None:
    root = await api.get("/", headers=HTML)
    route = await api.get("/classes/5b0a3c1e-0000-4000-8000-000000000000/live", headers=HTML)
    if service.dist is None:
        assert root.status_code == 503 and "not built" in root.text
        return
    assert root.status_code == 200, root.text[:300]
    assert root.headers["content-type"].startswith("text/html")
    assert root.headers["cache-control"] == "no-cache"
    assert "script-src 'self'" in root.headers["content-security-policy"]
    assert route.status_code == 200 and route.text == root.text
    again = await api.get("/", headers={**HTML, "if-none-match": root.headers["etag"]})
    assert again.status_code == 304


async def test_hashed_assets_are_immutable_and_brotli_through_serve(api: httpx.AsyncClient, service: Service) -> None:
    if service.dist is None:
        return
    index = (await api.get("/", headers=HTML)).text
    scripts = re.findall(r'src="(/assets/[^"]+\.js)"', index)
    assert scripts, index[:500]
    assert not re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", index)  # no inline script: the CSP blocks it
    async with api.stream("GET", scripts[0], headers={"accept-encoding": "br"}) as r:
        raw = b"".join([chunk async for chunk in r.aiter_raw()])
    assert r.status_code == 200
    assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert r.headers["content-encoding"] == "br" and r.headers["vary"] == "Accept-Encoding"
    script = service.dist / scripts[0].lstrip("/")
    assert brotli.decompress(raw) == script.read_bytes()
    assert raw == script.with_name(script.name + ".br").read_bytes()  # the build's brotli 11, not the Gateway's 9
    missing = await api.get("/assets/index-doesnotexist.js", headers=HTML)
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"


def test_the_build_precompresses_every_file_the_gateway_compresses(dist: Path | None) -> None:
    # The Gateway then sends those siblings as they are: no brotli on its event loop's first requests.
    if dist is None:
        return
    files = [f for f in dist.rglob("*") if f.is_file() and f.suffix not in (".br", ".gz")]
    compressible = [f for f in files if f.suffix.lower() in COMPRESSIBLE
                    and MIN_COMPRESS_BYTES <= f.stat().st_size <= MAX_CACHED_FILE_BYTES]
    assert dist / "index.html" in compressible and any(f.suffix == ".js" for f in compressible)
    for f in files:
        br, gz = f.with_name(f.name + ".br"), f.with_name(f.name + ".gz")
        if f not in compressible:  # sent as it is: a sibling would never be read
            assert not br.exists() and not gz.exists(), f
            continue
        assert brotli.decompress(br.read_bytes()) == f.read_bytes(), f
        assert gzip.decompress(gz.read_bytes()) == f.read_bytes(), f
        assert br.stat().st_mtime_ns >= f.stat().st_mtime_ns, f  # else the Gateway ignores it as stale


async def test_unknown_api_path_is_still_a_problem_404_through_serve(api: httpx.AsyncClient) -> None:
    r = await api.get("/api/v1/no-such-route", headers=HTML)
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    assert (await api.get("/api/v1/openapi.json")).status_code == 200

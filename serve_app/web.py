"""The browser app (web/dist, built by Vite) served by the Gateway at `/`.

Installed as the router's fallback (`install`), so it only sees requests no API route matched,
not even by path with another method (those keep their 405):

- `/assets/...` (Vite's content-hashed files): `Cache-Control: public, max-age=31536000, immutable`,
  so browsers and a CDN keep them until a new build names new files.
- `index.html`, and any other GET/HEAD of a path without a file extension whose `Accept` asks for
  `text/html` (the SPA's history-mode routes, e.g. `/classes/<id>`): index.html with
  `Cache-Control: no-cache` (revalidated every time: a deploy shows at once), a strict CSP and
  security headers.
- A missing file (`/assets/gone.js`, `/x.png`), anything under `/api/` or `/ws/`, other methods:
  the usual problem+json 404.
- Text files are sent brotli- or gzip-compressed by `Accept-Encoding` (`Vary: Accept-Encoding`):
  a precompressed `name.br` / `name.gz` beside the file if the build made one (`npm run build`
  does, web/precompress.ts), else compressed once in a worker thread and kept in memory
  (`_Cache`). Every response has a strong ETag per encoding; `If-None-Match` answers 304.
- No web/dist (the app is not built): `/` and the SPA routes answer 503 with a short page saying
  how to build it.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import mimetypes
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG

import brotli
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.types import Receive, Scope, Send

log = logging.getLogger("essaycoach.web")

ASSETS_PREFIX = "/assets/"
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
# Paths the SPA never owns: an unknown one there is an API 404, never index.html.
RESERVED_PREFIXES = ("/api/", "/ws/")
RESERVED_EXACT = frozenset({"/api", "/ws"})

# Scripts only from our origin and never inline (Vite emits `<script type="module" src>`); styles
# may be inline because CodeMirror injects <style> elements at run time. 'self' in
# connect-src covers ws:/wss: to the same host (CSP level 3), which the editor's sockets use.
CSP = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data:",
    "font-src 'self' data:",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])
HTML_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "strict-origin-when-cross-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}

TYPES = {
    ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
    ".json": "application/json", ".map": "application/json", ".svg": "image/svg+xml",
    ".webmanifest": "application/manifest+json", ".txt": "text/plain; charset=utf-8",
    ".wasm": "application/wasm", ".woff2": "font/woff2", ".woff": "font/woff", ".ico": "image/x-icon",
    ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
}
# web/precompress.ts writes .br/.gz for the same files (a test of the real build checks both agree).
COMPRESSIBLE = frozenset({".html", ".js", ".mjs", ".css", ".json", ".map", ".svg", ".webmanifest",
                          ".txt", ".wasm", ".xml", ".ico"})
MIN_COMPRESS_BYTES = 256
# Files over this are sent as they are, uncached (a built SPA has none; a stray video might).
MAX_CACHED_FILE_BYTES = 8 * 1024 * 1024
ENCODINGS = ("br", "gzip")  # our preference when the client accepts both equally

NOT_BUILT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>EssayCoach Live</title></head>
<body><h1>The web app is not built</h1>
<p>The API is up (<a href="/api/docs">/api/docs</a>), but there is no built browser app in
<code>{dist}</code>.</p>
<p>Build it with <code>make web</code> (that is <code>cd web &amp;&amp; npm ci &amp;&amp; npm run build</code>;
<code>make run</code> does it too), or point <code>ESSAYCOACH_WEB_DIST</code> at a built <code>dist</code> folder.</p>
</body></html>
"""


@dataclass(frozen=True)
class _Entry:
    """One representation of a file: its bytes in one encoding and the ETag naming them."""

    body: bytes
    etag: str


class _Cache:
    """Bytes of served files per (path, mtime, size, encoding), least recently used dropped past
    `limit` bytes: each file version is read and compressed once, in a thread, never on the
    event loop."""

    def __init__(self, limit: int = 64 * 1024 * 1024) -> None:
        self.limit, self.size = limit, 0
        self.entries: OrderedDict[tuple[str, int, int, str], _Entry] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: tuple[str, int, int, str]) -> _Entry | None:
        with self.lock:
            entry = self.entries.get(key)
            if entry is not None:
                self.entries.move_to_end(key)
            return entry

    def put(self, key: tuple[str, int, int, str], entry: _Entry) -> None:
        with self.lock:
            old = self.entries.pop(key, None)
            if old is not None:
                self.size -= len(old.body)
            self.entries[key] = entry
            self.size += len(entry.body)
            while self.size > self.limit and len(self.entries) > 1:
                _, dropped = self.entries.popitem(last=False)
                self.size -= len(dropped.body)


def accepted_encodings(header: str) -> list[str]:
    """Our encodings the client accepts, best first (by q, then our preference); [] = identity.

    `Accept-Encoding: gzip;q=0.5, br` -> ["br", "gzip"]; `*` stands for any encoding not named;
    `q=0` refuses one."""
    quality: dict[str, float] = {}
    star: float | None = None
    for part in header.split(","):
        name, _, params = part.strip().partition(";")
        name = name.strip().lower()
        if not name:
            continue
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if name == "*":
            star = q
        else:
            quality[name] = max(q, quality.get(name, 0.0))
    scored = []
    for rank, encoding in enumerate(ENCODINGS):
        q = quality.get(encoding, star if star is not None else 0.0)
        if q > 0:
            scored.append((-q, rank, encoding))
    return [encoding for _, _, encoding in sorted(scored)]


def etag_matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 weak comparison, as If-None-Match uses."""
    if if_none_match.strip() == "*":
        return True
    bare = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == bare for tag in if_none_match.split(","))


def _plain(url_path: str) -> bool:
    """No `.`/`..`/empty segment (a trailing `/` aside), backslash or NUL: nothing a traversal uses."""
    parts = url_path.split("/")[1:]
    if parts and parts[-1] == "":
        parts = parts[:-1]
    return all(p not in ("", ".", "..") and "\\" not in p and "\0" not in p for p in parts)


def _compress(data: bytes, encoding: str) -> bytes:
    # Brotli 9, not 11: on a 600 KB bundle 11 took 1.5 s for 8% fewer bytes, 9 took 0.06 s, and the
    # first browser to ask waits for it. A build that writes `.br` files at 11 has them sent as-is.
    if encoding == "br":
        return brotli.compress(data, quality=9)
    return gzip.compress(data, compresslevel=9, mtime=0)


class WebApp:
    """The built SPA in `dist`: resolves request paths to files and answers them."""

    def __init__(self, dist: Path) -> None:
        self.dist = dist
        self.cache = _Cache()

    def _file(self, url_path: str) -> tuple[Path, os.stat_result] | None:
        """The file under `dist` that `url_path` names and its stat, or None: missing, a directory,
        a dot-file, or anything resolving outside `dist` (`..`, encoded or not, or a symlink
        pointing out). File system calls: run it in a thread."""
        parts = url_path.split("/")[1:]
        if not parts or not _plain(url_path) or any(p.startswith(".") for p in parts):
            return None
        try:
            root = self.dist.resolve(strict=True)
            path = root.joinpath(*parts).resolve(strict=True)
            stat = path.stat()
        except (OSError, RuntimeError):
            return None
        if not path.is_relative_to(root) or not S_ISREG(stat.st_mode):
            return None
        return path, stat

    @staticmethod
    def _load(path: Path, encoding: str | None) -> bytes:
        """The file's bytes in `encoding`: a precompressed sibling if the build made a fresh one,
        else compressed now. File system calls and CPU: run it in a thread."""
        if encoding is None:
            return path.read_bytes()
        sibling = path.with_name(path.name + (".br" if encoding == "br" else ".gz"))
        try:
            if sibling.stat().st_mtime_ns >= path.stat().st_mtime_ns:
                return sibling.read_bytes()
        except OSError:
            pass
        return _compress(path.read_bytes(), encoding)

    async def _entry(self, path: Path, stat: os.stat_result, encoding: str | None) -> _Entry:
        """`path` in `encoding` (None: identity), from the cache or loaded now."""
        key = (str(path), stat.st_mtime_ns, stat.st_size, encoding or "identity")
        entry = self.cache.get(key)
        if entry is None:
            base = f"{stat.st_mtime_ns:x}-{stat.st_size:x}"
            etag = f'"{base}"' if encoding is None else f'"{base}-{encoding}"'
            entry = _Entry(body=await asyncio.to_thread(self._load, path, encoding), etag=etag)
            self.cache.put(key, entry)
        return entry

    async def respond(self, request: Request, found: tuple[Path, os.stat_result], *, cache_control: str,
                      html: bool) -> Response:
        path, stat = found
        suffix = path.suffix.lower()
        media_type = TYPES.get(suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        headers = {"Cache-Control": cache_control, "X-Content-Type-Options": "nosniff"}
        if html:
            headers.update(HTML_HEADERS)
        encoding: str | None = None
        if suffix in COMPRESSIBLE and MIN_COMPRESS_BYTES <= stat.st_size <= MAX_CACHED_FILE_BYTES:
            headers["Vary"] = "Accept-Encoding"
            choices = accepted_encodings(request.headers.get("accept-encoding", ""))
            encoding = choices[0] if choices else None
        if stat.st_size > MAX_CACHED_FILE_BYTES:
            return FileResponse(path, media_type=media_type, headers=headers, stat_result=stat)
        entry = await self._entry(path, stat, encoding)
        headers["ETag"] = entry.etag
        if encoding is not None:
            headers["Content-Encoding"] = encoding
        if etag_matches(request.headers.get("if-none-match", ""), entry.etag):
            return Response(status_code=304, headers=headers)
        body = b"" if request.method == "HEAD" else entry.body
        response = Response(body, media_type=media_type, headers=headers)
        response.headers["Content-Length"] = str(len(entry.body))
        return response

    def not_built(self, request: Request) -> Response:
        page = NOT_BUILT.format(dist=str(self.dist).replace("&", "&amp;").replace("<", "&lt;"))
        return HTMLResponse(b"" if request.method == "HEAD" else page, status_code=503,
                            headers={"Cache-Control": "no-store", **HTML_HEADERS})

    async def handle(self, request: Request) -> Response | None:
        """The answer for a request no route matched, or None for the ordinary 404."""
        url_path = request.url.path
        if request.method not in ("GET", "HEAD"):
            return None
        if url_path in RESERVED_EXACT or url_path.startswith(RESERVED_PREFIXES) or not _plain(url_path):
            return None
        if url_path not in ("/", "/index.html"):
            found = await asyncio.to_thread(self._file, url_path)
            if found is not None:
                cache = IMMUTABLE if url_path.startswith(ASSETS_PREFIX) else REVALIDATE
                return await self.respond(request, found, cache_control=cache, html=found[0].suffix == ".html")
            last = url_path.rsplit("/", 1)[-1]
            if url_path.startswith(ASSETS_PREFIX) or "." in last:
                return None  # a file that is not there: never index.html in its place
            if "text/html" not in request.headers.get("accept", ""):
                return None
        index = await asyncio.to_thread(self._file, "/index.html")
        if index is None:
            return self.not_built(request)
        return await self.respond(request, index, cache_control=REVALIDATE, html=True)


def install(app: FastAPI, dist: Path) -> WebApp:
    """Serve the SPA in `dist` as `app`'s fallback: after every route, before the 404."""
    web = WebApp(dist)
    not_found = app.router.default

    async def fallback(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            response = await web.handle(Request(scope, receive))
            if response is not None:
                await response(scope, receive, send)
                return
        await not_found(scope, receive, send)

    app.router.default = fallback
    if not (dist / "index.html").is_file():
        log.info("web app not built", extra={"web_dist": str(dist)})
    return web


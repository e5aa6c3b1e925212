"""Signed webhook delivery with bounded retries, and the callback-URL safety checks.

Signature (Stripe-style): ``X-EssayCoach-Signature: t=<unix seconds>,v1=<hex>`` where ``<hex>`` is
HMAC-SHA256 over ``"<t>.<raw body>"`` keyed by the requester's own webhook secret (GET/POST
``/api/v1/me/webhook-secret``), so one client cannot forge events to another's endpoint. A receiver
recomputes it over the exact bytes it received, compares in constant time and rejects stale ``t``.
``X-EssayCoach-Delivery`` is the same on every retry of one event, so receivers can de-duplicate;
``X-EssayCoach-Event`` names the event (``submission.done`` / ``submission.failed``).

Callback URLs must be http(s). Unless private targets are allowed (dev mode or
``webhook_allow_private``), a host that is, or resolves to, a loopback, private, link-local,
multicast or reserved address is refused, also in IPv6 forms that embed one (IPv4-mapped and
-compatible, 6to4, Teredo, NAT64). The check runs at submit time and, for delivery, inside the
connection itself (``PinnedBackend``): the host is resolved once per connection, every address is
checked, and the socket goes to a checked address while the Host header, TLS SNI and certificate
verification keep the hostname; so DNS rebinding between check and connect has nothing to win.
Redirects are never followed. URLs in log lines carry no query string (``redact_url``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

from actors import retry

log = logging.getLogger("essaycoach.webhooks")

SIGNATURE_HEADER = "X-EssayCoach-Signature"
EVENT_HEADER = "X-EssayCoach-Event"
DELIVERY_HEADER = "X-EssayCoach-Delivery"
MAX_URL_CHARS = 2048


class UnsafeCallbackUrl(ValueError):
    """The callback URL is malformed or points somewhere deliveries may not go."""


def new_webhook_secret() -> str:
    """A fresh per-user signing secret."""
    return "whsec_" + secrets.token_urlsafe(32)


def sign(key: bytes, timestamp: int, body: bytes) -> str:
    """The signature header value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(key: bytes, header: str, body: bytes, *, now: float | None = None, tolerance: float = 300) -> bool:
    """True when ``header`` signs ``body`` with ``key`` and its timestamp is within ``tolerance``."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        timestamp = int(parts["t"])
        given = parts["v1"]
    except (ValueError, KeyError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = sign(key, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, given)


def check_url_syntax(url: str) -> str:
    """The URL if it is an absolute http(s) URL with a host and no credentials; else raises."""
    if len(url) > MAX_URL_CHARS:
        raise UnsafeCallbackUrl(f"callback_url is longer than {MAX_URL_CHARS} characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise UnsafeCallbackUrl(f"callback_url is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise UnsafeCallbackUrl("callback_url must be an http or https URL")
    if not parts.hostname:
        raise UnsafeCallbackUrl("callback_url has no host")
    if parts.username is not None or parts.password is not None:
        raise UnsafeCallbackUrl("callback_url must not carry credentials")
    return url


Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address reaches or stands for (mapped, compatible, 6to4, Teredo, NAT64)."""
    found: list[ipaddress.IPv4Address] = []
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    if address in _NAT64_WELL_KNOWN or address in _IPV4_COMPATIBLE:
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def is_private(address: Address) -> bool:
    """True unless `address` is globally routable, and so is every IPv4 address it embeds."""
    if isinstance(address, ipaddress.IPv6Address):
        if address in _NAT64_LOCAL:  # local-use NAT64: the embedded address is anyone's guess
            return True
        embedded = embedded_ipv4(address)
        if embedded:
            return any(is_private(v4) for v4 in embedded)
    return (address.is_private or address.is_loopback or address.is_link_local or address.is_multicast
            or address.is_reserved or address.is_unspecified or not address.is_global)


def redact_url(url: str) -> str:
    """`url` without its query string and fragment (they may carry tokens), for log lines."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}" + ("?…" if parts.query else "")


Resolver = Callable[[str, int], Awaitable[list[str]]]


async def _resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def safe_addresses(host: str, port: int, *, allow_private: bool, resolver: Resolver = _resolve) -> list[str]:
    """Resolve `host` once and return its addresses, raising ``UnsafeCallbackUrl`` when it does not
    resolve or (unless private targets are allowed) when ANY address is not public."""
    host = host.strip("[]").rstrip(".").lower()
    if not allow_private and (host == "localhost" or host.endswith(".localhost")):
        raise UnsafeCallbackUrl("callback_url points at a private or loopback address")
    try:
        addresses: list[Address] = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            resolved = await resolver(host, port)
        except OSError:
            raise UnsafeCallbackUrl(f"callback_url host {host!r} does not resolve") from None
        addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in resolved]
    if not addresses:
        raise UnsafeCallbackUrl(f"callback_url host {host!r} does not resolve")
    if not allow_private and any(is_private(a) for a in addresses):
        raise UnsafeCallbackUrl("callback_url points at a private or loopback address")
    return [str(a) for a in addresses]


async def check_url_target(url: str, *, allow_private: bool, resolver: Resolver = _resolve) -> None:
    """Raise ``UnsafeCallbackUrl`` unless ``url`` is well formed and (when private targets are not
    allowed) its host is, and resolves only to, public addresses."""
    check_url_syntax(url)
    if allow_private:
        return
    parts = urlsplit(url)
    await safe_addresses(parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80),
                         allow_private=False, resolver=resolver)


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend with the safety check inside `connect_tcp`: the host is
    resolved once, every address checked, and the socket opened to a checked address (the next
    one if it refuses). httpcore still sends the URL's host as Host header and TLS server name,
    so certificates are verified against the hostname, not the address."""

    def __init__(self, *, allow_private: bool, resolver: Resolver = _resolve,
                 inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.allow_private = allow_private
        self.resolver = resolver
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        async with asyncio.timeout(timeout):
            addresses = await safe_addresses(host, port, allow_private=self.allow_private, resolver=self.resolver)
        error: Exception | None = None
        for address in addresses:
            try:
                return await self.inner.connect_tcp(address, port, timeout=timeout, local_address=local_address,
                                                    socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        raise UnsafeCallbackUrl("webhooks do not use unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


def pinned_transport(*, allow_private: bool, resolver: Resolver = _resolve,
                     verify: ssl.SSLContext | bool = True) -> httpx.AsyncHTTPTransport:
    """httpx's transport over a connection pool whose connections go through `PinnedBackend`.
    (httpx does not take a network backend, so the pool it built is replaced; `_pool` is the one
    private name this relies on, exercised by tests/integration/test_webhooks.py.)"""
    transport = httpx.AsyncHTTPTransport(verify=verify, trust_env=False)
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
        network_backend=PinnedBackend(allow_private=allow_private, resolver=resolver),
    )
    return transport


@dataclass(frozen=True)
class DeliveryResult:
    """How a delivery ended: ``delivered`` after ``attempts`` tries; the last status or error."""

    delivered: bool
    attempts: int
    last_status: int | None = None
    error: str | None = None


class _Refused(Exception):
    """The receiver answered, but not 2xx: retried like a network error."""

    def __init__(self, status: int) -> None:
        super().__init__(f"receiver answered {status}")
        self.status = status


class WebhookSender:
    """POSTs signed JSON events, retrying network errors and non-2xx answers with exponential
    backoff (``backoff * 2**n``, capped: `actors.retry`) up to ``max_attempts`` tries. Connections go through
    ``pinned_transport`` (resolve once, check every address, connect to a checked one). ``sleep``
    and ``clock`` are injectable so tests neither wait nor depend on wall time."""

    def __init__(
        self,
        *,
        max_attempts: int = 6,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        timeout: float = 10.0,
        allow_private: bool = False,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        resolver: Resolver = _resolve,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.allow_private = allow_private
        self.sleep = sleep
        self.clock = clock
        self._client = httpx.AsyncClient(
            timeout=timeout, follow_redirects=False, trust_env=False,
            transport=pinned_transport(allow_private=allow_private, resolver=resolver, verify=verify),
            headers={"User-Agent": "EssayCoach-Webhooks/1"})

    def delay(self, attempt: int) -> float:
        """Wait before retry number ``attempt`` (1-based)."""
        return retry.delay(attempt, first=self.backoff, cap=self.max_backoff)

    async def deliver(self, url: str, *, key: bytes, event: str, delivery_id: str,
                      payload: dict[str, Any]) -> DeliveryResult:
        """Deliver one event signed with `key` (the requester's webhook secret)."""
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True, default=str).encode()
        last_status: int | None = None
        error: str | None = None
        shown = redact_url(url)
        try:
            check_url_syntax(url)
        except UnsafeCallbackUrl as exc:
            return DeliveryResult(False, 0, None, str(exc))
        attempt = 0
        policy = retry.policy(first=self.backoff, cap=self.max_backoff, attempts=self.max_attempts, sleep=self.sleep,
                              retry_on=(httpx.HTTPError, _Refused))
        try:
            async for try_ in policy:
                with try_:
                    attempt = try_.retry_state.attempt_number
                    last_status = await self._attempt(url, shown, attempt, key=key, event=event,
                                                      delivery_id=delivery_id, body=body)
                    return DeliveryResult(True, attempt, last_status, None)
        except UnsafeCallbackUrl as exc:  # raised by PinnedBackend as it connects: final
            return DeliveryResult(False, attempt, None, str(exc))
        except httpx.HTTPError as exc:
            last_status, error = None, f"{type(exc).__name__}: {exc}".replace(url, shown)[:500]
        except _Refused as exc:
            last_status, error = exc.status, f"receiver answered {exc.status}"
        return DeliveryResult(False, self.max_attempts, last_status, error)

    async def _attempt(self, url: str, shown: str, attempt: int, *, key: bytes, event: str, delivery_id: str,
                       body: bytes) -> int:
        """One POST; its status when 2xx, else `_Refused` (or httpx's error) for the retry policy."""
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(key, int(self.clock()), body),  # fresh t per attempt
            EVENT_HEADER: event,
            DELIVERY_HEADER: delivery_id,
        }
        try:
            response = await self._client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            log.info("webhook attempt %d to %s failed: %s", attempt, shown,
                     f"{type(exc).__name__}: {exc}".replace(url, shown)[:500])
            raise
        if 200 <= response.status_code < 300:
            return response.status_code
        log.info("webhook attempt %d to %s: receiver answered %s", attempt, shown, response.status_code)
        raise _Refused(response.status_code)

    async def aclose(self) -> None:
        await self._client.aclose()

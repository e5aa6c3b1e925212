"""Signed webhook delivery with bounded retries, and the callback-URL safety checks.

Signature (Stripe-style): ``X-EssayCoach-Signature: t=<unix seconds>,v1=<hex>`` where ``<hex>`` is
HMAC-SHA256 over ``"<t>.<raw body>"`` keyed by the service's webhook secret. A receiver recomputes it
over the exact bytes it received, compares in constant time and rejects stale ``t`` (replays).
``X-EssayCoach-Delivery`` is the same on every retry of one event, so receivers can de-duplicate;
``X-EssayCoach-Event`` names the event (``submission.done`` / ``submission.failed``).

Callback URLs must be http(s). Unless private targets are allowed (dev mode or
``webhook_allow_private``), a host that is, or resolves to, a loopback, private, link-local,
multicast or reserved address is refused, at submit time and again before every attempt; redirects
are never followed, so a public URL cannot bounce a delivery into the internal network.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

log = logging.getLogger("essaycoach.webhooks")

SIGNATURE_HEADER = "X-EssayCoach-Signature"
EVENT_HEADER = "X-EssayCoach-Event"
DELIVERY_HEADER = "X-EssayCoach-Delivery"
MAX_URL_CHARS = 2048


class UnsafeCallbackUrl(ValueError):
    """The callback URL is malformed or points somewhere deliveries may not go."""


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


def _is_private(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (address.is_private or address.is_loopback or address.is_link_local or address.is_multicast
            or address.is_reserved or address.is_unspecified or not address.is_global)


Resolver = Callable[[str, int], Awaitable[list[str]]]


async def _resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def check_url_target(url: str, *, allow_private: bool, resolver: Resolver = _resolve) -> None:
    """Raise ``UnsafeCallbackUrl`` unless ``url`` is well formed and (when private targets are not
    allowed) its host is, and resolves only to, public addresses."""
    check_url_syntax(url)
    if allow_private:
        return
    parts = urlsplit(url)
    host = (parts.hostname or "").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        raise UnsafeCallbackUrl("callback_url points at a private or loopback address")
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            resolved = await resolver(host, parts.port or (443 if parts.scheme == "https" else 80))
        except OSError:
            raise UnsafeCallbackUrl(f"callback_url host {host!r} does not resolve") from None
        addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in resolved]
    if not addresses or any(_is_private(a) for a in addresses):
        raise UnsafeCallbackUrl("callback_url points at a private or loopback address")


@dataclass(frozen=True)
class DeliveryResult:
    """How a delivery ended: ``delivered`` after ``attempts`` tries; the last status or error."""

    delivered: bool
    attempts: int
    last_status: int | None = None
    error: str | None = None


class WebhookSender:
    """POSTs signed JSON events, retrying network errors and non-2xx answers with exponential
    backoff (``backoff * 2**n``, capped) up to ``max_attempts`` tries. ``sleep`` and ``clock`` are
    injectable so tests neither wait nor depend on wall time."""

    def __init__(
        self,
        key: bytes,
        *,
        max_attempts: int = 6,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        timeout: float = 10.0,
        allow_private: bool = False,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
        resolver: Resolver = _resolve,
    ) -> None:
        self.key = key
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.allow_private = allow_private
        self.sleep = sleep
        self.clock = clock
        self.resolver = resolver
        self._client = httpx.AsyncClient(timeout=timeout, follow_redirects=False, transport=transport,
                                         headers={"User-Agent": "EssayCoach-Webhooks/1"})

    def delay(self, attempt: int) -> float:
        """Wait before retry number ``attempt`` (1-based)."""
        return float(min(self.max_backoff, self.backoff * 2 ** (attempt - 1)))

    async def deliver(self, url: str, *, event: str, delivery_id: str, payload: dict[str, Any]) -> DeliveryResult:
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True, default=str).encode()
        last_status: int | None = None
        error: str | None = None
        for attempt in range(1, self.max_attempts + 1):
            if attempt > 1:
                await self.sleep(self.delay(attempt - 1))
            try:
                # Checked before every attempt: DNS may have changed since the URL was accepted.
                await check_url_target(url, allow_private=self.allow_private, resolver=self.resolver)
            except UnsafeCallbackUrl as exc:
                return DeliveryResult(False, attempt, None, str(exc))
            headers = {
                "Content-Type": "application/json",
                SIGNATURE_HEADER: sign(self.key, int(self.clock()), body),  # fresh t per attempt
                EVENT_HEADER: event,
                DELIVERY_HEADER: delivery_id,
            }
            try:
                response = await self._client.post(url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                last_status, error = None, f"{type(exc).__name__}: {exc}"[:500]
                log.info("webhook attempt %d to %s failed: %s", attempt, url, error)
                continue
            last_status = response.status_code
            if 200 <= response.status_code < 300:
                return DeliveryResult(True, attempt, last_status, None)
            error = f"receiver answered {response.status_code}"
            log.info("webhook attempt %d to %s: %s", attempt, url, error)
        return DeliveryResult(False, self.max_attempts, last_status, error)

    async def aclose(self) -> None:
        await self._client.aclose()

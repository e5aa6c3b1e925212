"""The client's address, believing `X-Forwarded-For` only from configured trusted proxies.

The TCP peer is the client unless it is in `TRUSTED_PROXIES`. When it is, `X-Forwarded-For` is
walked right to left (each proxy appends the address it saw) past every trusted hop; the first
untrusted address is the client. Entries left of it were written by the client and are ignored,
so a spoofed header from an untrusted peer, or prepended by a client behind a trusted proxy,
changes nothing. No proxies are trusted by default: Serve's HAProxy (`make run`) connects from
loopback and neither adds nor strips the header, so trusting loopback there would let any client
pick its own address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import cast

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(value: str | Iterable[str]) -> tuple[Network, ...]:
    """CIDRs (or single addresses) from a comma-separated string or a list; raises ValueError."""
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(ipaddress.ip_network(item.strip(), strict=False) for item in items if item.strip())


def _address(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    value = value.strip().strip('"')
    if value.startswith("[") and "]" in value:  # [v6]:port
        value = value[1:value.index("]")]
    elif value.count(":") == 1:  # v4:port
        value = value.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(value.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: ipaddress.IPv4Address | ipaddress.IPv6Address, trusted: Sequence[Network]) -> bool:
    return any(address.version == net.version and address in net for net in trusted)


def client_address(peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[Network]) -> str:
    """The client's address given the TCP `peer`, every `X-Forwarded-For` header value in order,
    and the trusted proxy networks."""
    if peer is None:
        return "unknown"
    current = _address(peer)
    if current is None or not _trusted(current, trusted):
        return str(current) if current is not None else peer
    hops = [hop for value in forwarded_for for hop in value.split(",")]
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            break  # garbage from the client's side: the last trusted hop is what we know
        current = address
        if not _trusted(address, trusted):
            break
    return str(current)


def scope_client_address(scope: dict[str, object], trusted: Sequence[Network]) -> str:
    """`client_address` for an ASGI HTTP or websocket scope."""
    client = scope.get("client")
    peer = str(client[0]) if isinstance(client, (tuple, list)) and client else None
    headers = cast("Iterable[tuple[bytes, bytes]]", scope.get("headers") or [])
    forwarded = [v.decode("latin-1") for k, v in headers if k == b"x-forwarded-for"]
    return client_address(peer, forwarded, trusted)

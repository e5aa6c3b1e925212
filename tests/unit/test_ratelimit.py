"""Decaying-bucket arithmetic and the client address behind trusted proxies (pure, no I/O)."""

from __future__ import annotations

import pytest

from serve_app.client_address import client_address, parse_networks
from serve_app.ratelimit import BucketPolicy, drained, wait_seconds

ACCOUNT = BucketPolicy.every(burst=5, seconds=60)


def test_a_bucket_drains_at_its_rate_and_never_below_zero() -> None:
    assert drained(5, 1000, 1060, ACCOUNT.drain_per_second) == pytest.approx(4)
    assert drained(5, 1000, 10_000, ACCOUNT.drain_per_second) == 0
    assert drained(3, 1000, 990, ACCOUNT.drain_per_second) == 3  # a clock behind never adds


def test_the_burst_fits_then_one_more_waits_for_one_drain() -> None:
    assert wait_seconds(4, ACCOUNT) == 0
    assert wait_seconds(5, ACCOUNT) == 60
    assert wait_seconds(5.5, ACCOUNT) == 90
    assert wait_seconds(4.0001, ACCOUNT) == 1  # a fraction of a second over: never a zero Retry-After


TRUSTED = parse_networks("10.0.0.0/8, 127.0.0.1, ::1")


@pytest.mark.parametrize(("peer", "forwarded", "expected"), [
    ("203.0.113.5", ["198.51.100.1"], "203.0.113.5"),           # untrusted peer: header ignored
    ("10.1.2.3", [], "10.1.2.3"),                                 # trusted peer, no header
    ("10.1.2.3", ["198.51.100.1"], "198.51.100.1"),
    ("127.0.0.1", ["1.1.1.1, 198.51.100.1, 10.0.0.9"], "198.51.100.1"),  # client's own prefix ignored
    ("127.0.0.1", ["1.1.1.1", "198.51.100.1"], "198.51.100.1"),  # several header lines, in order
    ("::1", ["[2001:db8::5]:4711"], "2001:db8::5"),
    ("::ffff:10.0.0.1", ["198.51.100.1:8080"], "198.51.100.1"),  # v4-mapped peer, v4:port hop
    ("10.0.0.1", ["garbage, 10.0.0.2"], "10.0.0.2"),             # unparsable hop: last trusted one
    ("10.0.0.1", ["10.0.0.3, 10.0.0.2"], "10.0.0.3"),            # all trusted: the farthest
    (None, [], "unknown"),
])
def test_client_address_walks_forwarded_for_through_trusted_hops_only(
    peer: str | None, forwarded: list[str], expected: str
) -> None:
    assert client_address(peer, forwarded, TRUSTED) == expected


def test_no_trusted_proxies_by_default_means_the_peer() -> None:
    assert client_address("127.0.0.1", ["198.51.100.1"], parse_networks("")) == "127.0.0.1"


def test_a_bad_cidr_is_refused() -> None:
    with pytest.raises(ValueError):
        parse_networks("10.0.0.0/33")

"""Which callback addresses count as private, IPv6 forms embedding an IPv4 address included."""

from __future__ import annotations

import ipaddress

import pytest

from serve_app.webhooks import is_private


@pytest.mark.parametrize("address", [
    "127.0.0.1", "10.1.2.3", "169.254.169.254", "::1", "fd00::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1",            # IPv4-mapped
    "::127.0.0.1", "::a9fe:a9fe",                      # IPv4-compatible (deprecated)
    "2002:7f00:1::", "2002:a00:1::1",                  # 6to4 of 127.0.0.1, 10.0.0.1
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",            # Teredo
    "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe",           # NAT64 of 127.0.0.1, 169.254.169.254
    "64:ff9b:1::808:808",                              # local-use NAT64: refused whatever it embeds
])
def test_private_and_embedded_private_addresses_are_private(address: str) -> None:
    assert is_private(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", [
    "8.8.8.8", "93.184.216.34", "2606:4700:4700::1111",
    "2002:808:808::",                                  # 6to4 of 8.8.8.8
    "64:ff9b::808:808", "::ffff:8.8.8.8",
])
def test_public_addresses_are_not_private(address: str) -> None:
    assert not is_private(ipaddress.ip_address(address))

"""Content negotiation and ETag comparison of the static web app (serve_app.web), no I/O."""

from __future__ import annotations

import pytest

from serve_app.web import accepted_encodings, etag_matches


@pytest.mark.parametrize("header,expected", [
    ("", []),
    ("identity", []),
    ("gzip, deflate, br, zstd", ["br", "gzip"]),
    ("gzip", ["gzip"]),
    ("br;q=0, gzip", ["gzip"]),
    ("gzip;q=1.0, br;q=0.5", ["gzip", "br"]),
    ("*", ["br", "gzip"]),
    ("*;q=0.1, gzip;q=0", ["br"]),
    ("BR; Q=0.9", ["br"]),
    ("br;q=nonsense, gzip", ["gzip"]),
])
def test_accepted_encodings_orders_by_quality_then_preference(header: str, expected: list[str]) -> None:
    assert accepted_encodings(header) == expected


def test_etag_matches_uses_weak_comparison_and_lists() -> None:
    assert etag_matches('"a-1"', '"a-1"')
    assert etag_matches('W/"a-1"', '"a-1"')
    assert etag_matches('"x", "a-1"', '"a-1"')
    assert etag_matches("*", '"a-1"')
    assert not etag_matches('"a-1-br"', '"a-1"')
    assert not etag_matches("", '"a-1"')

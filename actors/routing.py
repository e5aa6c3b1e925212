"""essay_id -> host: a stable hash over the configured host count (same answer in every process)."""

from __future__ import annotations

import hashlib
import uuid

HOST_NAME_PREFIX = "essay-host"


def host_index(essay_id: uuid.UUID, hosts: int) -> int:
    digest = hashlib.blake2b(essay_id.bytes, digest_size=8).digest()
    return int.from_bytes(digest, "big") % hosts


def host_name(essay_id: uuid.UUID, hosts: int, namespace: str = "") -> str:
    return f"{HOST_NAME_PREFIX}-{namespace + '-' if namespace else ''}{host_index(essay_id, hosts)}"

"""Encryption at rest of essay text and update logs: AES-256-GCM envelopes that name their key.

With `ESSAYCOACH_DATA_KEY` set (32 random bytes, base64), the columns typed `SealedText` and
`SealedBytes` (db/types.py: the update log, snapshots, revisions, submissions' text, feedback and
comment quotes) are written as envelopes; reads open envelopes and pass anything else through, so
rows written before the key was set stay readable (mixed mode) until `essaycoach reseal` rewrites
them.

Envelope (bytes): ``MAGIC (4) | key id (4) | nonce (12) | ciphertext + GCM tag (16)``; the first
eight bytes are the GCM associated data, so a key id cannot be swapped. Read as a Yjs update, ``MAGIC``
would declare exactly 8,959 clients, the first with 67 structs and client id 49: no update or
document state the service stores starts that way. In a text column the envelope is
``TEXT_MARK`` followed by the envelope in base64; ``TEXT_MARK`` begins with the escape character,
which typed or pasted text does not start with. The key id is the first four bytes of SHA-256 over
a label and the key: it names the key without revealing anything of it.

Key rotation: set the new key as `ESSAYCOACH_DATA_KEY` and the old one(s) in
`ESSAYCOACH_DATA_KEYS_OLD` (comma-separated) on every process; new writes use the new key and old
envelopes still open; `essaycoach reseal` then rewrites every row not sealed with the current key
(in batches), after which the old key can be dropped. With no current key but old keys given,
`reseal` writes plaintext back (turning encryption off).

Pure: no database, no settings. The keyring is built at each process's entry point and attached
to its engine (`db.engine.make_engine(keyring=...)`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"\xffEC1"
TEXT_MARK = "\x1bEC1:"
KEY_ID_BYTES = 4
NONCE_BYTES = 12
HEADER_BYTES = len(MAGIC) + KEY_ID_BYTES
KEY_BYTES = 32
_ID_LABEL = b"essaycoach data key id v1"


class DataKeyError(Exception):
    """A sealed value could not be opened (its key is not configured, or it was altered)."""


def key_id(key: bytes) -> bytes:
    return hashlib.sha256(_ID_LABEL + key).digest()[:KEY_ID_BYTES]


def parse_key(text: str, *, variable: str) -> bytes:
    """A key from its base64 form (standard or URL-safe); ValueError naming `variable` if bad."""
    raw = text.strip()
    try:
        key = base64.b64decode(raw + "=" * (-len(raw) % 4), altchars=b"-_" if ("-" in raw or "_" in raw) else None,
                               validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{variable}: not base64") from None
    if len(key) != KEY_BYTES:
        raise ValueError(f"{variable}: a key is {KEY_BYTES} bytes (base64 of 32 random bytes); got {len(key)}")
    return key


def new_key() -> str:
    """A fresh key in the form `ESSAYCOACH_DATA_KEY` takes."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()


@dataclass(frozen=True)
class Keyring:
    """The current key (what new writes are sealed with; None: write plaintext) and every key
    that may open stored envelopes (the current one and the old ones), by key id."""

    current: bytes | None
    keys: dict[bytes, AESGCM] = field(repr=False)

    @classmethod
    def parse(cls, current: str, old: str = "") -> Keyring | None:
        """From `ESSAYCOACH_DATA_KEY` and `ESSAYCOACH_DATA_KEYS_OLD`; None when both are empty."""
        keys: dict[bytes, AESGCM] = {}
        for part in (p for p in old.replace(",", " ").split() if p):
            key = parse_key(part, variable="ESSAYCOACH_DATA_KEYS_OLD")
            keys[key_id(key)] = AESGCM(key)
        current_id = None
        if current.strip():
            key = parse_key(current, variable="ESSAYCOACH_DATA_KEY")
            current_id = key_id(key)
            keys[current_id] = AESGCM(key)
        if not keys:
            return None
        return cls(current_id, keys)

    @property
    def current_id_hex(self) -> str | None:
        return self.current.hex() if self.current else None

    def seal(self, data: bytes) -> bytes:
        """`data` in an envelope under the current key (as is when there is none)."""
        if self.current is None:
            return data
        header = MAGIC + self.current
        nonce = os.urandom(NONCE_BYTES)
        return header + nonce + self.keys[self.current].encrypt(nonce, data, header)

    def open(self, data: bytes) -> bytes:
        """The plaintext of an envelope; anything that is not one, as is."""
        if not is_sealed(data):
            return data
        kid = data[len(MAGIC):HEADER_BYTES]
        aead = self.keys.get(kid)
        if aead is None:
            raise DataKeyError(f"a stored value is sealed with data key {kid.hex()}, which is not configured "
                               "(ESSAYCOACH_DATA_KEY / ESSAYCOACH_DATA_KEYS_OLD)")
        nonce = data[HEADER_BYTES:HEADER_BYTES + NONCE_BYTES]
        try:
            return aead.decrypt(nonce, data[HEADER_BYTES + NONCE_BYTES:], data[:HEADER_BYTES])
        except InvalidTag:
            raise DataKeyError(f"a stored value sealed with data key {kid.hex()} failed authentication") from None

    def seal_text(self, text: str) -> str:
        if self.current is None:
            return text
        return TEXT_MARK + base64.b64encode(self.seal(text.encode())).decode("ascii")

    def open_text(self, text: str) -> str:
        if not is_sealed_text(text):
            return text
        return self.open(base64.b64decode(text[len(TEXT_MARK):])).decode()


def is_sealed(data: bytes) -> bool:
    return data[:len(MAGIC)] == MAGIC and len(data) >= HEADER_BYTES + NONCE_BYTES + 16


def is_sealed_text(text: str) -> bool:
    return text.startswith(TEXT_MARK)


def sealed_key_id(value: bytes | str | None) -> bytes | None:
    """The key id a stored (raw) value is sealed with; None for plaintext."""
    if isinstance(value, str):
        if not is_sealed_text(value):
            return None
        value = base64.b64decode(value[len(TEXT_MARK):len(TEXT_MARK) + 12])  # 12 chars: 9 bytes
    if value is None or value[:len(MAGIC)] != MAGIC:
        return None
    return value[len(MAGIC):HEADER_BYTES]


def open_anyway(keyring: Keyring | None, value: bytes) -> bytes:
    """`keyring.open(value)`, or a clear error when a sealed value meets a process with no keys."""
    if keyring is not None:
        return keyring.open(value)
    if is_sealed(value):
        raise DataKeyError(f"a stored value is sealed with data key {value[len(MAGIC):HEADER_BYTES].hex()} but "
                           "ESSAYCOACH_DATA_KEY is not set")
    return value


def open_text_anyway(keyring: Keyring | None, value: str) -> str:
    if keyring is not None:
        return keyring.open_text(value)
    if is_sealed_text(value):
        raise DataKeyError("a stored text is sealed but ESSAYCOACH_DATA_KEY is not set")
    return value

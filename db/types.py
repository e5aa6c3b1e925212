"""Column types that behave the same on SQLite and PostgreSQL, and the sealed (encrypted at rest) ones."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, LargeBinary, Text
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from db.crypto import Keyring, open_anyway, open_text_anyway


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes; SQLite drops the offset, so it is restored on load."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        moment: datetime = value
        if moment.tzinfo is None:
            return moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


# Where an engine keeps its keyring (`db.engine.make_engine(keyring=...)`): on its dialect, which
# is the one per-engine object a column type's processors are handed.
KEYRING_ATTR = "essaycoach_keyring"


def keyring_of(dialect: Dialect) -> Keyring | None:
    keyring: Keyring | None = getattr(dialect, KEYRING_ATTR, None)
    return keyring


def attach_keyring(dialect: Dialect, keyring: Keyring | None) -> None:
    setattr(dialect, KEYRING_ATTR, keyring)


class SealedText(TypeDecorator[str]):
    """Text sealed at rest when the engine has a data key (db/crypto.py); plaintext rows and
    sealed ones read alike. Never compare such a column with a value in SQL: every sealing of the
    same text differs."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        keyring = keyring_of(dialect)
        return value if value is None or keyring is None else keyring.seal_text(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else open_text_anyway(keyring_of(dialect), value)


class SealedBytes(TypeDecorator[bytes]):
    """Binary (Yjs updates and document states) sealed at rest like `SealedText`."""

    impl = LargeBinary
    cache_ok = True

    def process_bind_param(self, value: bytes | None, dialect: Dialect) -> bytes | None:
        keyring = keyring_of(dialect)
        return value if value is None or keyring is None else keyring.seal(bytes(value))

    def process_result_value(self, value: Any, dialect: Dialect) -> bytes | None:
        return None if value is None else open_anyway(keyring_of(dialect), bytes(value))

"""db/crypto.py: envelopes, key ids, mixed mode and the errors a missing or wrong key gives."""

from __future__ import annotations

import base64

import pytest

from db.crypto import (
    MAGIC,
    DataKeyError,
    Keyring,
    is_sealed,
    key_id,
    new_key,
    open_anyway,
    open_text_anyway,
    parse_key,
    sealed_key_id,
)

KEY_A, KEY_B = new_key(), new_key()


def ring(current: str, old: str = "") -> Keyring:
    keyring = Keyring.parse(current, old)
    assert keyring is not None
    return keyring


def test_sealed_bytes_and_text_round_trip_and_hide_the_plaintext() -> None:
    keyring = ring(KEY_A)
    sealed = keyring.seal(b"secret update bytes")
    assert is_sealed(sealed) and b"secret" not in sealed
    assert keyring.open(sealed) == b"secret update bytes"
    text = keyring.seal_text("Ceci est mon essai — ünïcode")
    assert "essai" not in text
    assert keyring.open_text(text) == "Ceci est mon essai — ünïcode"


def test_each_sealing_differs() -> None:
    keyring = ring(KEY_A)
    assert keyring.seal(b"same") != keyring.seal(b"same")


def test_plaintext_written_before_the_key_reads_as_is() -> None:
    keyring = ring(KEY_A)
    assert keyring.open(b"\x01\x02plain yjs update") == b"\x01\x02plain yjs update"
    assert keyring.open_text("An essay from before the key.") == "An essay from before the key."
    assert open_anyway(None, b"\x00\x00") == b"\x00\x00"


def test_the_envelope_names_its_key_and_old_keys_still_open_it() -> None:
    old = ring(KEY_A)
    sealed, text = old.seal(b"log row"), old.seal_text("essay")
    rotated = ring(KEY_B, KEY_A)
    assert sealed_key_id(sealed) == sealed_key_id(text) == key_id(parse_key(KEY_A, variable="k"))
    assert rotated.open(sealed) == b"log row" and rotated.open_text(text) == "essay"
    assert sealed_key_id(rotated.seal(b"x")) == key_id(parse_key(KEY_B, variable="k"))
    assert sealed_key_id(b"plain") is None and sealed_key_id("plain") is None


def test_a_missing_key_is_a_clear_error_not_ciphertext_served_as_text() -> None:
    sealed, text = ring(KEY_A).seal(b"log row"), ring(KEY_A).seal_text("essay")
    with pytest.raises(DataKeyError, match="not configured"):
        ring(KEY_B).open(sealed)
    with pytest.raises(DataKeyError, match="not set"):
        open_anyway(None, sealed)
    with pytest.raises(DataKeyError, match="not set"):
        open_text_anyway(None, text)


def test_an_altered_envelope_fails_authentication() -> None:
    keyring = ring(KEY_A)
    sealed = bytearray(keyring.seal(b"log row"))
    sealed[-1] ^= 1
    with pytest.raises(DataKeyError, match="authentication"):
        keyring.open(bytes(sealed))


def test_only_old_keys_write_plaintext_and_read_old_envelopes() -> None:
    sealed = ring(KEY_A).seal(b"row")
    decrypting = ring("", KEY_A)
    assert decrypting.current is None
    assert decrypting.seal(b"row") == b"row" and decrypting.seal_text("t") == "t"
    assert decrypting.open(sealed) == b"row"


def test_keys_parse_from_standard_or_url_safe_base64_and_bad_ones_name_the_variable() -> None:
    raw = bytes(range(32))
    assert parse_key(base64.urlsafe_b64encode(raw).decode().rstrip("="), variable="X") == raw
    assert parse_key(base64.b64encode(raw).decode(), variable="X") == raw
    with pytest.raises(ValueError, match="ESSAYCOACH_DATA_KEY: a key is 32 bytes"):
        Keyring.parse(base64.b64encode(b"short").decode())
    with pytest.raises(ValueError, match="ESSAYCOACH_DATA_KEYS_OLD: not base64"):
        Keyring.parse(KEY_A, "not*base64")
    assert Keyring.parse("", "") is None


def test_the_marker_cannot_start_an_update_the_service_writes() -> None:
    from pycrdt import Doc, Text

    doc: Doc = Doc()
    doc["content"] = text = Text()
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    for i in range(50):
        text += f"word {i} "
    assert updates and not any(u.startswith(MAGIC[:1]) for u in updates)
    assert not doc.get_update().startswith(MAGIC[:1])


def test_settings_pass_the_keys_to_the_essay_hosts_and_never_print_them() -> None:
    import pickle

    from serve_app.settings import Settings

    settings = Settings(jwt_secret="s" * 40, data_key=KEY_B, data_keys_old=KEY_A)  # type: ignore[call-arg]
    shell = pickle.loads(pickle.dumps(settings.host_shell_config()))  # as Ray hands it to a host actor
    keyring = shell.keyring()
    assert keyring is not None and keyring.current == key_id(parse_key(KEY_B, variable="k"))
    assert keyring.open(ring(KEY_A).seal(b"old")) == b"old"
    for text in (repr(settings), repr(shell), repr(keyring)):
        assert KEY_A not in text and KEY_B not in text
    with pytest.raises(ValueError, match="ESSAYCOACH_DATA_KEY"):
        Settings(jwt_secret="s" * 40, data_key="too-short")  # type: ignore[call-arg]

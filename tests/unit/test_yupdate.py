"""The Yjs update decoder: what an update would write, checked before any document sees it."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from pycrdt import Array, Doc, Map, Text, write_var_uint

from actors.yupdate import (
    ForbiddenContent,
    MalformedUpdate,
    ascii_shadow,
    check_text_update,
    delete_ranges,
    utf16_len,
)


def update_of(edit: Callable[[Doc], object], base: Doc | None = None) -> bytes:
    doc = Doc()
    if base is not None:
        doc.apply_update(base.get_update())
    before = doc.get_state()
    edit(doc)
    return doc.get_update(before)


def content(doc: Doc) -> Text:
    return doc.get("content", type=Text)


def test_plain_text_inserts_and_deletes_are_accepted_and_counted() -> None:
    base = Doc()
    content(base).insert(0, "héllo wörld 😀")
    checked = check_text_update(base.get_update())
    assert checked.inserted_chars == len("héllo wörld 😀") and not checked.has_deletes
    deleting = update_of(lambda d: content(d).__delitem__(slice(0, 3)), base)
    assert check_text_update(deleting).has_deletes


@pytest.mark.parametrize("edit, why", [
    (lambda d: d.get("m", type=Map).__setitem__("a", 1), "root type 'm'"),
    (lambda d: d.get("other", type=Text).insert(0, "x"), "root type 'other'"),
    (lambda d: d.get("a", type=Array).append(b"bytes"), "root type 'a'"),
    (lambda d: content(d).insert(0, "link", {"href": "javascript:alert(1)"}), "formatting attribute"),
    (lambda d: content(d).insert_embed(0, {"image": "x.png"}), "an embed"),
])
def test_anything_but_plain_text_in_content_is_forbidden(edit: Callable[[Doc], object], why: str) -> None:
    with pytest.raises(ForbiddenContent, match=why):
        check_text_update(update_of(edit))


def test_formatting_existing_text_is_forbidden() -> None:
    base = Doc()
    content(base).insert(0, "hello world")
    with pytest.raises(ForbiddenContent, match="formatting attribute"):
        check_text_update(update_of(lambda d: content(d).format(0, 5, {"bold": True}), base))


@pytest.mark.parametrize("garbage", [b"", b"\x01", b"\x01\x01\x05\x00\x04", b"\xff" * 12,
                                     b"\x00\x00\x00", b"\x01\x01\x01\x00\x1f\x00"])
def test_malformed_updates_raise(garbage: bytes) -> None:
    with pytest.raises(MalformedUpdate):
        check_text_update(garbage)


def test_truncations_of_a_real_update_never_pass() -> None:
    doc = Doc()
    content(doc).insert(0, "abc привет")
    update = doc.get_update()
    for cut in range(len(update)):
        with pytest.raises(MalformedUpdate):
            check_text_update(update[:cut])


def test_random_bytes_only_raise_malformed_or_forbidden() -> None:
    rng = random.Random(13)
    for _ in range(3000):
        data = bytes(rng.randrange(256) for _ in range(rng.randint(0, 24)))
        try:
            check_text_update(data)
        except (MalformedUpdate, ForbiddenContent):
            pass


def test_ascii_shadow_keeps_ids_lengths_and_deletes() -> None:
    rng = random.Random(2)
    doc = Doc()
    text = content(doc)
    for _ in range(200):
        value = str(text)  # pycrdt indexes by UTF-8 bytes
        if value and rng.random() < 0.3:
            index = rng.randrange(len(value))
            start = len(value[:index].encode())
            del text[start:start + len(value[index].encode())]
        else:
            text.insert(len(value[:rng.randint(0, len(value))].encode()), rng.choice(["a", "ж", "😀", "漢", "é "]))
    shadow = Doc()
    shadow.apply_update(ascii_shadow(doc.get_update()))
    assert shadow.get_state() == doc.get_state()
    assert str(content(shadow)) == "a" * utf16_len(str(text))
    assert delete_ranges(shadow.get_update()) == delete_ranges(doc.get_update())


def test_delete_ranges_lists_the_delete_set() -> None:
    doc = Doc(client_id=999)
    content(doc).insert(0, "hello secret")
    before = doc.get_state()
    del content(doc)[0:12]
    assert delete_ranges(doc.get_update(before)) == [(999, 0, 12)]


@pytest.mark.parametrize("value", [0, 1, 127, 128, 255, 16_383, 16_384, 2**21 + 5, 2**32 - 1, 2**53 - 1])
def test_varuints_of_every_width_decode_as_lib0_encodes_them(value: int) -> None:
    # One-byte varuints take a shortcut; the width boundaries (127/128, 16,383/16,384) must not see it.
    ranges = [(value, value, value + 1), (7, value, 1)]
    delete_set = write_var_uint(2) + b"".join(
        write_var_uint(client) + write_var_uint(1) + write_var_uint(clock) + write_var_uint(length)
        for client, clock, length in ranges)
    update = write_var_uint(0) + delete_set  # no structs
    assert delete_ranges(update) == ranges


def test_an_update_cut_inside_a_varuint_is_malformed() -> None:
    update = write_var_uint(0) + write_var_uint(1) + write_var_uint(2**20)
    with pytest.raises(MalformedUpdate):
        delete_ranges(update[:-1])

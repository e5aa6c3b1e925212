"""The essay document: a pycrdt `Doc` whose root `Y.Text` is named `content`.

Pure module (no Ray, database or network): validating and applying client updates, sync diffs,
plain-text <-> CRDT conversions for REST, word counts and edit-surviving anchors.

Offsets. Every offset in this module's API is a Python `str` index (Unicode code points) into
`EssayDoc.text`. pycrdt's `Text` indexes by UTF-8 *bytes* (its `len()`, slices, event deltas and
sticky indexes all count bytes) and browser Yjs by UTF-16 code units; conversion happens here and
nowhere else.

Anchors. `encode_anchor` stores two Yjs relative positions (pycrdt `StickyIndex`, binary-encoded
exactly as Yjs' `encodeRelativePosition`) in a compact URL-safe base64 string:

    byte 0   version (1)
    byte 1   flags (bit 0: collapsed, a zero-width range: only the start position follows)
    varuint  length of the start position, start position, end position (rest of the buffer)

The start sticks to the first character of the range (`Assoc.AFTER`), the end to the last
(`Assoc.BEFORE`), so text typed at either boundary stays outside the range; a zero-width anchor
sticks to the character before it.
"""

from __future__ import annotations

import base64
import binascii
import re
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

from pycrdt import (
    Assoc,
    Decoder,
    Doc,
    StickyIndex,
    Text,
    get_state,
    get_update,
    merge_updates,
    write_var_uint,
)

from actors.yupdate import ForbiddenContent, MalformedUpdate, TextUpdate, ascii_shadow, check_text_update, read_update

__all__ = [
    "EMPTY_UPDATE",
    "LARGE_PASTE_CHARS",
    "ROOT_TEXT",
    "EssayDoc",
    "InvalidAnchor",
    "InvalidStateVector",
    "InvalidUpdate",
    "TextTooLong",
    "UpdateEffect",
    "anchors_are_cheap",
    "count_words",
    "encode_anchor",
    "encode_anchors",
    "replace_text_update",
    "resolve_anchor",
    "resolve_anchors",
    "resolve_anchors_live",
    "text_to_update",
    "validate_update",
]

ROOT_TEXT = "content"
"""Name of the root `Y.Text` holding the essay."""

EMPTY_UPDATE = b"\x00\x00"
"""A Yjs update with no structs and an empty delete set."""

LARGE_PASTE_CHARS = 200
"""Default threshold: one update inserting more characters than this is flagged `large_paste`."""

_ANCHOR_VERSION = 1
_ANCHOR_COLLAPSED = 0x01


class InvalidUpdate(ValueError):
    """A document update that could not be decoded or applied.

    `doc_unchanged` is False only if pycrdt failed *after* it started integrating (never observed;
    the caller should then reload the essay from the store).
    """

    def __init__(self, reason: str, *, doc_unchanged: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.doc_unchanged = doc_unchanged


class TextTooLong(InvalidUpdate):
    """Applying the update would make the essay longer than its character limit; not applied."""


class InvalidStateVector(ValueError):
    """A remote state vector (sync step 1 payload) that could not be decoded."""


class InvalidAnchor(ValueError):
    """An anchor string that is malformed or refers to content this document never had."""


@dataclass(frozen=True, slots=True)
class UpdateEffect:
    """What one applied update did to the essay text.

    `inserted_chars`/`deleted_chars` count code points in `content`. `changed` is False for a
    duplicate or empty update (nothing new to persist or broadcast). `pending` is True when part
    of the update could not be integrated yet because it depends on updates this doc has not seen;
    pycrdt keeps those parts and integrates them when the missing updates arrive, so the update
    must still be persisted (see `needs_persist`).
    """

    inserted_chars: int
    deleted_chars: int
    changed: bool
    pending: bool = False

    @property
    def needs_persist(self) -> bool:
        """True when the update carries something the store's update log does not have yet."""
        return self.changed or self.pending

    def is_large_paste(self, threshold: int = LARGE_PASTE_CHARS) -> bool:
        """True when this single update inserted more than `threshold` characters."""
        return self.inserted_chars > threshold


def _is_rust_panic(exc: BaseException) -> bool:
    # pyo3 raises `pyo3_runtime.PanicException` (a BaseException, not importable) when the Rust
    # side panics, e.g. on malformed sticky-index bytes; treat it as "bad input".
    return type(exc).__name__ == "PanicException"


@contextmanager
def _rust_errors(error: type[ValueError], message: str) -> Iterator[None]:
    """Raise `error(message: cause)` for any failure inside, including pyo3's PanicException (a
    BaseException that cannot be imported) when the Rust side panics on bad input."""
    try:
        yield
    except Exception as exc:
        raise error(f"{message}: {exc}") from exc
    except BaseException as exc:
        if not _is_rust_panic(exc):
            raise
        raise error(f"{message}: {exc}") from None


def _decode_state_vector(state_vector: bytes) -> dict[int, int]:
    """Decode a state vector produced by pycrdt itself (trusted input)."""
    decoder = Decoder(state_vector)
    clocks: dict[int, int] = {}
    for _ in range(decoder.read_var_uint()):
        client = decoder.read_var_uint()
        clocks[client] = decoder.read_var_uint()
    return clocks


# One match per whitespace-separated token that has a letter or digit (`[^\W_]` is exactly
# `str.isalnum`): the shortest run from the token's start to its first such character. Counting
# in the regex engine (~13 ms for 200,000 characters): a generator over `text.split()` took ~75 ms, on
# the host's event loop at every snapshot.
_WORD = re.compile(r"(?<!\S)\S*?[^\W_]")


def count_words(text: str) -> int:
    """Whitespace-separated tokens that contain at least one letter or digit."""
    return len(_WORD.findall(text))


class _WordCounts:
    """`count_words` of one essay's successive texts, counting again only the lines that
    changed: a line break is whitespace, so no word spans two lines and the counts add up.
    The whole-text regex took ~10 ms at 200,000 characters, on the host's loop at every
    dashboard row of a long essay being typed (about once a second each)."""

    __slots__ = ("_lines",)

    MIN_CHARS = 2_000  # shorter texts are counted whole (~0.1 ms), keeping no copy of their lines

    def __init__(self) -> None:
        self._lines: dict[str, int] = {}  # the previous text's lines -> their word counts

    def count(self, text: str) -> int:
        if len(text) < self.MIN_CHARS:
            self._lines = {}
            return count_words(text)
        previous, lines = self._lines, {}
        total = 0
        for line in text.split("\n"):
            n = lines.get(line)
            if n is None:
                n = previous.get(line)
                if n is None:
                    n = count_words(line)
                lines[line] = n
            total += n
        self._lines = lines
        return total


def _check_text(update: bytes) -> TextUpdate:
    """`actors.yupdate.check_text_update` for the essay's root, as `InvalidUpdate`."""
    try:
        return check_text_update(update, root=ROOT_TEXT)
    except (MalformedUpdate, ForbiddenContent) as exc:
        what = "not plain text" if isinstance(exc, ForbiddenContent) else "cannot decode update"
        raise InvalidUpdate(f"{what}: {exc}") from None


def validate_update(update: bytes) -> TextUpdate:
    """Decode the whole update without any document: the check a relay (the Gateway, before its
    own sockets see an update) makes. An essay takes only inserts and deletes of plain text in
    its root `Y.Text` `content` (`actors.yupdate.check_text_update`), and pycrdt must decode it
    too (what every peer will do). Returns what it carries (characters it inserts at most, its
    delete set). `EssayDoc.apply_update` makes the same two checks with one pycrdt decode: the
    one that applies it.

    Raises:
        InvalidUpdate: the bytes are not a decodable Yjs update (v1 encoding), or it writes
            anything else (another root type, a map, a nested type, an embed, formatting
            attributes, JSON/Any/binary content, a subdocument).
    """
    update = bytes(update)
    checked = _check_text(update)
    with _rust_errors(InvalidUpdate, "cannot decode update"):
        get_state(update)
    return checked


class EssayDoc:
    """One essay's CRDT document: validates and applies updates and reports their effect.

    Not thread-safe; the owning actor serialises calls (one lock or queue per essay).
    """

    def __init__(self, *, client_id: int | None = None) -> None:
        self._doc: Doc = Doc(client_id=client_id)
        self._content: Text = self._doc.get(ROOT_TEXT, type=Text)
        self._deltas: list[list[dict[str, Any]]] = []
        self._text_cache: str | None = ""
        self._words_cache: int | None = 0
        self._word_counts = _WordCounts()
        # The text's length in code points, kept from the text events (None: read it from the
        # text), so applying an update does not rebuild the whole string (~1 ms at 200,000
        # non-ASCII characters) to learn it. Deletes count UTF-8 bytes, code points only where
        # every character is one byte: `_one_byte_chars` (ASCII, no embeds), known at each
        # rebuild of the text and kept while only ASCII strings are inserted.
        self._length: int | None = 0
        self._one_byte_chars = True
        self._anchor_view: _AnchorView | None = None
        # Updates with parts pycrdt keeps pending (structs or deletes of items this doc has not
        # seen yet). pycrdt's own encodings leave pending parts out, so `full_state` and `diff`
        # add these: a snapshot must carry a delete whose insert is still to come.
        self._pending: list[_Pending] = []
        # On the integrated (Rust) text, not through `Text.observe`: that wraps every event in a
        # Python `TextEvent`, converting its target, path and a read transaction the delta alone
        # does not need (8% of an essay host's loop under continuous typing). A plain-text delta
        # holds only strings and ints, which pycrdt's wrapper would pass through unchanged.
        self._subscription = self._content.integrated.observe(self._on_text_event)

    def _on_text_event(self, event: Any) -> None:
        # The delta must be read inside the callback: the event is only valid during its transaction.
        delta = list(event.delta)
        self._deltas.append(delta)
        self._track_length(delta)
        self._text_cache = None
        self._words_cache = None
        self._anchor_view = None

    def _track_length(self, delta: list[dict[str, Any]]) -> None:
        length = self._length
        if length is None:
            return
        for op in delta:
            if "insert" in op:
                inserted = op["insert"]
                if not isinstance(inserted, str):  # an embed (stored before updates were checked)
                    self._length, self._one_byte_chars = None, False
                    return
                length += len(inserted)
                self._one_byte_chars = self._one_byte_chars and inserted.isascii()
            elif "delete" in op:
                if not self._one_byte_chars:  # bytes, and which characters they were is unknown here
                    self._length = None
                    return
                length -= op["delete"]
        self._length = length

    @classmethod
    def from_state(
        cls, snapshot_update: bytes | None, log_updates: Iterable[bytes] = ()
    ) -> EssayDoc:
        """Rebuild from a compacted snapshot plus the update log written after it.

        Raises:
            InvalidUpdate: a stored update is corrupt (its position is in the message).
        """
        essay = cls()
        if snapshot_update is not None:
            essay._load(snapshot_update, "snapshot")
        for index, update in enumerate(log_updates):
            essay._load(update, f"log update #{index}")
        return essay

    def _load(self, update: bytes, what: str) -> None:
        update = bytes(update)
        before = self._doc.get_state()
        try:
            with _rust_errors(InvalidUpdate, f"{what} is not a valid update"):
                self._doc.apply_update(update)
        finally:
            self._deltas.clear()
            self._anchor_view = None
        carried: TextUpdate | None
        try:
            carried = check_text_update(update, root=ROOT_TEXT)
            inserted = carried.inserted_chars
        except ForbiddenContent:  # stored before updates were checked: no text limit to keep
            carried, inserted = read_update(update), 0
        except MalformedUpdate:
            carried, inserted = None, 0
        self._park(_Pending(update, inserted, carried), before, self._doc.get_state())

    def apply_stored(self, update: bytes) -> None:
        """Apply an update from the store (snapshot or log row) without the checks live updates
        get: what the store has was accepted once (replay of an essay's history).

        Raises:
            InvalidUpdate: the bytes are not a valid update.
        """
        self._load(update, "stored update")

    def _park(self, entry: _Pending, before: bytes, after: bytes) -> bool:
        """After `entry.update` moved the document from state `before` to `after`: forget the
        pending updates it let in, and keep `entry` if part of it is still pending. Returns that.

        Incremental: each pending update's struct ranges and delete set were decoded once, when
        it arrived; here they are compared with the new state vector (a few integers each), not
        decoded or re-encoded again. A state that did not move settles nothing.
        """
        clocks = _decode_state_vector(after)
        if self._pending and after != before:
            self._pending = [p for p in self._pending if p.waits(clocks, after)]
        pending = entry.waits(clocks, after)
        if pending:
            self._pending.append(entry)
        return pending

    @property
    def has_pending(self) -> bool:
        """Whether some update waits on items this document has not seen yet."""
        return bool(self._pending)

    @property
    def ydoc(self) -> Doc:
        """The underlying pycrdt document (for awareness or pycrdt-websocket integration)."""
        return self._doc

    @property
    def text(self) -> str:
        """Current plain text of the essay."""
        if self._text_cache is None:
            text = self._text_cache = str(self._content)
            self._length = len(text)
            # pycrdt's length counts UTF-8 bytes, an embed as one: equal only for ASCII text alone.
            self._one_byte_chars = len(self._content) == len(text)
        return self._text_cache

    @property
    def length(self) -> int:
        """`len(self.text)`, without building the text when it is known."""
        if self._length is None:
            return len(self.text)
        return self._length

    @property
    def word_count(self) -> int:
        """`count_words(self.text)`, cached until the next change."""
        if self._words_cache is None:
            self._words_cache = self._word_counts.count(self.text)
        return self._words_cache

    def state_vector(self) -> bytes:
        """This document's encoded state vector (payload of a sync step 1)."""
        return self._doc.get_state()

    def diff(self, remote_state_vector: bytes) -> bytes:
        """Everything a peer with `remote_state_vector` is missing (payload of a sync step 2).

        Raises:
            InvalidStateVector: the state vector cannot be decoded.
        """
        with _rust_errors(InvalidStateVector, "cannot decode state vector"):
            missing = self._doc.get_update(bytes(remote_state_vector))
        return merge_updates(missing, *(p.update for p in self._pending)) if self._pending else missing

    def full_state(self) -> bytes:
        """The whole document as one update (for snapshots and fresh replicas), pending parts
        included (see `_pending`)."""
        state = self._doc.get_update()
        return merge_updates(state, *(p.update for p in self._pending)) if self._pending else state

    def apply_update(self, update: bytes, *, max_chars: int | None = None) -> UpdateEffect:
        """Check `update`, apply it, and report its effect on the text.

        An invalid update leaves the document unchanged: our decoder reads all of it first
        (`actors.yupdate.check_text_update`: plain text in `content` only), then pycrdt decodes
        it whole before integrating anything (a failure there is an `InvalidUpdate` too; this is
        the pycrdt decode `validate_update` does without a document). With `max_chars`, an
        update that would leave more characters than that is refused unapplied (it is tried on a
        copy only when the cheap bound, current length plus what it inserts, is over the limit: a
        replace-all of a long text still fits).

        Raises:
            InvalidUpdate: the bytes are not a decodable Yjs update (v1 encoding), or not plain
                text in `content` (see `validate_update`).
            TextTooLong: it would make the text longer than `max_chars`.
        """
        update = bytes(update)
        checked = _check_text(update)
        old_length = self.length
        # Pending parts this update lets in add text it does not carry itself.
        at_most = self.length_at_most() + checked.inserted_chars
        if max_chars is not None and at_most > max_chars:
            _, text = self._trial(update, checked)
            if len(text) > max(max_chars, old_length):
                raise TextTooLong(f"the essay would have {len(text)} characters; the limit is {max_chars}")
        return self._apply_checked(update, checked)

    def length_at_most(self) -> int:
        """The text's length once every pending part is integrated, at most: what the
        character limit is checked against (`apply_update`)."""
        return self.length + sum(p.inserted_chars for p in self._pending)

    def would_change(self, update: bytes) -> bool:
        """Whether `update` carries anything this document lacks (something to persist), tried
        on a copy of the whole document: O(document), for the rare callers (a reader's update,
        an essay at its log budget). Undecodable or not plain text: True."""
        update = bytes(update)
        try:
            return self._trial(update, _check_text(update))[0].needs_persist
        except InvalidUpdate:
            return True

    def _trial(self, update: bytes, checked: TextUpdate) -> tuple[UpdateEffect, str]:
        """Apply a checked update to a scratch copy of the whole document (pending parts
        included): its effect and the text it leaves. This document is untouched."""
        scratch = EssayDoc.from_state(self.full_state())
        effect = scratch._apply_checked(update, checked)
        return effect, scratch.text

    def _apply_checked(self, update: bytes, checked: TextUpdate) -> UpdateEffect:
        old_length = self.length
        state_before = self._doc.get_state()
        self._deltas.clear()
        try:
            self._doc.apply_update(update)
        except BaseException as exc:
            if not isinstance(exc, Exception) and not _is_rust_panic(exc):
                raise
            unchanged = not self._deltas and self._doc.get_state() == state_before
            self._deltas.clear()
            raise InvalidUpdate(f"cannot apply update: {exc}", doc_unchanged=unchanged) from None
        deltas, self._deltas = self._deltas, []
        state_after = self._doc.get_state()
        if state_after != state_before:
            self._anchor_view = None  # new item ids matter even without a text change

        inserted = sum(
            len(op["insert"])
            for delta in deltas
            for op in delta
            if isinstance(op.get("insert"), str)
        )
        # Delta `delete` counts UTF-8 bytes; lengths give the deleted code points exactly.
        deleted = max(0, old_length + inserted - self.length) if deltas else 0
        # Parts of this update the doc cannot integrate yet (structs with missing dependencies,
        # deletes of items it has not seen) are parked as pending: they change what the doc will
        # become, so the update is logged, and snapshots carry it until it is integrated.
        pending = self._park(_Pending(update, checked.inserted_chars, checked), state_before, state_after)
        return UpdateEffect(
            inserted_chars=inserted,
            deleted_chars=deleted,
            changed=bool(deltas) or state_after != state_before,
            pending=pending,
        )


class _Pending(NamedTuple):
    """An update with parts a document keeps pending (see `EssayDoc._park`)."""

    update: bytes
    inserted_chars: int  # characters it may still let in (the character limit counts them)
    carried: TextUpdate | None  # its struct ranges and delete set; None: only pycrdt reads it

    def waits(self, clocks: dict[int, int], state: bytes) -> bool:
        """Whether part of it is still pending in a document at `state` (`clocks` decoded)."""
        if self.carried is not None:
            return self.carried.is_pending(clocks)
        # Stored before our decoder existed and unreadable to it (pycrdt applied it): ask pycrdt.
        return Decoder(get_update(self.update, state)).read_var_uint() > 0


# --- anchors -------------------------------------------------------------------------------
#
# pycrdt 0.14.13 indexes Text by UTF-8 bytes but Yjs clocks count UTF-16 units, and its
# StickyIndex mixes the two: inside a block it adds the *byte* offset to the block's clock
# (y-crdt/pycrdt#382, #379). Both directions are exact only at offset 0 of a block, or in
# all-ASCII blocks. `_AnchorView` therefore asks pycrdt only about an all-ASCII copy: the doc's
# state with every string replaced by as many ASCII letters as it has UTF-16 units
# (`actors.yupdate.ascii_shadow`). Item ids and blocks are unchanged, and in the copy a byte
# offset *is* the UTF-16 offset of the real text, which `_OffsetMap` turns into code points.
# Building it is linear (one pass over the encoded state); the old workaround cut every
# non-ASCII character into its own block, one pycrdt insert each (quadratic: ~7 s at 40k).
# Left-sticky (`Assoc.BEFORE`) positions are built and resolved here from right-sticky ones.

_Position = dict[str, Any]  # StickyIndex JSON: {"item": {"client", "clock"}, "assoc"} or {"tname", "assoc"}
_ASTRAL = re.compile("[\U00010000-\U0010FFFF]")

OFFLOAD_CHARS = 20_000
"""Above this many characters of non-ASCII text, anchor work leaves the event loop
(`anchors_are_cheap`): building the ASCII copy costs a few ms per 100k characters."""


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


def _utf16_len(char: str) -> int:
    return 2 if ord(char) > 0xFFFF else 1


class _OffsetMap:
    """Code point <-> UTF-16 offsets of one text, from the positions of its astral characters
    (the only ones that take two UTF-16 units): O(log n) each way after one regex scan."""

    __slots__ = ("astral", "starts")

    def __init__(self, text: str) -> None:
        self.astral = [m.start() for m in _ASTRAL.finditer(text)]  # code point index of each
        self.starts = [index + k for k, index in enumerate(self.astral)]  # its UTF-16 offset

    def to_utf16(self, index: int) -> int:
        return index + bisect_left(self.astral, index)

    def to_char(self, unit: int) -> int:
        """The character containing UTF-16 offset `unit` (the second half of a surrogate pair
        floors to its character)."""
        before = bisect_left(self.starts, unit)
        if before and self.starts[before - 1] + 1 == unit:
            return self.astral[before - 1]
        return unit - before


class _AnchorView:
    """One text version of an essay where pycrdt's sticky indexes are exact (see above).

    ASCII text uses the live document itself (bytes, code points and UTF-16 units coincide);
    other text an all-ASCII copy made from `state` (the doc's full state), which may be built
    and used on any thread as long as it stays on that one: it shares nothing with the live doc.
    """

    def __init__(self, text: str, state: bytes | None, live: Text | None = None) -> None:
        self.text = text
        self.offsets = _OffsetMap(text)
        if live is not None and text.isascii():
            self._content = live
            doc = live.doc
        else:
            assert state is not None
            doc = Doc()
            with _rust_errors(InvalidUpdate, "cannot copy the document"):
                doc.apply_update(ascii_shadow(state))
            self._content = doc.get(ROOT_TEXT, type=Text)
        self.clocks = _decode_state_vector(doc.get_state())

    def char_id(self, index: int) -> tuple[int, int]:
        """(client, clock) of the first UTF-16 unit of the character at `index`."""
        item = self._content.sticky_index(self.offsets.to_utf16(index), Assoc.AFTER).to_json()["item"]
        return int(item["client"]), int(item["clock"])

    def right_sticky(self, index: int) -> _Position:
        """Sticks to the character at `index` (Yjs assoc >= 0); needs index < len(text)."""
        client, clock = self.char_id(index)
        return {"item": {"client": client, "clock": clock}, "assoc": int(Assoc.AFTER)}

    def left_sticky(self, index: int) -> _Position:
        """Sticks to the character before `index` (Yjs assoc < 0), or to the text start."""
        if index == 0:
            return {"tname": ROOT_TEXT, "assoc": int(Assoc.BEFORE)}
        client, clock = self.char_id(index - 1)
        last_unit = clock + _utf16_len(self.text[index - 1]) - 1
        return {"item": {"client": client, "clock": last_unit}, "assoc": int(Assoc.BEFORE)}

    def resolve(self, position: _Position) -> int:
        """Current character index of a position (Yjs `createAbsolutePositionFromRelativePosition`)."""
        assoc = position.get("assoc")
        if assoc not in (int(Assoc.AFTER), int(Assoc.BEFORE)):
            raise InvalidAnchor("bad assoc")
        if "item" not in position:
            if position.get("tname") != ROOT_TEXT:
                raise InvalidAnchor("anchor refers to another shared type")
            return 0 if assoc == Assoc.BEFORE else len(self.text)
        item = position["item"]
        client, clock = item.get("client"), item.get("clock")
        if not isinstance(client, int) or not isinstance(clock, int) or clock < 0:
            raise InvalidAnchor("bad item id")
        # pycrdt panics on ids it does not have; this also rejects anchors from other essays.
        if clock >= self.clocks.get(client, 0):
            raise InvalidAnchor("anchor refers to content this document does not have")
        right = {"item": {"client": client, "clock": clock}, "assoc": int(Assoc.AFTER)}
        with _rust_errors(InvalidAnchor, "unresolvable position"):
            unit = StickyIndex.from_json(right, self._content).get_index()
        index = self.offsets.to_char(unit)
        if assoc == Assoc.AFTER or index >= len(self.text):
            return index
        # Left-sticky: just after the character, if it is still there; a deleted character
        # resolves to where it was, exactly like the right-sticky form.
        here_client, here_clock = self.char_id(index)
        visible = here_client == client and here_clock <= clock < here_clock + _utf16_len(
            self.text[index]
        )
        return index + 1 if visible else index


def _anchor_view(essay: EssayDoc) -> _AnchorView:
    if essay._anchor_view is None:
        text = essay.text
        essay._anchor_view = _AnchorView(text, None if text.isascii() else essay.full_state(), essay._content)
    return essay._anchor_view


def anchors_are_cheap(essay: EssayDoc) -> bool:
    """Whether anchor work on this text version fits on the event loop: its view is built, the
    text is ASCII (the live doc serves) or short. Otherwise use `encode_anchors` /
    `resolve_anchors` on a worker thread with `essay.text` and `essay.full_state()`."""
    return essay._anchor_view is not None or len(essay.text) <= OFFLOAD_CHARS or essay.text.isascii()


def _encode_position(position: _Position) -> bytes:
    return StickyIndex.from_json(position).encode()


def encode_anchor(doc: EssayDoc, start: int, end: int) -> str:
    """Encode the range `[start, end)` of `doc.text` as a string that survives later edits.

    Raises:
        ValueError: the range is outside the text or reversed.
    """
    return _encode_range(_anchor_view(doc), start, end)


def _encode_range(view: _AnchorView, start: int, end: int) -> str:
    if not 0 <= start <= end <= len(view.text):
        raise ValueError(f"range [{start}, {end}) outside text of length {len(view.text)}")
    if start == end:
        collapsed = _encode_position(view.left_sticky(start))
        payload = bytes([_ANCHOR_VERSION, _ANCHOR_COLLAPSED]) + collapsed
    else:
        first = _encode_position(view.right_sticky(start))
        last = _encode_position(view.left_sticky(end))
        payload = bytes([_ANCHOR_VERSION, 0]) + write_var_uint(len(first)) + first + last
    return base64.urlsafe_b64encode(payload).rstrip(b"=").decode("ascii")


def _split_anchor(anchor: str) -> tuple[bytes, bytes | None]:
    try:
        raw = base64.urlsafe_b64decode(anchor + "=" * (-len(anchor) % 4))
    except (binascii.Error, ValueError):
        raise InvalidAnchor("anchor is not base64url") from None
    if len(raw) < 3 or raw[0] != _ANCHOR_VERSION or raw[1] & ~_ANCHOR_COLLAPSED:
        raise InvalidAnchor("unknown anchor version or flags")
    if raw[1] & _ANCHOR_COLLAPSED:
        return raw[2:], None
    length = raw[2]  # a position is < 30 bytes, so its varuint length is one byte
    if length >= 0x80 or 3 + length >= len(raw):
        raise InvalidAnchor("bad anchor length")
    return raw[3 : 3 + length], raw[3 + length :]


def _decode_position(raw: bytes) -> _Position:
    with _rust_errors(InvalidAnchor, "undecodable position"):
        position = StickyIndex.decode(raw).to_json()
    if not isinstance(position, dict):
        raise InvalidAnchor("undecodable position")
    return position


def resolve_anchor(doc: EssayDoc, anchor: str) -> tuple[int, int] | None:
    """Current `(start, end)` of an anchored range, or None if all of it has been deleted.

    A zero-width anchor always resolves, to `(i, i)`.

    Raises:
        InvalidAnchor: malformed, or made on a different document.
    """
    return _resolve_with(_anchor_view(doc), anchor)


def _resolve_with(view: _AnchorView, anchor: str) -> tuple[int, int] | None:
    first, last = _split_anchor(anchor)
    first_position = _decode_position(first)
    last_position = None if last is None else _decode_position(last)
    start = view.resolve(first_position)
    if last_position is None:
        return start, start
    end = view.resolve(last_position)
    if end <= start:
        return None
    return start, end


def encode_anchors(text: str, state: bytes, ranges: Iterable[tuple[int, int]]) -> list[str]:
    """`encode_anchor` for each range of `text`, from plain data (`EssayDoc.text` and
    `full_state()` of one version): safe on a worker thread, linear in the document's size.

    Raises:
        ValueError: a range is outside the text or reversed.
    """
    view = _AnchorView(text, state)
    return [_encode_range(view, start, end) for start, end in ranges]


def resolve_anchors(text: str, state: bytes, anchors: Iterable[str | None]) -> list[tuple[int, int] | None]:
    """`resolve_anchor` for each anchor from plain data, like `encode_anchors`; an empty,
    malformed or foreign anchor, or a deleted range, gives None."""
    return _resolve_all(_AnchorView(text, state), anchors)


def resolve_anchors_live(doc: EssayDoc, anchors: Iterable[str | None]) -> list[tuple[int, int] | None]:
    """`resolve_anchors` on the live document, on its thread (see `anchors_are_cheap`)."""
    return _resolve_all(_anchor_view(doc), anchors)


def _resolve_all(view: _AnchorView, anchors: Iterable[str | None]) -> list[tuple[int, int] | None]:
    out: list[tuple[int, int] | None] = []
    for anchor in anchors:
        try:
            out.append(_resolve_with(view, anchor) if anchor else None)
        except InvalidAnchor:
            out.append(None)
    return out


# --- plain text -> updates -----------------------------------------------------------------


def text_to_update(text: str) -> bytes:
    """An update creating an essay whose `content` is `text` (for essays created over REST).

    Apply it exactly once per essay: two calls make two independent inserts, which merge into
    the text twice.
    """
    doc = Doc()
    content = doc.get(ROOT_TEXT, type=Text)
    if text:
        content.insert(0, text)
    return doc.get_update()


def replace_text_update(doc: EssayDoc, new_text: str) -> bytes:
    """An update turning `doc.text` into `new_text` with one delete and one insert.

    Only the span between the common prefix and the common suffix is replaced, so concurrent
    edits elsewhere and anchors outside that span survive. `doc` is not modified: apply the
    result with `doc.apply_update` (and log it) like any client update. The edit is made by a
    fresh random client id, so a discarded result can never clash with a later one.
    """
    old_text = doc.text
    if old_text == new_text:
        return EMPTY_UPDATE
    limit = min(len(old_text), len(new_text))
    prefix = 0
    while prefix < limit and old_text[prefix] == new_text[prefix]:
        prefix += 1
    suffix = 0
    while suffix < limit - prefix and old_text[-1 - suffix] == new_text[-1 - suffix]:
        suffix += 1

    scratch = Doc()
    scratch.apply_update(doc.full_state())
    content = scratch.get(ROOT_TEXT, type=Text)
    before = scratch.get_state()
    start_byte = _utf8_len(old_text[:prefix])
    removed_bytes = _utf8_len(old_text[prefix : len(old_text) - suffix])
    inserted = new_text[prefix : len(new_text) - suffix]
    with scratch.transaction():
        if removed_bytes:
            del content[start_byte : start_byte + removed_bytes]
        if inserted:
            content.insert(start_byte, inserted)
    return scratch.get_update(before)

"""A small decoder for Yjs updates (v1 encoding): what an update would write, before any doc sees it.

Pure module (no pycrdt, Ray, database or network). Three uses:

- `check_text_update`: the essay accepts only plain text in its root `Y.Text` named `content`:
  string items and deletions. Anything else a hostile client can encode (another root type, a
  Map, nested types, embeds, formatting attributes, JSON/Any/Binary content, subdocuments) is
  refused before the document is touched.
- `ascii_shadow`: the same update with every string replaced by ASCII of the same UTF-16 length.
  Item ids, lengths and block structure are unchanged, so a document built from it is a copy in
  which UTF-8 bytes, code points and UTF-16 units coincide (see `actors.doc._AnchorView`).
- `read_update` / `delete_ranges`: what the update writes (each client's struct range) and
  deletes, without the plain-text check (stored updates). With `TextUpdate.is_pending` this tells
  a delete of items the document has not seen yet, or structs it cannot integrate yet (both kept
  pending by pycrdt), from parts it has, without asking pycrdt to re-encode the update.

Format (lib0 / Yjs `encoding.js`, `UpdateEncoderV1`):

    update      = structs delete_set
    structs     = varuint n_clients, n_clients * (varuint n_structs, varuint client, varuint clock, structs...)
    struct      = u8 info; info & 31 = 0 GC (varuint len) | 10 Skip (varuint len) | item
    item        = [origin id if info & 0x80] [right origin id if info & 0x40]
                  [if neither: varuint 1 + varString root name | varuint 0 + parent id;
                   varString parent_sub if info & 0x20] content
    content     = 1 deleted (varuint len) | 2 JSON (varuint n, n varString) | 3 binary (varUint8Array)
                  | 4 string (varString) | 5 embed (varString) | 6 format (varString key, varString value)
                  | 7 type (varuint ref [+ varString name for ref 3, 5]) | 8 any (varuint n, n any)
                  | 9 doc (varString guid, any)
    delete_set  = varuint n_clients, n_clients * (varuint client, varuint n, n * (varuint clock, varuint len))
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "ForbiddenContent",
    "MalformedUpdate",
    "TextUpdate",
    "ascii_shadow",
    "check_text_update",
    "delete_ranges",
    "read_update",
    "utf16_len",
]

GC, DELETED, JSON, BINARY, STRING, EMBED, FORMAT, TYPE, ANY, DOC, SKIP = range(11)
_CONTENT_NAMES = {JSON: "JSON content", BINARY: "binary content", EMBED: "an embed",
                  FORMAT: "a formatting attribute", TYPE: "a nested shared type", ANY: "Any content",
                  DOC: "a subdocument"}
_ORIGIN, _RIGHT_ORIGIN, _PARENT_SUB = 0x80, 0x40, 0x20


class MalformedUpdate(ValueError):
    """The bytes are not a Yjs update (v1)."""


class ForbiddenContent(ValueError):
    """A well-formed update that writes something other than plain text into `content`."""


@dataclass(frozen=True, slots=True)
class TextUpdate:
    """What a decoded update carries: `inserted_chars` code points of new string items (an upper
    bound on what applying it can add: items the document already has are ignored by Yjs), its
    delete set as (client, clock, length) ranges, and `struct_ends`: for each client that has
    structs in it, the clock just past its last one (trailing skips excluded)."""

    inserted_chars: int
    deletes: list[tuple[int, int, int]]
    struct_ends: list[tuple[int, int]]

    @property
    def has_deletes(self) -> bool:
        return bool(self.deletes)

    def is_pending(self, clocks: Mapping[int, int]) -> bool:
        """Whether a document whose state vector is `clocks` (client -> clock), with this update
        applied, still lacks part of it: structs it could not integrate (their dependencies are
        missing: its clock for that client stops short of them) or deletes of items it has not
        seen. pycrdt keeps both pending and integrates them when the missing updates arrive."""
        return (any(end > clocks.get(client, 0) for client, end in self.struct_ends)
                or any(clock + length > clocks.get(client, 0) for client, clock, length in self.deletes))


def utf16_len(text: str) -> int:
    """Length of `text` in UTF-16 code units (Yjs clocks count these)."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


class _Reader:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def u8(self) -> int:
        try:
            value = self.buf[self.pos]
        except IndexError:
            raise MalformedUpdate("unexpected end of update") from None
        self.pos += 1
        return value

    def uint(self) -> int:
        # Most varuints in an update (counts, clients' small clocks, lengths) are one byte: read
        # those without the loop (a third of the checks' time per typed update went on this).
        pos = self.pos
        try:
            byte = self.buf[pos]
        except IndexError:
            raise MalformedUpdate("unexpected end of update") from None
        if byte < 0x80:
            self.pos = pos + 1
            return byte
        value, shift = 0, 0
        while True:
            byte = self.u8()
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7
            if shift > 63:
                raise MalformedUpdate("varuint too long")

    def raw(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.buf):
            raise MalformedUpdate("unexpected end of update")
        chunk = self.buf[self.pos:end]
        self.pos = end
        return chunk

    def string(self) -> str:
        try:
            return self.raw(self.uint()).decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedUpdate("string is not UTF-8") from None

    def skip_any(self, depth: int = 0) -> None:
        """Skip one lib0 `any` value."""
        if depth > 64:
            raise MalformedUpdate("Any value nested too deeply")
        tag = self.u8()
        if tag in (127, 126, 121, 120):  # undefined, null, false, true
            return
        if tag == 125:  # varint
            while self.u8() >= 0x80:
                pass
        elif tag == 124:
            self.raw(4)
        elif tag in (123, 122):
            self.raw(8)
        elif tag in (119, 116):  # string, Uint8Array
            self.raw(self.uint())
        elif tag == 118:  # object
            for _ in range(self.uint()):
                self.raw(self.uint())
                self.skip_any(depth + 1)
        elif tag == 117:  # array
            for _ in range(self.uint()):
                self.skip_any(depth + 1)
        else:
            raise MalformedUpdate(f"unknown Any tag {tag}")


@dataclass(slots=True)
class _Walk:
    """What one pass over the structs found (see `_walk_structs`)."""

    inserted_chars: int = 0
    forbidden: str | None = None
    struct_ends: list[tuple[int, int]] = field(default_factory=list)


def _walk_structs(r: _Reader, *, root: str | None, out: list[bytes] | None) -> _Walk:
    """Read every struct. With `root`, note the first thing outside plain text in that root type;
    with `out`, collect the update with strings replaced by ASCII (the chunks between them)."""
    walk = _Walk()
    copied = 0
    for _ in range(r.uint()):
        n_structs = r.uint()
        client = r.uint()
        clock = r.uint()
        end = 0  # past the last struct that is not a skip (0: none)
        for _ in range(n_structs):
            info = r.u8()
            ref = info & 0x1F
            if ref in (GC, SKIP):
                clock += r.uint()
                if ref == GC:
                    end = clock
                continue
            if ref > SKIP:
                raise MalformedUpdate(f"unknown content ref {ref}")
            if info & _ORIGIN:
                r.uint(), r.uint()
            if info & _RIGHT_ORIGIN:
                r.uint(), r.uint()
            if not info & (_ORIGIN | _RIGHT_ORIGIN):
                if r.uint() == 1:
                    name = r.string()
                    if root is not None and name != root and walk.forbidden is None:
                        walk.forbidden = f"root type {name[:40]!r} (only {root!r} may be written)"
                else:
                    r.uint(), r.uint()
                    if root is not None and walk.forbidden is None:
                        walk.forbidden = "an item inside a nested type"
                if info & _PARENT_SUB:
                    r.string()
                    if root is not None and walk.forbidden is None:
                        walk.forbidden = "a map entry (parent_sub)"
            if root is not None and walk.forbidden is None and ref in _CONTENT_NAMES:
                walk.forbidden = _CONTENT_NAMES[ref]
            length = 1  # Yjs content lengths: one per embed, format, type, binary or subdocument
            if ref == DELETED:
                length = r.uint()
            elif ref == STRING:
                start = r.pos
                text = r.string()
                walk.inserted_chars += len(text)
                length = len(text) if text.isascii() else utf16_len(text)
                if out is not None:
                    out.append(r.buf[copied:start])
                    ascii_bytes = b"a" * length
                    out.append(_varuint(len(ascii_bytes)))
                    out.append(ascii_bytes)
                    copied = r.pos
            elif ref in (BINARY, EMBED):
                r.raw(r.uint())
            elif ref == JSON:
                length = r.uint()
                for _ in range(length):
                    r.raw(r.uint())
            elif ref == FORMAT:
                r.raw(r.uint())
                r.raw(r.uint())
            elif ref == TYPE:
                if r.uint() in (3, 5):  # XmlElement, XmlHook carry a name
                    r.raw(r.uint())
            elif ref == ANY:
                length = r.uint()
                for _ in range(length):
                    r.skip_any()
            elif ref == DOC:
                r.raw(r.uint())
                r.skip_any()
            clock += length
            end = clock
        if end:
            walk.struct_ends.append((client, end))
    if out is not None:
        out.append(r.buf[copied:r.pos])
    return walk


def _read_delete_set(r: _Reader) -> list[tuple[int, int, int]]:
    ranges = []
    for _ in range(r.uint()):
        client = r.uint()
        for _ in range(r.uint()):
            clock, length = r.uint(), r.uint()
            ranges.append((client, clock, length))
    return ranges


def _varuint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def check_text_update(update: bytes, *, root: str = "content") -> TextUpdate:
    """Check that `update` only inserts and deletes plain text in the root `Y.Text` named `root`.

    Items that continue another item (they carry an origin) inherit its parent; items without
    one must name `root`. Deleted items, GC and skip ranges (what a peer sends for content it has
    already discarded) are allowed.

    Raises:
        MalformedUpdate: not a decodable v1 update (or trailing bytes).
        ForbiddenContent: it writes anything else (another root type, a map entry, a nested
            type, an embed, a formatting attribute, JSON/Any/binary content, a subdocument).
    """
    r = _Reader(bytes(update))
    walk = _walk_structs(r, root=root, out=None)
    deletes = _read_delete_set(r)
    if r.pos != len(r.buf):
        raise MalformedUpdate("trailing bytes after the delete set")
    if walk.forbidden is not None:
        raise ForbiddenContent(walk.forbidden)
    return TextUpdate(inserted_chars=walk.inserted_chars, deletes=deletes, struct_ends=walk.struct_ends)


def ascii_shadow(update: bytes) -> bytes:
    """`update` with every string replaced by as many ASCII letters as it has UTF-16 units.

    Raises:
        MalformedUpdate: not a decodable v1 update.
    """
    r = _Reader(bytes(update))
    out: list[bytes] = []
    _walk_structs(r, root=None, out=out)
    start = r.pos
    _read_delete_set(r)
    out.append(r.buf[start:r.pos])
    return b"".join(out)


def read_update(update: bytes) -> TextUpdate:
    """What any v1 update carries (`TextUpdate`), without the plain-text check.

    Raises:
        MalformedUpdate: not a decodable v1 update.
    """
    r = _Reader(bytes(update))
    walk = _walk_structs(r, root=None, out=None)
    return TextUpdate(inserted_chars=walk.inserted_chars, deletes=_read_delete_set(r), struct_ends=walk.struct_ends)


def delete_ranges(update: bytes) -> list[tuple[int, int, int]]:
    """The update's delete set as (client, clock, length) ranges.

    Raises:
        MalformedUpdate: not a decodable v1 update.
    """
    return read_update(update).deletes

"""Hostile students for the loadtest (`--hostile N`): what the service must refuse, sent beside the
honest typists, so the report shows the honest users' latency while they are attacked.

Each hostile client is a student on its own account with its own essay in one of the classes. It
runs one attack per round, on a fresh socket (so on a fresh ticket), rotating through `ATTACKS`:

* `flood`: valid text updates back to back, as fast as the socket takes them (-> 1008, the
  per-socket message rate);
* `oversized`: one update that would take the essay over 200,000 characters (-> permission-denied,
  then 4413);
* `huge_frame`: one message over 1 MiB (-> 1009);
* `non_text`: an update writing something other than plain text in the root `Y.Text` `content`,
  one variant per round (`NON_TEXT`: a root Map, another root text, an XML fragment, an array of
  binary, formatting attributes, a `javascript:` link, an embed, bytes that are not Yjs; -> 4400);
* `awareness_spam`: awareness updates each announcing many client ids (entries for ids other
  than the socket's first are dropped; the socket stays open);
* `awareness_big`: one awareness update over 4 KiB (-> 1009);
* `bogus_ticket`: handshakes with made-up tickets (-> HTTP 403, no store access);
* `spent_ticket`: a ticket used once, then offered again (-> HTTP 403);
* `trespass`: the hostile's own ticket on an honest student's essay (-> 4404), writing into it;
* `socket_cap`: more sockets at once than `WS_MAX_SOCKETS_PER_USER` (-> 4429, and ticket 429s
  once `WS_TICKETS_PER_USER_PER_MINUTE` is spent); at most once a minute per client.

A round cut off (its 30 s are up, or the run ends) closes whatever sockets it had opened, so the
next round starts from none (a `socket_cap` round left open would have the next refused 4429).
Each hostile account asks its tickets over an HTTP client of its own (`run.py`), not the honest
typists' connections: neither waits in the other's queue.

The frame builders are pure and cached (built once per process): a hostile client costs the
generator a few socket writes per round, not a Y.Doc per frame.
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import websockets
from pycrdt import (
    Array,
    Doc,
    Map,
    Text,
    XmlFragment,
    create_awareness_message,
    create_update_message,
    write_var_uint,
)

from ops.loadtest.yclient import _read_varuint as _varuint

ATTACKS = ("flood", "oversized", "huge_frame", "non_text", "awareness_spam", "awareness_big",
           "bogus_ticket", "spent_ticket", "trespass", "socket_cap")
UPDATE_ATTACKS = ("flood", "oversized", "huge_frame", "non_text", "trespass")  # acked when applied
MAX_ESSAY_CHARS = 200_000  # the server's default MAX_ESSAY_CHARS
MAX_MESSAGE_BYTES = 1 << 20  # MAX_WS_MESSAGE_BYTES
AWARENESS_MAX_BYTES = 4096  # WS_AWARENESS_MAX_BYTES
MAX_SOCKETS_PER_USER = 32  # WS_MAX_SOCKETS_PER_USER's default
TICKETS_PER_USER_PER_MINUTE = 64  # WS_TICKETS_PER_USER_PER_MINUTE's default
SOCKET_CAP_EXTRA = 6  # sockets a socket_cap round tries beyond the cap
FLOOD_FRAMES = 400  # above WS_BURST (200): the bucket runs dry within one flood
SPAM_MESSAGES = 120  # awareness messages per spam round (within the burst: the socket should stay open)
SPAM_IDS = 20  # client ids announced per spam message
BOGUS_HANDSHAKES = 10
SOCKET_CAP_EVERY = 60.0  # seconds between two socket_cap rounds of one client
ROUND_TIMEOUT = 30.0  # seconds a round may take before it is cut off
ROUND_PAUSE = 0.5  # seconds between rounds: bounds the generator's own CPU
ACK = 100
PERMISSION_DENIED = 2


# --- frames (pure) ----------------------------------------------------------------------------


def _update_of(build: Callable[[Doc], None], client_id: int | None = None) -> bytes:
    """The update a fresh doc produces for what `build` does to it in one transaction."""
    doc = Doc() if client_id is None else Doc(client_id=client_id)
    with doc.transaction():
        build(doc)
    return bytes(doc.get_update())


def _text(doc: Doc) -> Text:
    return doc.get("content", type=Text)


NON_TEXT: dict[str, Callable[[], bytes]] = {
    "root_map": lambda: _update_of(lambda d: d.get("meta", type=Map).update({"owner": "me", "n": 1})),
    "second_root_text": lambda: _update_of(lambda d: d.get("shadow", type=Text).insert(0, "hidden text")),
    "xml_fragment": lambda: _update_of(lambda d: d.get("prosemirror", type=XmlFragment).children.append("<p>")),
    "binary_array": lambda: _update_of(lambda d: d.get("blobs", type=Array).append(b"\x00" * 64)),
    "format_attributes": lambda: _update_of(lambda d: _text(d).insert(0, "bold", attrs={"bold": True})),
    "javascript_link": lambda: _update_of(
        lambda d: _text(d).insert(0, "click", attrs={"link": {"href": "javascript:alert(1)"}})),
    "embed": lambda: _update_of(lambda d: _text(d).insert_embed(0, {"image": "javascript:alert(1)"})),
    "not_yjs": lambda: b"\x01\xff\xff\xff\xff\x0f" + b"\xfe" * 32,
}


def update_frame(update: bytes) -> bytes:
    """A y-websocket sync update message `[0][2][varbytes update]`."""
    return bytes(create_update_message(update))


@functools.cache
def non_text_frame(variant: str) -> bytes:
    return update_frame(NON_TEXT[variant]())


@functools.cache
def oversized_frame(chars: int = MAX_ESSAY_CHARS + 1) -> bytes:
    """One valid plain-text update inserting `chars` characters: over the essay limit on its own
    (and well under the 1 MiB message limit: the refusal is the character limit's)."""
    return update_frame(_update_of(lambda d: _text(d).insert(0, "x" * chars)))


@functools.cache
def huge_frame(size: int = MAX_MESSAGE_BYTES + 1024) -> bytes:
    """A message over the 1 MiB message limit (an update message of text, well formed)."""
    return update_frame(_update_of(lambda d: _text(d).insert(0, "y" * size)))


def flood_updates(n: int = FLOOD_FRAMES, *, client_id: int | None = None, word: str = "spam ") -> list[bytes]:
    """`n` valid plain-text update messages from one fresh client, each appending `word` after
    its own previous one: what an honest typist sends, as fast as a script can."""
    doc = Doc() if client_id is None else Doc(client_id=client_id)
    text = _text(doc)
    out: list[bytes] = []
    for _ in range(n):
        before = doc.get_state()
        text.insert(len(text), word)  # pycrdt's len and indexes count UTF-8 bytes
        out.append(update_frame(bytes(doc.get_update(before))))
    return out


def awareness_payload(entries: list[tuple[int, int, str]]) -> bytes:
    """A y-protocols awareness update: `[count]([client id][clock][varString state json])*`."""
    out = bytearray(write_var_uint(len(entries)))
    for client_id, clock, state in entries:
        raw = state.encode()
        out += write_var_uint(client_id) + write_var_uint(clock) + write_var_uint(len(raw)) + raw
    return bytes(out)


def awareness_spam_frame(ids: int = SPAM_IDS, *, seed: int = 0, clock: int = 1) -> bytes:
    """One awareness message announcing `ids` distinct client ids with a cursor each."""
    rng = random.Random(seed)
    entries = [(rng.randrange(1, 2**31), clock, json.dumps({"user": {"name": f"ghost {k}"}, "cursor": k}))
               for k in range(ids)]
    return bytes(create_awareness_message(awareness_payload(entries)))


@functools.cache
def awareness_big_frame(size: int = AWARENESS_MAX_BYTES + 1024) -> bytes:
    """One awareness message whose payload is over `WS_AWARENESS_MAX_BYTES`."""
    state = json.dumps({"user": {"name": "big"}, "blob": "z" * size})
    return bytes(create_awareness_message(awareness_payload([(424242, 1, state)])))


def bogus_tickets(rng: random.Random, n: int) -> list[str]:
    """Made-up tickets: random tokens in a ticket's alphabet, empty, overlong, and with a dot
    (the shape of a signed one) but no valid tag."""
    shapes = [lambda: secrets.token_urlsafe(32), lambda: "",
              lambda: "A" * 4096, lambda: f"{int(time.time()) + 60}.{secrets.token_urlsafe(24)}"]
    return [shapes[rng.randrange(len(shapes))]() for _ in range(n)]


# --- the client -------------------------------------------------------------------------------


class TicketRefused(Exception):
    """`POST /auth/ws-ticket` answered something other than 200 (429: the per-user bucket)."""

    def __init__(self, status: int, retry_after: float) -> None:
        super().__init__(f"ticket {status}")
        self.status = status
        self.retry_after = retry_after


@dataclass
class Seat:
    """What a hostile client owns: a ticket source for its account, its essay's socket URL, and
    an honest essay's URL to trespass on."""

    ticket: Callable[[], Awaitable[str]]
    doc_url: Callable[[str], str]  # ticket -> ws URL of the hostile's own essay
    trespass_url: Callable[[str], str]  # ticket -> ws URL of an honest student's essay


@dataclass
class Stats:
    """What the hostile clients did and what the server answered, summed over all of them."""

    rounds: Counter[str] = field(default_factory=Counter)
    outcomes: dict[str, Counter[str]] = field(default_factory=dict)
    frames_sent: Counter[str] = field(default_factory=Counter)
    frames_acked: Counter[str] = field(default_factory=Counter)

    def note(self, attack: str, outcome: str, n: int = 1) -> None:
        self.outcomes.setdefault(attack, Counter())[outcome] += n

    def as_dict(self) -> dict[str, Any]:
        """Per attack: rounds, frames (or handshakes) sent, and for updates how many were acked
        and refused (sent - acked; awareness and handshakes get no ack: None)."""
        return {attack: {"rounds": self.rounds[attack], "frames_sent": self.frames_sent[attack],
                         "frames_acked": self.frames_acked[attack] if attack in UPDATE_ATTACKS else None,
                         "frames_refused": self.frames_sent[attack] - self.frames_acked[attack]
                         if attack in UPDATE_ATTACKS else None,
                         "outcomes": dict(self.outcomes.get(attack, Counter()).most_common())}
                for attack in ATTACKS if self.rounds[attack]}


class Probe:
    """One raw socket: counts acks and permission-denied messages, keeps the close code."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.acked = 0
        self.denied = False
        self.frames = 0
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                self.frames += 1
                if isinstance(frame, bytes) and frame:
                    if frame[0] == ACK:
                        self.acked = max(self.acked, _varuint(frame, 1))
                    elif frame[0] == PERMISSION_DENIED:
                        self.denied = True
        except websockets.ConnectionClosed:
            pass

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code if self.reader.done() else None

    async def closed_by_server(self, timeout: float) -> bool:
        """Waits up to `timeout` s for the server to close; False if the socket is still open."""
        try:
            await asyncio.wait_for(asyncio.shield(self.reader), timeout)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        await self.ws.close()
        try:
            await asyncio.wait_for(self.reader, 5)
        except (TimeoutError, Exception):
            self.reader.cancel()

    def outcome(self, prefix: str = "closed") -> str:
        return f"{prefix} {self.close_code}" + (" after permission-denied" if self.denied else "")


async def _connect(url: str) -> Probe:
    ws = await websockets.connect(url, max_size=None, open_timeout=15, close_timeout=5)
    return Probe(ws)


def _handshake_outcome(exc: BaseException) -> str:
    if isinstance(exc, websockets.InvalidStatus):
        return f"handshake {exc.response.status_code}"
    return f"connect error {type(exc).__name__}"


class HostileClient:
    """One hostile student: rounds of `ATTACKS` until `stop_at` (perf_counter time)."""

    def __init__(self, index: int, seat: Seat, stats: Stats, *, seed: int = 0,
                 attacks: tuple[str, ...] = ATTACKS, socket_cap_at: float = 0.0,
                 max_sockets: int = MAX_SOCKETS_PER_USER) -> None:
        """`attacks`: the rotation (a subset of `ATTACKS`, to see what one kind of attack costs).
        `max_sockets`: the server's `WS_MAX_SOCKETS_PER_USER` (a socket_cap round asks for
        `SOCKET_CAP_EXTRA` tickets and sockets more).
        `socket_cap_at`: perf_counter time before which no `socket_cap` round starts (`run.py`
        spreads the clients' first ones over the measured window: at once, they all fell in the
        warm-up and the window saw none)."""
        self.index = index
        self.attacks = attacks
        self.seat = seat
        self.stats = stats
        self.rng = random.Random(seed * 1000 + index)
        self.round = 0
        self.next_socket_cap = socket_cap_at
        self.max_sockets = max_sockets
        self.stopping = False
        self.probes: set[Probe] = set()  # this round's sockets, closed when it ends however it ends

    async def run(self, stop_at: float) -> None:
        await asyncio.sleep(self.rng.uniform(0, 1.0))
        while not self.stopping and time.perf_counter() < stop_at:
            attack = self.attacks[(self.index + self.round) % len(self.attacks)]
            self.round += 1
            if attack == "socket_cap":
                if time.perf_counter() < self.next_socket_cap:
                    if self.attacks == ("socket_cap",):
                        await asyncio.sleep(ROUND_PAUSE)
                    continue
                self.next_socket_cap = time.perf_counter() + SOCKET_CAP_EVERY
            self.stats.rounds[attack] += 1
            try:
                await asyncio.wait_for(getattr(self, attack)(), ROUND_TIMEOUT)
            except TicketRefused as exc:
                self.stats.note(attack, f"ticket {exc.status}")
                await asyncio.sleep(min(exc.retry_after, 5.0))
            except TimeoutError:
                self.stats.note(attack, f"round timed out ({ROUND_TIMEOUT:g} s)")
            except asyncio.CancelledError:
                self.stats.note(attack, "cut off at the end of the run")
                raise
            except Exception as exc:  # a hostile round's failure is a result to report, not a crash
                self.stats.note(attack, f"error {type(exc).__name__}: {str(exc)[:60]}")
            finally:
                await self._close_leftovers()
            await asyncio.sleep(ROUND_PAUSE)

    async def _connect(self, url: str) -> Probe:
        """A socket of this round's (closed by `_close_leftovers` if the round leaves it open)."""
        probe = await _connect(url)
        self.probes.add(probe)
        return probe

    async def _close_leftovers(self) -> None:
        """Closes the round's sockets still open: a round cut off mid-way must not hold its
        sockets (and their places under the per-user cap) into the next."""
        probes, self.probes = self.probes, set()
        await asyncio.gather(*(p.close() for p in probes if not p.reader.done()), return_exceptions=True)

    async def _open_own(self) -> Probe:
        return await self._connect(self.seat.doc_url(await self.seat.ticket()))

    async def _send_all(self, attack: str, probe: Probe, frames: list[bytes]) -> None:
        for frame in frames:
            if probe.reader.done():
                break
            try:
                await probe.ws.send(frame)
            except websockets.ConnectionClosed:
                break
            self.stats.frames_sent[attack] += 1

    async def _finish(self, attack: str, probe: Probe, wait: float = 3.0, label: str = "") -> None:
        """Records how the server answered: a close (code, after permission-denied?) or none."""
        if await probe.closed_by_server(wait):
            self.stats.note(attack, label + probe.outcome())
        else:
            self.stats.note(attack, label + "still open")
            await probe.close()
        self.stats.frames_acked[attack] += probe.acked

    async def _single(self, attack: str, frame: bytes) -> None:
        probe = await self._open_own()
        await self._send_all(attack, probe, [frame])
        await self._finish(attack, probe)

    async def flood(self) -> None:
        probe = await self._open_own()
        await self._send_all("flood", probe, flood_updates(FLOOD_FRAMES, client_id=self.rng.randrange(1, 2**31)))
        await self._finish("flood", probe)

    async def oversized(self) -> None:
        await self._single("oversized", oversized_frame())

    async def huge_frame(self) -> None:
        await self._single("huge_frame", huge_frame())

    async def non_text(self) -> None:
        variants = sorted(NON_TEXT)
        variant = variants[(self.index + self.round // len(self.attacks)) % len(variants)]
        probe = await self._open_own()
        await self._send_all("non_text", probe, [non_text_frame(variant)])
        await self._finish("non_text", probe, label=f"{variant}: ")

    async def awareness_spam(self) -> None:
        probe = await self._open_own()
        frames = [awareness_spam_frame(SPAM_IDS, seed=self.rng.randrange(2**31), clock=k + 1)
                  for k in range(SPAM_MESSAGES)]
        await self._send_all("awareness_spam", probe, frames)
        await self._finish("awareness_spam", probe, wait=1.0)

    async def awareness_big(self) -> None:
        await self._single("awareness_big", awareness_big_frame())

    async def bogus_ticket(self) -> None:
        for ticket in bogus_tickets(self.rng, BOGUS_HANDSHAKES):
            self.stats.frames_sent["bogus_ticket"] += 1
            await self._refused_handshake("bogus_ticket", self.seat.doc_url(ticket))

    async def spent_ticket(self) -> None:
        ticket = await self.seat.ticket()
        probe = await self._connect(self.seat.doc_url(ticket))
        await probe.close()
        for _ in range(3):
            self.stats.frames_sent["spent_ticket"] += 1
            await self._refused_handshake("spent_ticket", self.seat.doc_url(ticket))

    async def _refused_handshake(self, attack: str, url: str) -> None:
        try:
            probe = await self._connect(url)
        except Exception as exc:
            self.stats.note(attack, _handshake_outcome(exc))
            return
        await self._finish(attack, probe, wait=2.0)  # accepted: the server should close it at once

    async def trespass(self) -> None:
        try:
            probe = await self._connect(self.seat.trespass_url(await self.seat.ticket()))
        except TicketRefused:
            raise
        except Exception as exc:
            self.stats.note("trespass", _handshake_outcome(exc))
            return
        await self._send_all("trespass", probe, flood_updates(1, client_id=self.rng.randrange(1, 2**31),
                                                              word="defaced "))
        await self._finish("trespass", probe)

    async def socket_cap(self) -> None:
        asked = await asyncio.gather(*(self.seat.ticket() for _ in range(self.max_sockets + SOCKET_CAP_EXTRA)),
                                     return_exceptions=True)
        tickets = [t for t in asked if isinstance(t, str)]
        for refused in asked:
            if isinstance(refused, TicketRefused):
                self.stats.note("socket_cap", f"ticket {refused.status}")
            elif isinstance(refused, BaseException):
                self.stats.note("socket_cap", f"ticket error {type(refused).__name__}")
        opened = await asyncio.gather(*(self._connect(self.seat.doc_url(t)) for t in tickets),
                                      return_exceptions=True)
        probes = [p for p in opened if isinstance(p, Probe)]
        for p in opened:
            if not isinstance(p, Probe):
                self.stats.note("socket_cap", _handshake_outcome(p))
        self.stats.frames_sent["socket_cap"] += len(tickets)
        await asyncio.sleep(2.0)
        for probe in probes:
            self.stats.note("socket_cap", probe.outcome() if probe.reader.done() else "open")
        await asyncio.gather(*(p.close() for p in probes if not p.reader.done()), return_exceptions=True)

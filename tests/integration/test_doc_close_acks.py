"""A doc socket that the server closes writes the ack of every update durable so far before its
close frame (`AckQueue.write_due` in `serve_app.realtime.doc_socket`'s close paths), also when
that ack was released in the same loop turn as the close and would otherwise have waited for the
turn's end (`AckBatch`), by which time the socket's send queue has stopped.

Over real websockets with in-process hosts (no Ray). The host's answer to the student's last
update is held back and handed to the socket in the very call that decides the close: inside
the rate limit's `take` (the frame that trips it, close 1008), just before a frame the protocol
refuses (close 4415), or inside the host's answer to a sync step 1 that finds the essay deleted
(4404), finds its host going away (1013) or fails (1011). That is what happens when the host's
answer and the closing frame arrive in one read of the event loop.

Also the socket's deferred submission to its host (`call_soon`, at the end of the loop turn that
read the update) failing: raising itself, or answered with an error, closes the socket with that
error's code (1013, 4400, 1011) after the earlier acks; an answer whose bookkeeping raises still
acks its update, and the socket goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from pycrdt import create_sync_message

from actors.host import EssayNotFound, UpdateRejected
from actors.host_api import HostUnavailable
from ops.loadtest.yclient import YClient
from serve_app.realtime.connection import UserBucket
from serve_app.realtime.protocol import CloseCode, encode_ack
from tests.fakes import class_essay


class HeldAnswers:
    """`EssayHosts.submit_update` with the host's answers kept back while `holding`, until `release`."""

    def __init__(self, hosts: Any) -> None:
        self.hosts = hosts
        self.holding = False
        self.held: list[tuple[Callable[..., None], tuple[Any, ...]]] = []
        self.arrived = asyncio.Event()
        submit = hosts.submit_update

        def submit_update(*args: Any, answer: Callable[..., None], **kwargs: Any) -> None:
            if not self.holding:
                submit(*args, answer=answer, **kwargs)
                return

            def keep(*result: Any) -> None:
                self.held.append((answer, result))
                self.arrived.set()

            submit(*args, answer=keep, **kwargs)

        hosts.submit_update = submit_update

    def release(self) -> None:
        """The held answers reach the socket now (committed updates: their acks become due)."""
        held, self.held = self.held, []
        for answer, result in held:
            answer(*result)


class TrippingBucket(UserBucket):
    """The student's shared rate-limit bucket (`writer_bucket` finds it in the app's state):
    once `trip` is set, the next `take` first hands the socket the host's held answers, then
    refuses (True: the frame is over the limit, close 1008) or lets it through (False)."""

    def __init__(self, answers: HeldAnswers) -> None:
        super().__init__(rate=1000, burst=1000)
        self.answers = answers
        self.trip: bool | None = None

    def take(self) -> bool:
        if self.trip is None:
            return super().take()
        over_limit, self.trip = self.trip, None
        self.answers.release()
        return not over_limit and super().take()


@contextlib.asynccontextmanager
async def writing(settings: Any) -> AsyncIterator[tuple[YClient, HeldAnswers, TrippingBucket, list[Any]]]:
    """A student's doc socket on its class essay, its answers and its bucket in the test's hands."""
    from serve_app.app import create_app
    from serve_app.hosts import InProcessHosts
    from tests.conftest import serving

    application = create_app(settings, hosts_factory=lambda s, ctx: InProcessHosts(s, ctx))
    async with serving(application) as server, httpx.AsyncClient(base_url=f"http://{server}", timeout=30) as client:
        _, student, essay = await class_essay(client)
        answers = HeldAnswers(application.state.ctx.hosts)
        bucket = TrippingBucket(answers)
        application.state.writer_buckets = {uuid.UUID(student.id): bucket}
        r = await client.post("/api/v1/auth/ws-ticket", headers=student.headers)
        writer = await YClient(f"ws://{server}/ws/essays/{essay['id']}/doc?ticket={r.json()['ticket']}").connect()
        try:
            yield writer, answers, bucket, application.state.ctx.hosts.host_objects
        finally:
            await writer.close()


def failing_on_sync(hosts: list[Any], answers: HeldAnswers, error: Callable[[uuid.UUID], Exception]) -> None:
    """Every host answers the next sync step 1 with `error` (`EssayNotFound`: the essay was
    deleted; `HostUnavailable`: its host is going; anything else: a bug), handing the socket the
    held answers first, without a loop turn between."""
    for host in hosts:
        async def sync(essay_id: uuid.UUID, _state_vector: bytes) -> Any:
            answers.release()
            raise error(essay_id)

        host.sync = sync


SYNC_FAILURES: dict[str, Callable[[uuid.UUID], Exception]] = {
    "essay-deleted": lambda essay_id: EssayNotFound(str(essay_id)),
    "host-unavailable": lambda _essay_id: HostUnavailable("essay host unavailable: its node is gone"),
    "internal-error": lambda _essay_id: RuntimeError("a bug in the host"),
}


@pytest.mark.parametrize(("closing", "code"), [
    ("rate-limit", CloseCode.POLICY_VIOLATION),
    ("protocol-error", CloseCode.UNKNOWN_MESSAGE_TYPE),  # a client-sent ack
    ("essay-deleted", CloseCode.UNKNOWN_ESSAY),
    ("host-unavailable", CloseCode.TRY_AGAIN_LATER),
    ("internal-error", CloseCode.INTERNAL_ERROR),
])
async def test_an_ack_released_in_the_turn_of_a_server_close_reaches_the_client_before_the_close(
        settings: Any, closing: str, code: int) -> None:
    async with writing(settings) as (writer, answers, bucket, hosts):
        await writer.wait_acked()  # its sync step 2
        answers.holding = True
        writer.type("durable ")
        await asyncio.wait_for(answers.arrived.wait(), 10)  # committed; its ack not yet released
        assert writer.acked == writer.sent - 1
        last_accepted = writer.sent
        if closing == "rate-limit":
            bucket.trip = True
            writer.type("one too many")  # read by the socket's task: an update is still at the host
        elif closing == "protocol-error":
            bucket.trip = False
            await writer.send_raw(encode_ack(1))
        else:
            failing_on_sync(hosts, answers, SYNC_FAILURES[closing])
            await writer.send_raw(create_sync_message(writer.doc))
        assert await writer.wait_closed() == code
        assert bucket.trip is None and not answers.held  # the close came from that frame
        # The reader stops at the close frame: an ack written after it is never counted.
        assert writer.acked == last_accepted


def failing_next_submit(hosts: Any, how: str, error: Exception | None = None) -> None:
    """The next update the socket hands its host (in the loop turn's deferred `submit`) fails:
    `raises` (the submission itself raises), `answers` (the host answers with `error`), or
    `bad-room` (committed, but its answer carries a room the socket's bookkeeping cannot read)."""
    submit = hosts.submit_update
    armed = [True]

    def submit_update(*args: Any, answer: Callable[..., None], **kwargs: Any) -> None:
        if not armed[0]:
            submit(*args, answer=answer, **kwargs)
            return
        armed[0] = False
        if how == "raises":
            assert error is not None
            raise error
        if how == "answers":
            asyncio.get_running_loop().call_soon(answer, None, error, None)
            return

        def malformed(seq: int | None, failure: BaseException | None, _room: Any) -> None:
            answer(seq, failure, ("not", "a", "room"))

        submit(*args, answer=malformed, **kwargs)

    hosts.submit_update = submit_update


@pytest.mark.parametrize(("how", "error", "code"), [
    ("raises", HostUnavailable("essay host unavailable"), CloseCode.TRY_AGAIN_LATER),
    ("raises", RuntimeError("a bug in the submission"), CloseCode.INTERNAL_ERROR),
    ("answers", HostUnavailable("essay host did not answer in time"), CloseCode.TRY_AGAIN_LATER),
    ("answers", UpdateRejected("not a Yjs update"), CloseCode.MALFORMED_FRAME),
    ("answers", RuntimeError("a bug in the host"), CloseCode.INTERNAL_ERROR),
])
async def test_a_failed_submission_closes_the_socket_with_its_code_after_the_earlier_acks(
        settings: Any, how: str, error: Exception, code: int) -> None:
    async with writing(settings) as (writer, answers, _bucket, _hosts):
        writer.type("durable ")
        await writer.wait_acked()
        acked = writer.acked
        failing_next_submit(answers.hosts, how, error)
        writer.type("lost")
        assert await writer.wait_closed() == code  # not hung: the failed update ended the socket
        assert writer.acked == acked  # the failed one is not acked; the client resends it


async def test_an_answer_whose_bookkeeping_fails_still_acks_the_update_and_the_socket_goes_on(
        settings: Any) -> None:
    async with writing(settings) as (writer, answers, _bucket, _hosts):
        writer.type("durable ")
        await writer.wait_acked()
        failing_next_submit(answers.hosts, "bad-room")
        writer.type("committed ")
        await writer.wait_acked()  # acked although the socket's bookkeeping of its answer raised
        writer.type("and more")
        await writer.wait_acked()
        await writer.round_trip()
        assert writer.close_code is None

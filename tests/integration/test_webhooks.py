"""Webhook delivery against real local receivers: connections pinned to the checked address (Host
header and TLS verification keep the hostname), private targets refused however the name resolves,
deliveries outside the job slots, and callback secrets kept out of log lines."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import ssl
import time
import uuid
from pathlib import Path

import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from serve_app.app import create_app
from serve_app.webhooks import DeliveryResult, UnsafeCallbackUrl, WebhookSender, check_url_target, redact_url, verify
from tests.conftest import free_port, fresh_database, make_settings
from tests.fakes import register
from tests.webhook_receiver import WebhookReceiver

ESSAY = "Homework should be limited.\nStudents need rest and time for family."
PAYLOAD = {"submission_id": "s-1", "status": "done"}
KEY = b"whsec_test-key-for-this-receiver"


class FakeDns:
    """Answers each name with the next scripted list of addresses (the last one repeats)."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        script = self.answers.get(host)
        if not script:
            raise OSError(f"{host} does not resolve")
        return script.pop(0) if len(script) > 1 else script[0]


async def _deliver(dns: FakeDns, url: str, *, allow_private: bool, **kwargs: object) -> DeliveryResult:
    """One delivery by a fresh sender (two attempts, no backoff waits)."""
    async def no_wait(_seconds: float) -> None:
        return None

    sender = WebhookSender(allow_private=allow_private, resolver=dns, sleep=no_wait, max_attempts=2,
                           timeout=10, **kwargs)  # type: ignore[arg-type]
    try:
        return await sender.deliver(url, key=KEY, event="submission.done", delivery_id=uuid.uuid4().hex,
                                    payload=PAYLOAD)
    finally:
        await sender.aclose()


async def test_delivery_connects_to_the_resolved_address_and_sends_the_hostname() -> None:
    async with WebhookReceiver() as receiver:
        dns = FakeDns({"hooks.school.test": [["127.0.0.1"]]})
        result = await _deliver(dns, receiver.url_for("hooks.school.test"), allow_private=True)
    assert result.delivered, result
    assert dns.calls == ["hooks.school.test"]  # resolved once, by us: the system resolver never saw it
    assert receiver.received[0].headers["host"] == f"hooks.school.test:{receiver.port}"
    assert verify(KEY, receiver.received[0].headers["x-essaycoach-signature"], receiver.received[0].body)


async def test_a_name_answering_public_and_private_addresses_is_never_connected() -> None:
    async with WebhookReceiver() as receiver:
        dns = FakeDns({"rebind.test": [["93.184.216.34", "127.0.0.1"]]})
        result = await _deliver(dns, receiver.url_for("rebind.test"), allow_private=False)
    assert not result.delivered and result.attempts == 1  # refused, not retried
    assert "private" in (result.error or "")
    assert receiver.received == []


async def test_a_name_rebound_to_a_private_address_after_the_check_is_not_connected() -> None:
    async with WebhookReceiver() as receiver:
        # Public when the submission is accepted, loopback by the time the webhook is delivered.
        dns = FakeDns({"rebind.test": [["93.184.216.34"], ["127.0.0.1"]]})
        url = receiver.url_for("rebind.test")
        await check_url_target(url, allow_private=False, resolver=dns)
        result = await _deliver(dns, url, allow_private=False)
    assert not result.delivered and "private" in (result.error or "")
    assert receiver.received == []


def _tls_files(tmp: Path, hostname: str) -> tuple[ssl.SSLContext, str, str]:
    """A CA trusted by the returned client context, and a server certificate for `hostname` only."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    certfile, keyfile = tmp / f"{hostname}.pem", tmp / f"{hostname}.key"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    trust = ssl.create_default_context(cadata=ca.public_bytes(serialization.Encoding.PEM).decode())
    return trust, str(certfile), str(keyfile)


@pytest.mark.parametrize(("certified", "delivered"), [("hooks.school.test", True), ("other.school.test", False)])
async def test_tls_is_verified_against_the_hostname_not_the_pinned_address(
    tmp_path: Path, certified: str, delivered: bool
) -> None:
    trust, certfile, keyfile = _tls_files(tmp_path, certified)
    async with WebhookReceiver(ssl_certfile=certfile, ssl_keyfile=keyfile) as receiver:
        dns = FakeDns({"hooks.school.test": [["127.0.0.1"]]})
        result = await _deliver(dns, receiver.url_for("hooks.school.test"), allow_private=True, verify=trust)
    assert result.delivered is delivered, result
    assert len(receiver.received) == (1 if delivered else 0)


# --- a hanging receiver does not hold the queue ------------------------------------------------


class HangingReceiver:
    """Accepts connections and reads, and never answers."""

    def __init__(self) -> None:
        self.connected = asyncio.Event()
        self.release = asyncio.Event()
        self.port = 0
        self._server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connected.set()
        await self.release.wait()
        writer.close()

    async def __aenter__(self) -> HangingReceiver:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release.set()
        assert self._server is not None
        self._server.close()


async def _status(client: httpx.AsyncClient, headers: dict[str, str], sid: str) -> dict[str, object]:
    r = await client.get(f"/api/v1/submissions/{sid}", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def test_a_hanging_webhook_receiver_does_not_delay_other_submissions(database_url: str,
                                                                           tmp_path: Path) -> None:
    # A store of its own: the session app's submission runner would claim these jobs too (and,
    # refusing private callbacks, never connect to the receiver).
    async with fresh_database(database_url, tmp_path) as url:
        await _hanging_receiver_does_not_delay_others(url, tmp_path)


async def _hanging_receiver_does_not_delay_others(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path, webhook_allow_private=True, submission_concurrency=1,
                             webhook_timeout_seconds=300, submission_poll_seconds=0.1)
    application = create_app(settings)
    async with HangingReceiver() as hanging, application.router.lifespan_context(application):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url="http://t") as client:
            user = await register(client)
            slow = await client.post("/api/v1/submissions", headers=user.headers, json={
                "text": ESSAY, "callback_url": f"http://127.0.0.1:{hanging.port}/hook"})
            assert slow.status_code == 202, slow.text
            async with asyncio.timeout(60):
                await hanging.connected.wait()  # its delivery now hangs (for up to 300 s per attempt)
            others = []
            for _ in range(3):
                r = await client.post("/api/v1/submissions", headers=user.headers, json={"text": ESSAY})
                assert r.status_code == 202, r.text
                others.append(r.json()["id"])
            deadline = time.monotonic() + 60  # a liveness bound, far below the hanging delivery
            for sid in others:
                while (await _status(client, user.headers, sid))["status"] != "done":
                    assert time.monotonic() < deadline, "a hanging receiver held up the queue"
                    await asyncio.sleep(0.05)
            body = await _status(client, user.headers, slow.json()["id"])
            assert body["status"] == "done" and body["callback_status"] == "pending"


# --- secrets stay out of logs -------------------------------------------------------------------


def test_redacted_urls_keep_no_query_string() -> None:
    assert redact_url("https://hooks.example.com:8443/h?token=s3cret#x") == "https://hooks.example.com:8443/h?…"
    assert redact_url("http://hooks.example.com/h") == "http://hooks.example.com/h"


async def test_a_failed_delivery_logs_no_callback_query_string(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="essaycoach.webhooks")
    closed_port = free_port()
    result = await _deliver(FakeDns({}), f"http://127.0.0.1:{closed_port}/hook?token=s3cret-value",
                            allow_private=True)
    assert not result.delivered
    assert f"127.0.0.1:{closed_port}/hook" in caplog.text
    assert "s3cret-value" not in caplog.text and "s3cret-value" not in (result.error or "")


async def test_uvicorn_logs_of_socket_and_request_paths_carry_no_ticket(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import websockets

    caplog.set_level(logging.INFO)
    application = create_app(make_settings(database_url, tmp_path))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(application, host="127.0.0.1", port=port, log_config=None,
                                           log_level="info", lifespan="on"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.02)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            await client.get("/healthz?ticket=ticket-in-a-url-1")
        with pytest.raises(websockets.InvalidStatus) as refused:  # a made-up ticket: refused before accept
            async with websockets.connect(f"ws://127.0.0.1:{port}/ws/essays/{uuid.uuid4()}/doc"
                                          "?ticket=ticket-in-a-url-2"):
                pass
        assert refused.value.response.status_code == 403
    finally:
        server.should_exit = True
        await task
    served = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("uvicorn"))
    assert "/healthz?ticket=…" in served and "/doc?ticket=…" in served
    assert "ticket-in-a-url-1" not in served and "ticket-in-a-url-2" not in served


@pytest.mark.parametrize("url", [
    "http://[2002:7f00:1::]/h",           # 6to4 of 127.0.0.1
    "http://[::ffff:169.254.169.254]/h",  # IPv4-mapped metadata address
    "http://[64:ff9b::a9fe:a9fe]/h",      # NAT64 of 169.254.169.254
    "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/h",  # Teredo
])
async def test_embedded_private_ipv4_in_a_callback_url_is_refused(url: str) -> None:
    with pytest.raises(UnsafeCallbackUrl):
        await check_url_target(url, allow_private=False)


async def test_each_user_reads_and_rotates_their_own_webhook_secret(client: httpx.AsyncClient) -> None:
    user, other = await register(client), await register(client)
    first = (await client.get("/api/v1/me/webhook-secret", headers=user.headers)).json()
    assert (await client.get("/api/v1/me/webhook-secret", headers=user.headers)).json() == first
    rotated = await client.post("/api/v1/me/webhook-secret", headers=user.headers)
    assert rotated.status_code == 200 and rotated.json()["secret"] not in (first["secret"], "")
    assert (await client.get("/api/v1/me/webhook-secret", headers=user.headers)).json() == rotated.json()
    assert (await client.get("/api/v1/me/webhook-secret", headers=other.headers)).json()["secret"] != \
        rotated.json()["secret"]
    assert (await client.get("/api/v1/me/webhook-secret")).status_code == 401

"""The deploy settings at work, over real sockets against the devstack.

- The worker (`connect_temporal`) and the starter (`connect`) reach Temporal in plaintext, with
  an API key (seen arriving in the HTTP/2 headers by a proxy in front of the server), and over
  TLS with a client certificate. The dev server has no TLS of its own, so a TLS-terminating
  proxy with certificates made here (`cryptography`) stands in front of it, requiring a client
  certificate the way Temporal Cloud's mTLS does.
- `/healthz` and `/readyz` of a real `python worker.py` process: ready once it polls and its
  database answers, not ready while the database hangs, and not ready from SIGTERM on while it
  drains a running activity.
- deploy/temporal/setup-namespace.sh against the dev server with the Temporal CLI.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hpack
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hyperframe.frame import ContinuationFrame, Frame, HeadersFrame
from temporalio.client import Client

import mintsaga
from devstack.config import StackConfig
from devstack.requests import mint_request
from devstack.supervisor import temporal_binary
from mintsaga.observability import probe
from mintsaga.worker import connect_temporal
from tests.paths import ROOT
from tests.saga_support import add_fault, settings_for, temporal_client

SERVER_NAME = "temporal.test"
API_KEY = "tmprl-test-api-key-0123456789"
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

pytestmark = pytest.mark.integration


# -- certificates --------------------------------------------------------------------------------


@dataclass
class Pki:
    """A CA, a server certificate for SERVER_NAME and a client certificate, as PEM files."""

    folder: Path

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = self._cert(ca_key, "MintSaga test CA", ca_key, "MintSaga test CA", ca=True)
        server_key = ec.generate_private_key(ec.SECP256R1())
        server = self._cert(
            server_key, SERVER_NAME, ca_key, "MintSaga test CA", san=SERVER_NAME, client=False
        )
        client_key = ec.generate_private_key(ec.SECP256R1())
        client = self._cert(client_key, "mintsaga-worker", ca_key, "MintSaga test CA", client=True)
        self._write("ca.pem", ca)
        self._write("server.pem", server)
        self._write("server.key", server_key)
        self._write("client.pem", client)
        self._write("client.key", client_key)

    def path(self, name: str) -> str:
        return str(self.folder / name)

    def _write(self, name: str, item: Any) -> None:
        if isinstance(item, x509.Certificate):
            data = item.public_bytes(serialization.Encoding.PEM)
        else:
            data = item.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        (self.folder / name).write_bytes(data)

    @staticmethod
    def _cert(
        key: ec.EllipticCurvePrivateKey,
        subject: str,
        issuer_key: ec.EllipticCurvePrivateKey,
        issuer: str,
        *,
        ca: bool = False,
        san: str | None = None,
        client: bool = False,
    ) -> x509.Certificate:
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            ).add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
        else:
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                critical=False,
            ).add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]
                ),
                critical=False,
            )
        if san:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False
            )
        return builder.sign(issuer_key, hashes.SHA256())


# -- a proxy in front of the dev server that reads what clients send -------------------------------


@dataclass
class Proxy:
    """Forwards TCP to the dev server (TLS terminated here when `tls` is given) and decodes the
    HTTP/2 request headers clients send, and the client certificates they present."""

    upstream: tuple[str, int]
    tls: ssl.SSLContext | None = None
    headers: list[dict[str, str]] = field(default_factory=list)
    client_subjects: list[str] = field(default_factory=list)
    address: str = ""

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Proxy]:
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.tls)
        self.address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
        try:
            yield self
        finally:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("ssl_object")
        if peer is not None and (cert := peer.getpeercert()):
            self.client_subjects.append(dict(x[0] for x in cert["subject"])["commonName"])
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        await asyncio.gather(
            self._pipe(reader, up_writer, watch=True),
            self._pipe(up_reader, writer, watch=False),
            return_exceptions=True,
        )

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, watch: bool
    ) -> None:
        frames = _H2Headers(self.headers) if watch else None
        try:
            while data := await reader.read(65536):
                if frames is not None:
                    frames.feed(data)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()


class _H2Headers:
    """Reads a client's HTTP/2 stream passively: each header block, decoded (HPACK)."""

    def __init__(self, out: list[dict[str, str]]) -> None:
        self.out = out
        self.buffer = bytearray()
        self.decoder = hpack.Decoder()
        self.preface = False
        self.block = b""

    def feed(self, data: bytes) -> None:
        self.buffer += data
        if not self.preface:
            if len(self.buffer) < len(H2_PREFACE):
                return
            assert bytes(self.buffer[: len(H2_PREFACE)]) == H2_PREFACE
            del self.buffer[: len(H2_PREFACE)]
            self.preface = True
        while len(self.buffer) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(bytes(self.buffer[:9])))
            if len(self.buffer) < 9 + length:
                return
            frame.parse_body(memoryview(bytes(self.buffer[9 : 9 + length])))
            del self.buffer[: 9 + length]
            if isinstance(frame, HeadersFrame | ContinuationFrame):
                self.block += frame.data
                if "END_HEADERS" in frame.flags:
                    decoded = self.decoder.decode(self.block)
                    self.out.append({str(k): str(v) for k, v in decoded})
                    self.block = b""


def server_tls(pki: Pki, *, require_client_cert: bool = True) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.path("server.pem"), pki.path("server.key"))
    context.load_verify_locations(pki.path("ca.pem"))
    context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])  # gRPC
    return context


def upstream(stack: StackConfig) -> tuple[str, int]:
    host, port = stack.temporal_address.rsplit(":", 1)
    return host, int(port)


def bearer_tokens(proxy: Proxy) -> set[str]:
    return {h["authorization"] for h in proxy.headers if "authorization" in h}


async def answers(client: Client) -> None:
    """One real call through the connection."""
    await client.count_workflows('WorkflowType="NoSuchWorkflow"')


# -- connecting ----------------------------------------------------------------------------------


async def test_the_worker_and_the_starter_connect_in_plaintext(
    stack: StackConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for(stack)
    assert settings.temporal_security.connect_options() == {"api_key": None, "tls": False}
    await answers(await connect_temporal(settings))
    monkeypatch.setenv("TEMPORAL_ADDRESS", stack.temporal_address)
    for name in ("TEMPORAL_API_KEY", "TEMPORAL_TLS", "TEMPORAL_TLS_CERT", "TEMPORAL_TLS_CA"):
        monkeypatch.delenv(name, raising=False)
    await answers(await mintsaga.connect())


async def test_the_api_key_from_its_file_reaches_the_server(
    stack: StackConfig, tmp_path: Path
) -> None:
    key_file = tmp_path / "temporal-api-key"
    key_file.write_text(API_KEY + "\n")
    async with Proxy(upstream(stack)).running() as proxy:
        settings = settings_for(
            stack,
            TEMPORAL_ADDRESS=proxy.address,
            TEMPORAL_API_KEY_FILE=str(key_file),
            TEMPORAL_TLS="false",  # the dev server speaks plaintext
        )
        await answers(await connect_temporal(settings))
    assert bearer_tokens(proxy) == {f"Bearer {API_KEY}"}


async def test_mtls_and_an_api_key_through_a_tls_front(
    stack: StackConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pki = Pki(tmp_path / "pki")
    tls_env = {
        "TEMPORAL_TLS_CERT": pki.path("client.pem"),
        "TEMPORAL_TLS_KEY": pki.path("client.key"),
        "TEMPORAL_TLS_CA": pki.path("ca.pem"),
        "TEMPORAL_TLS_SERVER_NAME": SERVER_NAME,  # dialled by address, verified by name
        "TEMPORAL_API_KEY": API_KEY,
    }
    async with Proxy(upstream(stack), tls=server_tls(pki)).running() as proxy:
        # The worker's connection.
        settings = settings_for(stack, TEMPORAL_ADDRESS=proxy.address, **tls_env)
        await answers(await connect_temporal(settings))
        # The starter's, from the same variables.
        monkeypatch.setenv("TEMPORAL_ADDRESS", proxy.address)
        for name, value in tls_env.items():
            monkeypatch.setenv(name, value)
        await answers(await mintsaga.connect())
    assert proxy.client_subjects[:2] == ["mintsaga-worker", "mintsaga-worker"]
    assert bearer_tokens(proxy) == {f"Bearer {API_KEY}"}


async def test_tls_settings_are_really_applied(stack: StackConfig, tmp_path: Path) -> None:
    """Each wrong setting fails the connection: the settings reach the TLS handshake."""
    pki, other = Pki(tmp_path / "pki"), Pki(tmp_path / "other")
    good = {
        "TEMPORAL_TLS_CERT": pki.path("client.pem"),
        "TEMPORAL_TLS_KEY": pki.path("client.key"),
        "TEMPORAL_TLS_CA": pki.path("ca.pem"),
        "TEMPORAL_TLS_SERVER_NAME": SERVER_NAME,
    }
    wrong = {
        "a CA that did not sign the server's certificate": {
            "TEMPORAL_TLS_CA": other.path("ca.pem")
        },
        "another server name": {"TEMPORAL_TLS_SERVER_NAME": "elsewhere.test"},
        "a client certificate of another CA": {
            "TEMPORAL_TLS_CERT": other.path("client.pem"),
            "TEMPORAL_TLS_KEY": other.path("client.key"),
        },
    }
    async with Proxy(upstream(stack), tls=server_tls(pki)).running() as proxy:
        for why, change in wrong.items():
            settings = settings_for(stack, TEMPORAL_ADDRESS=proxy.address, **{**good, **change})
            with pytest.raises(RuntimeError):
                client = await asyncio.wait_for(connect_temporal(settings), 30)
                await asyncio.wait_for(answers(client), 10)  # a rejected cert may fail here
                pytest.fail(f"connected with {why}")
        # Without a client certificate the front refuses the handshake.
        no_cert = {
            k: v for k, v in good.items() if k not in ("TEMPORAL_TLS_CERT", "TEMPORAL_TLS_KEY")
        }
        with pytest.raises(RuntimeError):
            settings = settings_for(stack, TEMPORAL_ADDRESS=proxy.address, **no_cert)
            await answers(await asyncio.wait_for(connect_temporal(settings), 30))
        # And the good settings still connect.
        settings = settings_for(stack, TEMPORAL_ADDRESS=proxy.address, **good)
        await answers(await connect_temporal(settings))


# -- /healthz and /readyz of a worker process ------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    port: int
    task_queue: str
    log: Path

    def get(self, path: str) -> tuple[int, dict[str, Any]]:
        answer = httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=10)
        return answer.status_code, answer.json() if path in ("/healthz", "/readyz") else {}

    def wait_for(self, path: str, status: int, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: tuple[int, Any] = (0, "no answer")
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            with contextlib.suppress(httpx.TransportError):
                last = self.get(path)
                if last[0] == status:
                    return last[1]
            time.sleep(0.2)
        raise AssertionError(f"{path} never answered {status}; last {last}\n{self.log.read_text()}")


@pytest.fixture
def worker_process(stack: StackConfig, tmp_path: Path) -> Iterator[WorkerProcess]:
    port, queue = free_port(), f"probes-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        **stack.worker_env(),
        "METRICS_PORT": str(port),
        "TEMPORAL_TASK_QUEUE": queue,
        "HEALTH_CHECK_INTERVAL_S": "0",
        "PIN_REPAIR_INTERVAL_S": "0",
    }
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "worker.py"], cwd=ROOT, env=env, stdout=out, stderr=out
        )
    try:
        yield WorkerProcess(process, port, queue, log)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(30)


def test_the_worker_is_alive_then_ready_once_it_polls_and_its_database_answers(
    stack: StackConfig, worker_process: WorkerProcess
) -> None:
    assert worker_process.wait_for("/healthz", 200) == {"status": "alive"}
    ready = worker_process.wait_for("/readyz", 200)
    assert ready == {"status": "ready", "checks": {"postgres": "ok", "temporal": "ok"}}
    assert "worker polling" in worker_process.log.read_text()
    status, _ = worker_process.get("/metrics")  # the metrics stay where they were
    assert status == 200
    assert (
        "mintsaga_db_pool_connections"
        in httpx.get(f"http://127.0.0.1:{worker_process.port}/metrics", timeout=10).text
    )
    for path in ("healthz", "readyz"):
        ran = probe_command(worker_process.port, path)
        assert ran.returncode == 0, ran.stdout + ran.stderr

    add_fault(stack, target="postgres", kind="hang")
    not_ready = worker_process.wait_for("/readyz", 503, timeout=30)
    assert not_ready["checks"]["postgres"].startswith("failed: no answer within")
    assert not_ready["checks"]["temporal"] == "ok"
    assert worker_process.get("/healthz") == (200, {"status": "alive"})  # not restarted for it
    httpx.delete(stack.url("admin") + "/faults", timeout=10).raise_for_status()
    worker_process.wait_for("/readyz", 200, timeout=30)


def faults_hit(stack: StackConfig, fault: str) -> bool:
    faults = httpx.get(stack.url("admin") + "/faults", timeout=10).json()
    return any(f["id"] == fault and f["hits"] > 0 for f in faults)


def probe_command(port: int, path: str) -> subprocess.CompletedProcess[str]:
    """The image's HEALTHCHECK command, run against the worker's port."""
    return subprocess.run(
        [sys.executable, "-m", "mintsaga.observability.probe", path],
        cwd=ROOT,
        env={**os.environ, "METRICS_PORT": str(port)},
        capture_output=True,
        text=True,
        timeout=30,
    )


async def test_sigterm_makes_the_worker_unready_while_it_drains(
    stack: StackConfig, worker_process: WorkerProcess
) -> None:
    await asyncio.to_thread(worker_process.wait_for, "/readyz", 200)
    fault = add_fault(stack, target="pinata", kind="latency", delay_ms=6000)
    client = await temporal_client(stack)
    handle = await mintsaga.start_mint(client, mint_request(stack), queue=worker_process.task_queue)
    try:
        deadline = time.monotonic() + 60
        while not await asyncio.to_thread(faults_hit, stack, fault):  # an activity waits on Pinata
            assert time.monotonic() < deadline, "no activity reached Pinata"
            await asyncio.sleep(0.1)
        worker_process.process.send_signal(signal.SIGTERM)
        draining = await asyncio.to_thread(worker_process.wait_for, "/readyz", 503, 5)
        assert draining == {"status": "draining"}
        assert worker_process.process.poll() is None  # still finishing the activity
        assert (await asyncio.to_thread(worker_process.get, "/healthz"))[0] == 200
        ran = await asyncio.to_thread(probe_command, worker_process.port, "readyz")
        assert ran.returncode == 1 and ran.stdout.startswith("503")
        assert await asyncio.to_thread(worker_process.process.wait, 60) == 0
        assert "draining" in worker_process.log.read_text()
        assert probe.probe("healthz", worker_process.port)[0] == 0  # gone
    finally:
        with contextlib.suppress(Exception):
            await handle.terminate("test over")


# -- the compose file's Temporal set-up --------------------------------------------------------


def test_the_namespace_script_creates_the_namespace_and_search_attributes(
    stack: StackConfig,
) -> None:
    namespace = f"deploy-{uuid.uuid4().hex[:8]}"
    cli = Path(temporal_binary())
    env = {
        **os.environ,
        "PATH": f"{cli.parent}{os.pathsep}{os.environ['PATH']}",
        "TEMPORAL_ADDRESS": stack.temporal_address,
        "TEMPORAL_NAMESPACE": namespace,
    }
    script = ROOT / "deploy" / "temporal" / "setup-namespace.sh"
    for expected in ("created", "exists"):  # and again: nothing to do
        ran = subprocess.run(
            ["sh", str(script)], env=env, capture_output=True, text=True, timeout=180
        )
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert f"namespace {namespace}: {expected}" in ran.stdout
        assert f"search attribute MintStatus: {expected}" in ran.stdout
    listed = subprocess.run(
        [str(cli), "operator", "search-attribute", "list", "--address", stack.temporal_address,
         "-n", namespace, "--output", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    custom = json.loads(listed.stdout).get("customAttributes", {})
    assert custom.get("MintStage") == custom.get("MintStatus") == "INDEXED_VALUE_TYPE_KEYWORD"

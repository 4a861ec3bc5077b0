"""Credentials and certificates of a secured local stack, kept in one owner-only directory.

Layout of ``directory`` (mode 0700; every file 0600)::

    ca.pem, ca-key.pem         the local certificate authority (10 years, EC P-256)
    kafka-server.pem           the brokers' key and certificate (127.0.0.1, localhost), by the CA
    kafka-users.json           {"admin": "<password>", "client": ..., ...}: SCRAM-SHA-512 users
    pgpass                     libpq password file for the ``postgres`` login (scram-sha-256)

Everything is created once and reused; deleting a file and running ``sagaline dev up``
again creates a new one (a new password is then upserted into Kafka; see
docs/security.md for rotation and revocation).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sagaline.orchestrator.devenv.errors import DevEnvError

__all__ = [
    "ADMIN",
    "KAFKA_ROLES",
    "POSTGRES_USER",
    "StackCredentials",
    "write_private",
]

#: the broker/controller principal, the only Kafka super user (also used by
#: ``sagaline topics ensure`` and the dev tooling)
ADMIN = "admin"
#: one SCRAM principal per role (see orchestrator/runtime/acls.py for what each may do)
KAFKA_ROLES = (
    ADMIN,
    "client",
    "orchestrator",
    "worker",
    "relay",
    "auditor",
    "projection",
    "console",
)
POSTGRES_USER = "postgres"

_CA_DAYS = 3650
_SERVER_DAYS = 825


def write_private(path: Path, data: str | bytes) -> None:
    """Write ``path`` so that only its owner can read it (0600, set before any byte)."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, raw)
    finally:
        os.close(fd)


def _new_password() -> str:
    # hex only: safe inside JAAS strings, property files, pgpass and URLs
    return secrets.token_hex(24)


@dataclass(frozen=True)
class StackCredentials:
    """The secrets of one secured stack (created on first use, then read back)."""

    directory: Path
    kafka_passwords: dict[str, str] = field(repr=False)
    postgres_password: str = field(repr=False)

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def server_pem(self) -> Path:
        return self.directory / "kafka-server.pem"

    @property
    def kafka_users_file(self) -> Path:
        return self.directory / "kafka-users.json"

    @property
    def pgpass_file(self) -> Path:
        return self.directory / "pgpass"

    def secrets(self) -> tuple[str, ...]:
        """Every password (for redaction and for the tests that look for leaks)."""
        return (*self.kafka_passwords.values(), self.postgres_password)

    @classmethod
    def ensure(cls, directory: Path) -> StackCredentials:
        """Create whatever is missing under ``directory``; return the credentials."""
        directory = directory.resolve()
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)
        users_file = directory / "kafka-users.json"
        passwords: dict[str, str] = {}
        if users_file.is_file():
            try:
                loaded = json.loads(users_file.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise DevEnvError(f"{users_file} is not valid JSON; delete it") from exc
            passwords = {str(k): str(v) for k, v in dict(loaded).items()}
        missing = [role for role in KAFKA_ROLES if role not in passwords]
        if missing or not users_file.is_file():
            passwords.update({role: _new_password() for role in missing})
            write_private(users_file, json.dumps(passwords, indent=2))
        users_file.chmod(0o600)
        pgpass = directory / "pgpass"
        pg_password = _read_pgpass(pgpass)
        if pg_password is None:
            pg_password = _new_password()
            write_private(pgpass, f"*:*:*:{POSTGRES_USER}:{pg_password}\n")
        pgpass.chmod(0o600)
        _ensure_certificates(directory)
        return cls(directory, passwords, pg_password)


def _read_pgpass(path: Path) -> str | None:
    if not path.is_file():
        return None
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split(":")
        if len(parts) == 5 and parts[3] == POSTGRES_USER and parts[4]:
            return parts[4]
    return None


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _ensure_certificates(directory: Path) -> None:
    ca_file, ca_key_file = directory / "ca.pem", directory / "ca-key.pem"
    server_file = directory / "kafka-server.pem"
    if not (ca_file.is_file() and ca_key_file.is_file()):
        ca_key, ca_cert = _new_ca()
        write_private(ca_key_file, _pem_key(ca_key))
        write_private(ca_file, ca_cert.public_bytes(serialization.Encoding.PEM))
        server_file.unlink(missing_ok=True)  # signed by the old CA
    if server_file.is_file():
        return
    ca_key_loaded = serialization.load_pem_private_key(ca_key_file.read_bytes(), password=None)
    if not isinstance(ca_key_loaded, ec.EllipticCurvePrivateKey):
        raise DevEnvError(f"{ca_key_file} is not an EC key; delete the CA files")
    ca_cert = x509.load_pem_x509_certificate(ca_file.read_bytes())
    key, cert = _new_server_certificate(ca_key_loaded, ca_cert)
    chain = cert.public_bytes(serialization.Encoding.PEM) + ca_cert.public_bytes(
        serialization.Encoding.PEM
    )
    write_private(server_file, _pem_key(key) + chain)


def _new_ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sagaline local CA")])
    usage = x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=_CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    return ca_key, cert


def _new_server_certificate(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))]
    usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sagaline-kafka")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=_SERVER_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert

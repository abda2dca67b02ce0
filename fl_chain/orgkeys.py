"""What each party of a deployment generates for itself, and the public card it hands out.

An organization (a hospital, or the aggregator's operator) makes, in its own directory:

- `account.json`: a v3 keystore of its Ethereum account (signs commitments, attestations);
- `x25519.json`: its X25519 key file (opens updates sealed for it: aggregator, validators);
- `node-auth.key` / `node-auth.pub`: the SuperNode's ECDSA P-384 key pair in OpenSSH
  format, which Flower's SuperLink authenticates SuperNodes with;
- `card.json`: the public parts only (address, X25519 public key, node auth public key),
  which go to the consortium admin (`flchain members add --card`, `flwr supernode register`).

The SuperLink's operator makes a private CA and a server certificate for the SuperLink's
host names (`superlink_tls`); only `ca.crt` is handed to the organizations.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from eth_account import Account

from fl_chain.chain.accounts import write_keystore
from fl_chain.errors import UsageError
from fl_chain.identity import Identity
from fl_chain.jsonfiles import read_json
from fl_chain.keyfile import write_key_file

CARD_FORMAT = "fl-chain-member-card/1"
CERTIFICATE_DAYS = 365


@dataclass(frozen=True)
class OrgFiles:
    """Where an organization's key material lives in its directory."""

    directory: Path

    @property
    def keystore(self) -> Path:
        return self.directory / "account.json"

    @property
    def x25519_key(self) -> Path:
        return self.directory / "x25519.json"

    @property
    def node_auth_private(self) -> Path:
        return self.directory / "node-auth.key"

    @property
    def node_auth_public(self) -> Path:
        return self.directory / "node-auth.pub"

    @property
    def card(self) -> Path:
        return self.directory / "card.json"


@dataclass(frozen=True)
class MemberCard:
    """The public half of an organization: all the admin needs to admit it."""

    name: str
    address: str
    x25519: str  # hex
    node_auth_public_key: str  # OpenSSH line

    def to_json(self) -> dict[str, str]:
        return {"format": CARD_FORMAT, "name": self.name, "address": self.address, "x25519": self.x25519,
                "node_auth_public_key": self.node_auth_public_key}

    @classmethod
    def read(cls, path: Path) -> MemberCard:
        document = read_json(path, "member card")
        if not isinstance(document, dict):
            raise UsageError(f"member card {path} is not a JSON object")
        try:
            return cls(str(document["name"]), str(document["address"]), str(document["x25519"]),
                       str(document["node_auth_public_key"]))
        except KeyError as missing:
            raise UsageError(f"member card {path} lacks {missing}") from None


def generate_org(name: str, directory: Path, password: str) -> MemberCard:
    """Creates an organization's keys in `directory` (refusing to overwrite any) and its card."""
    files = OrgFiles(Path(directory))
    existing = [path for path in (files.keystore, files.x25519_key, files.node_auth_private, files.card)
                if path.exists()]
    if existing:
        raise UsageError(f"{existing[0]} exists: an organization's keys are generated once; choose another --out")
    if not password:
        raise UsageError("the keystore password is empty: set it in the environment variable or file")
    _make_directory(files.directory)
    identity = Identity.generate()
    write_keystore(Account.from_key(identity.account.key), files.keystore, password)
    write_key_file(files.x25519_key, identity, name)
    auth_key = ec.generate_private_key(ec.SECP384R1())
    _write_private(files.node_auth_private, auth_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()))
    public_line = auth_key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                     serialization.PublicFormat.OpenSSH)
    files.node_auth_public.write_bytes(public_line + b"\n")
    card = MemberCard(name, identity.address, identity.x25519_public.hex(), public_line.decode())
    write_public_json(files.card, card.to_json())
    return card


@dataclass(frozen=True)
class TlsFiles:
    """The SuperLink's TLS material: the CA (its certificate goes to every SuperNode) and
    the server certificate and key the SuperLink serves with."""

    directory: Path

    @property
    def ca_certificate(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def server_certificate(self) -> Path:
        return self.directory / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.directory / "server.key"


def superlink_tls(directory: Path, hosts: list[str]) -> TlsFiles:
    """A private CA and a server certificate for `hosts` (names or IP addresses)."""
    files = TlsFiles(Path(directory))
    if files.ca_key.exists() or files.server_key.exists():
        raise UsageError(f"{files.directory} already holds TLS keys; choose another --out")
    if not hosts:
        raise UsageError("name at least one host the SuperLink is reached at (--host)")
    _make_directory(files.directory)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fl-chain SuperLink CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now)
          .not_valid_after(now + datetime.timedelta(days=CERTIFICATE_DAYS))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    server_key = ec.generate_private_key(ec.SECP384R1())
    server = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
              .issuer_name(ca_name).public_key(server_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=CERTIFICATE_DAYS))
              .add_extension(x509.SubjectAlternativeName([_san(host) for host in hosts]), critical=False)
              .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
              .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
              .sign(ca_key, hashes.SHA256()))
    files.ca_certificate.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.server_certificate.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    for path, key in ((files.ca_key, ca_key), (files.server_key, server_key)):
        _write_private(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return files


def write_public_json(path: Path, document: object) -> None:
    path.write_text(json.dumps(document, indent=1) + "\n")


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _make_directory(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create the key directory {directory}: {error.strerror}") from None


def _write_private(path: Path, data: bytes) -> None:
    """A secret file, readable only by its owner from the moment it exists."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)

"""Key files for X25519 keys: how an aggregator or validator hands its opening key to an auditor.

A key file opens every sealed update of a federation for which its owner was a recipient,
so it is written readable only by its owner and never belongs in a published run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from fl_chain.errors import UsageError
from fl_chain.identity import Identity
from fl_chain.jsonfiles import read_json, write_private_json

KEY_FILE_FORMAT = "fl-chain-x25519-key/1"


@dataclass(frozen=True)
class OpeningKey:
    """Whose key it is (an Ethereum address) and the X25519 private key itself."""

    owner: str
    role: str
    private_key: X25519PrivateKey

    @property
    def public_key(self) -> bytes:
        return self.private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def write_key_file(path: Path, identity: Identity, role: str) -> None:
    raw = identity.x25519_private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    document = {"format": KEY_FILE_FORMAT, "owner": identity.address, "role": role, "x25519_private": raw.hex()}
    write_private_json(path, document)


def read_key_file(path: Path) -> OpeningKey:
    document = read_json(path, "key file")
    if not isinstance(document, dict) or document.get("format") != KEY_FILE_FORMAT:
        raise UsageError(f"{path} is not an fl-chain key file (format {KEY_FILE_FORMAT})")
    try:
        private_key = X25519PrivateKey.from_private_bytes(bytes.fromhex(document["x25519_private"]))
        return OpeningKey(str(document["owner"]), str(document["role"]), private_key)
    except (KeyError, ValueError) as error:
        raise UsageError(f"key file {path} is malformed: {error}") from None

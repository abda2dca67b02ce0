"""A participant's keys: an Ethereum account that signs commitments and an X25519 key
that receives sealed updates.

Simulated participants derive both keys from the run seed and their label, so a run can
be replayed with the same addresses and nobody hard-codes a key.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_keys.constants import SECPK1_N

from fl_chain.errors import UsageError

_SALT = b"fl-chain/identity/v1"
_ETHEREUM = b"ethereum"
_X25519 = b"x25519"

Seed = int | bytes | str


@dataclass(frozen=True, eq=False, repr=False)
class Identity:
    """An Ethereum account and an X25519 private key held by one participant."""

    account: LocalAccount
    x25519_private: X25519PrivateKey

    @property
    def address(self) -> str:
        """The checksummed Ethereum address."""
        return self.account.address

    @property
    def x25519_public(self) -> bytes:
        """The 32 raw bytes of the X25519 public key, as registered on chain."""
        return self.x25519_private.public_key().public_bytes_raw()

    @classmethod
    def derive(cls, seed: Seed, label: str) -> Identity:
        """The identity named `label` under `seed`: the same pair always gives the same keys.

        Both keys come from HKDF-SHA256 over the seed with distinct info strings, so
        learning one key reveals nothing about the other or about other labels.
        """
        material = _seed_material(seed)
        label_bytes = label.encode("utf-8")
        counter = 0
        while True:
            scalar = _expand(material, _ETHEREUM + counter.to_bytes(4, "big") + label_bytes)
            # A scalar outside [1, n) has probability ~2^-128; the next counter fixes it.
            if 0 < int.from_bytes(scalar, "big") < SECPK1_N:
                break
            counter += 1
        x25519 = X25519PrivateKey.from_private_bytes(_expand(material, _X25519 + label_bytes))
        return cls(Account.from_key(scalar), x25519)

    @classmethod
    def generate(cls) -> Identity:
        """A fresh identity from the operating system's randomness."""
        return cls(Account.create(), X25519PrivateKey.generate())

    def __repr__(self) -> str:
        # Never show private keys, even in a traceback.
        return f"Identity(address={self.address}, x25519_public={self.x25519_public.hex()})"


def _seed_material(seed: Seed) -> bytes:
    """Seed bytes tagged with their type, so 1, b"1" and "1" are three distinct seeds."""
    if isinstance(seed, bool):
        raise UsageError(f"an identity seed must be an int, bytes or str, not {seed!r}")
    if isinstance(seed, int):
        return b"int:" + str(seed).encode("ascii")
    if isinstance(seed, bytes):
        return b"bytes:" + seed
    if isinstance(seed, str):
        return b"str:" + seed.encode("utf-8")
    raise UsageError(f"an identity seed must be an int, bytes or str, not {type(seed).__name__}")


def _expand(material: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=info).derive(material)

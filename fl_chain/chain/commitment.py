"""A participant's signed commitment (EIP-712), as the Federation contract checks it.

The typed-data domain binds the chain id and the contract address, and the message binds
the round and its attempt, so a signature cannot be replayed on another round, another
federation or another chain. Signatures travel in EIP-2098 compact form (r, vs).
"""

from __future__ import annotations

from dataclasses import dataclass

from eth_abi import encode
from eth_account.signers.local import LocalAccount
from eth_keys import keys
from eth_utils import keccak, to_checksum_address

from fl_chain.storage.cid import Cid

DOMAIN_NAME = "fl-chain Federation"
DOMAIN_VERSION = "2"
_DOMAIN_TYPEHASH = keccak(
    text="EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
_COMMITMENT_TYPEHASH = keccak(
    text="Commitment(uint64 round,uint32 attempt,bytes32 digest,uint32 codec,uint64 examples)"
)


@dataclass(frozen=True)
class Commitment:
    """What a participant vouches for: its update's CID in one attempt of one round."""

    participant: str
    round: int
    attempt: int
    cid: Cid
    examples: int


@dataclass(frozen=True)
class SignedCommitment:
    commitment: Commitment
    r: bytes
    vs: bytes

    def as_abi(self) -> tuple:
        """The contract's SignedCommitment struct (round and attempt are the batch's)."""
        c = self.commitment
        return (c.participant, c.cid.digest, c.cid.codec, c.examples, self.r, self.vs)


def domain_separator(chain_id: int, contract: str) -> bytes:
    return keccak(
        encode(
            ["bytes32", "bytes32", "bytes32", "uint256", "address"],
            [_DOMAIN_TYPEHASH, keccak(text=DOMAIN_NAME), keccak(text=DOMAIN_VERSION), chain_id, contract],
        )
    )


def commitment_hash(commitment: Commitment, chain_id: int, contract: str) -> bytes:
    """The EIP-712 digest the participant signs and the contract recovers from."""
    struct_hash = keccak(
        encode(
            ["bytes32", "uint64", "uint32", "bytes32", "uint32", "uint64"],
            [
                _COMMITMENT_TYPEHASH,
                commitment.round,
                commitment.attempt,
                commitment.cid.digest,
                commitment.cid.codec,
                commitment.examples,
            ],
        )
    )
    return keccak(b"\x19\x01" + domain_separator(chain_id, contract) + struct_hash)


def sign_commitment(account: LocalAccount, commitment: Commitment, chain_id: int, contract: str) -> SignedCommitment:
    if to_checksum_address(account.address) != to_checksum_address(commitment.participant):
        raise ValueError(f"{account.address} cannot sign a commitment of {commitment.participant}")
    signed = account.unsafe_sign_hash(commitment_hash(commitment, chain_id, contract))
    vs = signed.s | ((signed.v - 27) << 255)
    return SignedCommitment(commitment, signed.r.to_bytes(32, "big"), vs.to_bytes(32, "big"))


def recover_signer(signed: SignedCommitment, chain_id: int, contract: str) -> str:
    """The address that produced the signature (what the contract compares to the participant)."""
    vs = int.from_bytes(signed.vs, "big")
    s = vs & ((1 << 255) - 1)
    signature = keys.Signature(vrs=(vs >> 255, int.from_bytes(signed.r, "big"), s))
    public_key = signature.recover_public_key_from_msg_hash(commitment_hash(signed.commitment, chain_id, contract))
    return public_key.to_checksum_address()

"""The attestation committee of a finalized attempt, drawn exactly as the contract draws it.

The contract freezes, when an attempt opens, the validators it may draw from (active,
admitted in an earlier block, not the aggregator); at finalize it ranks them by
keccak256(abi.encode(seed, address)) with
seed = keccak256(abi.encode(chainid, federation, round, attempt, commitmentLog)), and
takes the `committee_size` smallest; with size 0 every eligible validator attests. The
seed depends on nothing but the chain's own record, so a verifier re-draws the committee
from the event log alone and checks that only its members counted.
"""

from __future__ import annotations

from collections.abc import Sequence

from eth_abi import encode
from eth_utils import keccak, to_checksum_address


def committee_seed(chain_id: int, federation: str, round_number: int, attempt: int, commitment_log: bytes) -> bytes:
    return keccak(encode(["uint256", "address", "uint64", "uint32", "bytes32"],
                         [chain_id, to_checksum_address(federation), round_number, attempt, commitment_log]))


def draw_committee(seed: bytes, eligible: Sequence[str], size: int) -> list[str]:
    """The committee among `eligible` validators (in the contract's validator-list order),
    ordered by rank; everyone eligible when `size` is 0."""
    if size == 0:
        return [to_checksum_address(address) for address in eligible]
    ranked = sorted(eligible, key=lambda address: keccak(encode(["bytes32", "address"],
                                                                [seed, to_checksum_address(address)])))
    return [to_checksum_address(address) for address in ranked[:size]]

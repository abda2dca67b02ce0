"""The compiled contracts shipped with the package, so users need no Solidity compiler."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any


@dataclass(frozen=True)
class ContractArtifact:
    name: str
    abi: list[dict[str, Any]]
    bytecode: str
    deployed_bytecode: bytes
    immutable_ranges: tuple[tuple[int, int], ...]
    compiler_version: str
    source_sha256: str
    sha256: str

    @classmethod
    def load(cls, name: str) -> ContractArtifact:
        text = resources.files("fl_chain.contracts").joinpath(f"{name}.json").read_text()
        data = json.loads(text)
        ranges = tuple(
            (ref["start"], ref["length"]) for refs in data["immutableReferences"].values() for ref in refs
        )
        return cls(
            name=data["contractName"],
            abi=data["abi"],
            bytecode=data["bytecode"],
            deployed_bytecode=bytes.fromhex(data["deployedBytecode"].removeprefix("0x")),
            immutable_ranges=ranges,
            compiler_version=data["compiler"]["version"],
            source_sha256=data["sourceSha256"],
            sha256=hashlib.sha256(text.encode()).hexdigest(),
        )


def deployed_code_matches(artifact: ContractArtifact, code: bytes) -> bool:
    """Compares on-chain code with the artifact, ignoring the constructor-set immutables."""
    if len(code) != len(artifact.deployed_bytecode):
        return False
    masked = bytearray(code)
    for start, length in artifact.immutable_ranges:
        masked[start : start + length] = artifact.deployed_bytecode[start : start + length]
    return bytes(masked) == artifact.deployed_bytecode


FEDERATION = ContractArtifact.load("Federation")
NAIVE_REGISTRY = ContractArtifact.load("NaiveRegistry")

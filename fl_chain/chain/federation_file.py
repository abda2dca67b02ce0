"""The federation file: what members and aggregators load to find and trust a federation.

An operator deploys once and hands out this small JSON file (address, chain id, the
parameters fixed at deployment, the genesis model, the shipped artifact's hash). Whoever
loads it checks the chain against it before sending anything, so a wrong node, a wrong
address or a federation deployed with other parameters is caught as bad input.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_utils import is_address, to_checksum_address

from fl_chain.chain.artifacts import FEDERATION
from fl_chain.chain.chain import Chain
from fl_chain.chain.errors import FederationMismatch, WrongChain
from fl_chain.chain.federation import FederationParameters
from fl_chain.chain.ledger import Ledger
from fl_chain.errors import InvalidCid, UsageError
from fl_chain.jsonfiles import read_json
from fl_chain.storage.cid import Cid

GENESIS_MODEL_FILE = "genesis.safetensors"  # next to a federation file: the round-0 model members load
FORMAT = "fl-chain-federation/1"


@dataclass(frozen=True)
class FederationFile:
    """A deployed federation; `admin` and `deployed_block` are absent from files that
    `flchain run` wrote before it used this format."""

    address: str
    chain_id: int
    artifact_sha256: str
    parameters: FederationParameters
    genesis_model: Cid
    admin: str | None = None
    deployed_block: int | None = None

    def to_json(self) -> dict[str, Any]:
        parameters = self.parameters.to_json()
        return {
            "format": FORMAT,
            "address": self.address,
            "chain_id": self.chain_id,
            "artifact_sha256": self.artifact_sha256,
            "parameters": parameters,
            "genesis_model": str(self.genesis_model),
            "admin": self.admin,
            "deployed_block": self.deployed_block,
        }

    def write(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n")

    @classmethod
    def read(cls, path: Path) -> FederationFile:
        document = read_json(path, "federation file")
        try:
            return cls._parse(document)
        except (KeyError, TypeError, ValueError, InvalidCid) as problem:
            detail = f"lacks {problem}" if isinstance(problem, KeyError) else str(problem)
            raise UsageError(f"federation file {path} is malformed: {detail}") from None

    @classmethod
    def _parse(cls, document: Any) -> FederationFile:
        if not isinstance(document, dict):
            raise TypeError("it is not a JSON object")
        if document.get("format", FORMAT) != FORMAT:
            raise ValueError(f"format {document['format']!r} is not {FORMAT!r}")
        raw = document["parameters"]
        parameters = FederationParameters(
            task_hash=_hex_bytes(raw["task_hash"], 32, "parameters.task_hash"),
            aggregation_rule=_integer(raw["aggregation_rule"], "parameters.aggregation_rule"),
            quorum=_integer(raw["quorum"], "parameters.quorum"),
            round_duration=_integer(raw["round_duration"], "parameters.round_duration"),
            attestation_threshold=_integer(raw["attestation_threshold"], "parameters.attestation_threshold"),
            committee_size=_integer(raw["committee_size"], "parameters.committee_size"),
            max_examples=_integer(raw["max_examples"], "parameters.max_examples"),
            update_norm_bound=_number(raw["update_norm_bound"], "parameters.update_norm_bound"),
            commit_grace=_integer(raw["commit_grace"], "parameters.commit_grace"),
            rule_parameters=_hex_bytes(raw["rule_parameters"], 32, "parameters.rule_parameters"),
        )
        admin, block = document.get("admin"), document.get("deployed_block")
        return cls(
            address=_address(document["address"], "address"),
            chain_id=_integer(document["chain_id"], "chain_id"),
            artifact_sha256=str(document["artifact_sha256"]),
            parameters=parameters,
            genesis_model=Cid.parse(document["genesis_model"]),
            admin=None if admin is None else _address(admin, "admin"),
            deployed_block=None if block is None else _integer(block, "deployed_block"),
        )

    def attach(self, chain: Chain) -> Ledger:
        """The federation on `chain`, after checking it is the one this file describes:
        same chain, the shipped Federation code at the address, same parameters and genesis."""
        if chain.chain_id != self.chain_id:
            raise WrongChain(f"the federation file is for chain {self.chain_id}, but the node serves chain {chain.chain_id}")
        ledger = Ledger.attach(chain, self.address)
        on_chain = ledger.parameters()
        for field in dataclasses.fields(FederationParameters):
            expected, found = getattr(self.parameters, field.name), getattr(on_chain, field.name)
            if expected != found:
                shown = (lambda value: "0x" + value.hex()) if isinstance(expected, bytes) else str
                raise FederationMismatch(
                    f"the federation at {self.address} has {field.name} {shown(found)} on chain, "
                    f"the federation file says {shown(expected)}"
                )
        genesis = ledger.round(0).global_model
        if genesis != self.genesis_model:
            raise FederationMismatch(
                f"the federation at {self.address} started from genesis model {genesis}, "
                f"the federation file says {self.genesis_model}"
            )
        return ledger


def describe(ledger: Ledger, genesis_model: Cid, deployed_block: int | None) -> FederationFile:
    """The federation file of a federation just deployed on `ledger`'s chain."""
    return FederationFile(
        address=ledger.address,
        chain_id=ledger.chain.chain_id,
        artifact_sha256=FEDERATION.sha256,
        parameters=ledger.parameters(),
        genesis_model=genesis_model,
        admin=ledger.admin(),
        deployed_block=deployed_block,
    )


def _integer(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{key} must be a non-negative integer, got {value!r}")
    return value


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{key} must be a finite number, got {value!r}")
    return float(value)


def _address(value: Any, key: str) -> str:
    if not isinstance(value, str) or not is_address(value):
        raise ValueError(f"{key} is not an Ethereum address: {value!r}")
    return to_checksum_address(value)


def _hex_bytes(value: Any, size: int, key: str) -> bytes:
    try:
        raw = bytes.fromhex(str(value).removeprefix("0x"))
    except ValueError:
        raw = b""
    if len(raw) != size:
        raise ValueError(f"{key} must be {size} bytes in hex, got {value!r}")
    return raw


SEED_ACCOUNTS = "derived from the seed (a development chain the run started itself)"
FRESH_ACCOUNTS = "generated for the run (keys/consortium.json)"


def write_federation_file(path: Path, ledger: Ledger, genesis: Cid, seed_accounts: bool | None = None) -> None:
    """The federation file members load (fl_chain.chain.federation_file), plus the members
    and, for a simulated consortium, where its accounts come from."""
    members = [{"address": m.address, "index": m.index, "roles": m.roles.name, "example_cap": m.example_cap}
               for m in ledger.members()]
    document = {**describe(ledger, genesis, None).to_json(), "members": members}
    if seed_accounts is not None:
        document["accounts"] = SEED_ACCOUNTS if seed_accounts else FRESH_ACCOUNTS
    path.write_text(json.dumps(document, indent=1) + "\n")

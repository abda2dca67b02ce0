"""Shared fixtures: the pinned Node tools, chains on every backend, a test consortium.

Tests that need Node.js or anvil skip on a machine without them, except where
FLCHAIN_REQUIRE_TOOLS=1 (set by CI): there a missing tool fails the test instead of
silently skipping it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fl_chain.chain import rpc
from fl_chain.chain.anvil import AnvilNode, find_anvil
from fl_chain.chain.bridge import RpcBridge
from fl_chain.chain.chain import Chain
from fl_chain.chain.embedded import EmbeddedChain
from fl_chain.chain.federation import FederationParameters, Role
from fl_chain.chain.ledger import Ledger
from fl_chain.errors import UsageError
from fl_chain.identity import Identity
from fl_chain.storage.cid import Cid

REPO_ROOT = Path(__file__).resolve().parent.parent
SMALL_RUN = ["rounds=2", "num_participants=3", "quorum=2", "num_validators=2", "attestation_threshold=2"]
NODE_MODULES = REPO_ROOT / "node_modules"


def require_tool(description: str) -> None:
    """Skip (or, under FLCHAIN_REQUIRE_TOOLS=1, fail) because a tool is missing."""
    message = f"{description} is not installed: run scripts/setup.sh"
    if os.environ.get("FLCHAIN_REQUIRE_TOOLS") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def node_modules() -> Path:
    """The repository's node_modules with the pinned npm tools, and a node to run them."""
    if shutil.which("node") is None:
        require_tool("Node.js")
    if not (NODE_MODULES / "ipfs-unixfs-importer").is_dir():
        require_tool("the npm tools (node_modules)")
    return NODE_MODULES


# ---------------------------------------------------------------- chains



@dataclass(frozen=True)
class Consortium:
    """The cast of a test federation, with keys derived from a fixed test seed."""

    admin: Identity
    aggregator: Identity
    validators: tuple[Identity, ...]
    participants: tuple[Identity, ...]
    outsider: Identity

    @classmethod
    def make(cls, participants: int = 5, validators: int = 3) -> Consortium:
        derive = lambda label: Identity.derive(b"fl-chain tests", label)  # noqa: E731
        return cls(
            admin=derive("admin"),
            aggregator=derive("aggregator"),
            validators=tuple(derive(f"validator-{i}") for i in range(validators)),
            participants=tuple(derive(f"participant-{i}") for i in range(participants)),
            outsider=derive("outsider"),
        )

    @property
    def everyone(self) -> list[Identity]:
        return [self.admin, self.aggregator, *self.validators, *self.participants, self.outsider]


def genesis_cid(label: str = "genesis") -> Cid:
    return Cid(0x55, hashlib.sha256(label.encode()).digest())


@pytest.fixture(scope="session")
def consortium() -> Consortium:
    return Consortium.make()


@pytest.fixture(scope="session")
def anvil_binary() -> Path:
    """The anvil executable (for code under test that starts its own node)."""
    try:
        return find_anvil()
    except UsageError:
        require_tool("anvil")
        raise


@pytest.fixture(scope="session")
def anvil_node(anvil_binary: Path) -> Iterator[AnvilNode]:
    with AnvilNode() as node:
        yield node


@pytest.fixture(params=["embedded", "embedded-rpc", pytest.param("anvil", marks=pytest.mark.anvil)])
def chain(request: pytest.FixtureRequest, tmp_path: Path, consortium: Consortium) -> Iterator[Chain]:
    """A fresh chain on each backend, where every cast member has a balance: the embedded
    EVM in process, the same served over JSON-RPC (as participants reach it), and anvil."""
    addresses = [identity.address for identity in consortium.everyone]
    if request.param == "embedded":
        embedded = EmbeddedChain.create(tmp_path / "ledger", funded=addresses)
        connected = embedded.connect()
    elif request.param == "embedded-rpc":
        embedded = EmbeddedChain.create(tmp_path / "ledger", funded=addresses)
        bridge = RpcBridge(embedded.web3, increase_time=embedded.increase_time)
        connected = rpc.connect(bridge.start(), on_close=bridge.stop)
    else:
        node = request.getfixturevalue("anvil_node")
        connected = rpc.connect(node.url, expected_chain_id=node.chain_id)
        rpc.fund(connected, addresses)
    yield connected
    connected.close()


def deploy_federation(
    chain: Chain, consortium: Consortium, *, quorum: int = 3, threshold: int = 2, round_duration: int = 600,
    committee_size: int = 0, max_examples: int = 1_000_000, commit_grace: int = 0,
) -> Ledger:
    """A federation with the whole consortium registered and the aggregator appointed."""
    parameters = FederationParameters(
        task_hash=hashlib.sha256(b"test task").digest(),
        aggregation_rule=0,
        quorum=quorum,
        round_duration=round_duration,
        attestation_threshold=threshold,
        committee_size=committee_size,
        max_examples=max_examples,
        commit_grace=commit_grace,
    )
    ledger = Ledger.deploy(chain, consortium.admin.account, parameters, genesis_cid())
    members = [(consortium.aggregator.address, consortium.aggregator.x25519_public, Role.AGGREGATOR)]
    members += [(v.address, v.x25519_public, Role.VALIDATOR) for v in consortium.validators]
    members += [(p.address, p.x25519_public, Role.PARTICIPANT) for p in consortium.participants]
    ledger.add_members(consortium.admin.account, members)
    ledger.set_aggregator(consortium.admin.account, consortium.aggregator.address)
    return ledger


# ---------------------------------------------------------------- Flower messages


@pytest.fixture
def inside_a_flower_run() -> Iterator[None]:
    """Flower builds messages only inside a run: for tests of the code around its Grid."""
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


# ---------------------------------------------------------------- runs


def flchain(*args: str) -> subprocess.CompletedProcess[str]:
    """The `flchain` command in a fresh process, as a user runs it."""
    environment = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0"}
    return subprocess.run([sys.executable, "-m", "fl_chain.cli", *args], capture_output=True, text=True,
                          timeout=900, env=environment)


def summary_of(run_dir: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((run_dir / "summary.json").read_text())


def assert_verifies(run_dir: Path) -> None:
    completed = flchain("verify", str(run_dir))
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-2000:]


@pytest.fixture(scope="session")
def small_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two small runs (seeds 0 and 1, in subdirectories 0 and 1) made as a Hydra multirun
    sweep, the way a user would; shared by the end-to-end and the verification tests."""
    directory = tmp_path_factory.mktemp("sweep")
    completed = flchain("run", "-m", "seed=0,1", *SMALL_RUN, f"hydra.sweep.dir={directory}")
    assert completed.returncode == 0, completed.stderr[-3000:]
    return directory

"""Who this ClientApp is, where its data is and which store it keeps: simulated or deployed.

In a simulation every participant's identity is derived from the run seed and its data is
its share of a split, chosen by the SuperNode's `partition-id`; all share one store.

In a deployment each organization's SuperNode says it all in its own node config
(`flower-supernode --node-config`), never in the run config the aggregator sends:

    keystore="/site/keys/account.json"  password-file="/site/keys/password"
    x25519-key="/site/keys/x25519.json" federation-file="/site/federation.json"
    chain-url="http://node:8545"        data-file="/site/data/cohort.csv"
    target="diagnosis"                  store-dir="/site/store"

The run settings still say what is trained and how (task, seed, local epochs); the
federation they name must be the one in the organization's own federation file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

from eth_utils import to_checksum_address

from clients.data.dataset import ParticipantData
from clients.data.preprocessing import SharedPreprocessing, TableSummary
from clients.data.tables import load_own_table, summarize_table
from clients.drills import ParticipantDrill, parse_drills
from clients.settings import RunSettings, load_dataset
from fl_chain.chain import rpc
from fl_chain.chain.accounts import KeystoreError, unlock_keystore
from fl_chain.chain.federation_file import FederationFile
from fl_chain.chain.ledger import Ledger
from fl_chain.consortium import SimulatedConsortium
from fl_chain.errors import UsageError
from fl_chain.identity import Identity
from fl_chain.jsonfiles import read_json
from fl_chain.keyfile import read_key_file
from fl_chain.protocol import Federation, ProtocolError
from fl_chain.storage.backends import open_store
from fl_chain.storage.blockstore import LocalStore

DEPLOYMENT_KEYS = ("keystore", "password-file", "x25519-key", "federation-file", "chain-url", "data-file", "store-dir")
DEFAULT_TARGET = "target"


@dataclass(frozen=True)
class LocalData:
    """This participant's examples and the model shape they call for."""

    data: ParticipantData
    input_shape: tuple[int, ...]
    num_classes: int


@dataclass(frozen=True)
class Node:
    """This node's participant: its keys, its data, and its view of the federation.

    `ships_blobs` is set in a deployment, where the store is this organization's own:
    blobs others need travel in Flower messages (clients/blobs.py)."""

    index: int
    address: str
    unlock: Callable[[], Identity]
    federation: Federation
    settings: RunSettings
    drills: tuple[ParticipantDrill, ...]
    load_data: Callable[[], LocalData]
    ships_blobs: bool = False
    summarize: Callable[[], TableSummary] | None = None  # deployments: what this site shares of its table

    @cached_property
    def identity(self) -> Identity:
        """The keys, unlocked when a message needs to sign or open something: a deployed
        ClientApp runs in a fresh process per message, and a keystore takes ~0.6 s to open."""
        return self.unlock()


def is_deployed(node_config: Mapping[str, object]) -> bool:
    """A SuperNode with a keystore in its node config speaks for a real organization."""
    return "keystore" in node_config


def resolve_node(settings_json: str, node_config: Mapping[str, object]) -> Node:
    if is_deployed(node_config):
        keys = tuple(sorted((key, str(value)) for key, value in node_config.items()))
        return _deployed_node(settings_json, keys)
    if "partition-id" not in node_config:
        raise UsageError("the SuperNode's node config has neither partition-id (simulation) nor keystore "
                         f"(deployment: {', '.join(DEPLOYMENT_KEYS)})")
    return _simulated_node(settings_json, int(str(node_config["partition-id"])))


@lru_cache(maxsize=8)
def _simulated_node(settings_json: str, index: int) -> Node:
    settings = RunSettings.from_json(settings_json)
    consortium = SimulatedConsortium.derive(settings.seed, settings.num_participants, settings.num_validators)
    chain = rpc.connect(settings.chain_url)
    federation = Federation(Ledger.attach(chain, settings.contract), open_store(settings.store, None))
    drills = tuple(parse_drills(settings.drills, settings.num_participants))

    def load_data() -> LocalData:
        dataset = load_dataset(settings)
        return LocalData(dataset.participants[index], dataset.input_shape, dataset.num_classes)

    participant = consortium.participants[index]
    return Node(index, participant.address, lambda: participant, federation, settings, drills, load_data)


@lru_cache(maxsize=8)
def _deployed_node(settings_json: str, keys: tuple[tuple[str, str], ...]) -> Node:
    settings = RunSettings.from_json(settings_json)
    config = dict(keys)
    missing = [key for key in DEPLOYMENT_KEYS if not config.get(key)]
    if missing:
        raise UsageError(f"the SuperNode's node config lacks {', '.join(missing)}")
    federation_file = FederationFile.read(Path(config["federation-file"]))
    if settings.contract.lower() != federation_file.address.lower():
        raise UsageError(f"the aggregator asks to work for federation {settings.contract}, but this organization's "
                         f"federation file names {federation_file.address}")
    chain = rpc.connect(config["chain-url"], expected_chain_id=federation_file.chain_id)
    ledger = federation_file.attach(chain)
    keystore, password_file, x25519_key = Path(config["keystore"]), Path(config["password-file"]), Path(config["x25519-key"])

    def unlock() -> Identity:
        account = unlock_keystore(keystore, password_file=password_file)
        return Identity(account, read_key_file(x25519_key).private_key)

    address = _keystore_address(keystore) or unlock().address
    index = ledger.member(address).index
    data_file, target = Path(config["data-file"]), config.get("target", DEFAULT_TARGET)
    if not data_file.is_file():
        raise UsageError(f"the data file {data_file} named by data-file does not exist")

    test_fraction = float(settings.task.get("test_fraction", 0.2))

    def summarize() -> TableSummary:
        return summarize_table(data_file, target=target, seed=settings.seed, index=index, test_fraction=test_fraction)

    def load_data() -> LocalData:
        if settings.preprocessing is None:
            raise ProtocolError("the aggregator sent no shared preprocessing (features, classes, scaling): "
                                "it must greet the participants first")
        shared = json.dumps(settings.preprocessing, sort_keys=True)
        return _table(str(data_file), target, settings.seed, index, test_fraction, shared)

    store = LocalStore(Path(config["store-dir"]))
    return Node(index, address, unlock, Federation(ledger, store), settings, (), load_data, ships_blobs=True,
                summarize=summarize)


def _keystore_address(path: Path) -> str | None:
    """The account a v3 keystore names, without decrypting it (None if it names none: then
    the keystore is unlocked; a wrong name is caught when the unlocked key signs)."""
    document = read_json(path, "keystore file", KeystoreError)
    named = document.get("address") if isinstance(document, dict) else None
    return to_checksum_address("0x" + named.removeprefix("0x")) if isinstance(named, str) and named else None


@lru_cache(maxsize=4)
def _table(path: str, target: str, seed: int, index: int, test_fraction: float, shared_json: str) -> LocalData:
    """The organization's own table, split into train and test, its labels encoded and its
    features standardized as every site agreed (federated statistics, no rows pooled)."""
    shared = SharedPreprocessing.from_dict(json.loads(shared_json))
    data = load_own_table(path, target=target, seed=seed, index=index, test_fraction=test_fraction, shared=shared)
    return LocalData(data, (len(shared.feature_names),), len(shared.classes))

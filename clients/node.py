"""Who this ClientApp is, where its data is and which store it keeps: simulated or deployed.

In a simulation every participant's keys are the run's own (RUN_DIR/keys, named by the
run settings) and its data is its share of a split, chosen by the SuperNode's
`partition-id`; all share one store.

In a deployment each organization's SuperNode says it all in its own node config
(`flower-supernode --node-config`), never in the run config the aggregator sends:

    keystore="/site/keys/account.json"  password-file="/site/keys/password"
    x25519-key="/site/keys/x25519.json" federation-file="/site/federation.json"
    chain-url="http://node:8545"        data-file="/site/data/cohort.csv"
    target="diagnosis"                  store-dir="/site/store"
    data-dir="/site/images"             (instead of data-file, for an images task)
    task-code="my_pkg.Net"              (only if the federation's task names code to import)

Either way the run settings say what is trained and how, and a node trains with them only
after checking their hash against the federation's task hash on chain.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

from eth_utils import to_checksum_address

from fl_chain.chain import rpc
from fl_chain.chain.accounts import KeystoreError, unlock_keystore
from fl_chain.chain.commitment import SignedCommitment
from fl_chain.chain.federation import Role, parameter_differences, parameters_for
from fl_chain.chain.federation_file import FederationFile
from fl_chain.chain.ledger import Ledger
from fl_chain.chain.opening import attach_federation
from fl_chain.consortium import SimulatedConsortium
from fl_chain.data.preprocessing import SharedPreprocessing, SignedSummary, TableSummary
from fl_chain.data.tables import load_own_table, summarize_table
from fl_chain.drills import LocalTraining, drilled, parse_drills
from fl_chain.errors import UsageError
from fl_chain.identity import Identity
from fl_chain.jsonfiles import read_json
from fl_chain.keyfile import read_key_file
from fl_chain.messages import MalformedMessage, Receipt, Ticket
from fl_chain.participant import EvaluateFn, ParticipantRole, Tensors, TrainFn, watch_in_thread
from fl_chain.privacy import mode_of
from fl_chain.protocol import Federation, ProtocolError
from fl_chain.seeding import derive_seed
from fl_chain.settings import RunSettings
from fl_chain.storage.backends import open_store
from fl_chain.storage.blockstore import LocalStore
from fl_chain.task import Task, Trained, evaluate_seeded, named_code, train_as
from fl_chain.tasks.catalog import ImageSource, open_task, run_shape, task_label
from fl_chain.tasks.objectives import Classification
from fl_chain.tasks.supervised import ArrayData, SupervisedTask

DEPLOYMENT_KEYS = ("keystore", "password-file", "x25519-key", "federation-file", "chain-url", "store-dir")
DEFAULT_TARGET = "target"


@dataclass(frozen=True)
class Node:
    """This node's participant: its keys, its view of the federation, its role in rounds."""

    index: int
    address: str
    unlock: Callable[[], Identity]
    federation: Federation
    settings: RunSettings
    load_data: Callable[[], object]  # this participant's data, as its task loads it
    summarize: Callable[[], TableSummary] | None = None  # deployments: what this site shares of its table
    watcher: Callable[[Callable[[], Identity]], Callable[[SignedCommitment], None]] | None = None
    answers: MutableMapping[tuple[int, int], dict[str, Any]] | None = None  # deployments: kept on disk
    data_of: Callable[[int], object] | None = None  # simulations: any participant's data (for the alie drill)

    @cached_property
    def identity(self) -> Identity:
        """The keys, unlocked when a message needs to sign or open something: a deployed
        ClientApp runs in a fresh process per message, and a keystore takes ~0.6 s to open."""
        return self.unlock()

    @cached_property
    def role(self) -> ParticipantRole:
        train_fn = _train_fn(self.settings, self.load_data, self.index)
        drills = [d for d in parse_drills(self.settings.experiment) if self.index in d.participants]
        if drills:
            training = LocalTraining(open_task(self.settings.experiment), self.settings.seed, self.index,
                                     self.settings.num_participants, self.load_data, self.data_of)
            train_fn = drilled(train_fn, drills, training)
        watch = self.watcher(lambda: self.identity) if self.watcher else None
        role = ParticipantRole(self.federation, lambda: self.identity, train_fn,
                               _evaluate_fn(self.settings, self.load_data, self.index), watch)
        if self.answers is not None:
            role.answered = self.answers
        return role


def is_deployed(node_config: Mapping[str, object]) -> bool:
    """A SuperNode with a keystore in its node config speaks for a real organization."""
    return "keystore" in node_config


def resolve_node(settings_json: str, node_config: Mapping[str, object]) -> Node:
    if is_deployed(node_config):
        keys = tuple(sorted((key, str(value)) for key, value in node_config.items()))
        return _deployed_node(settings_json, keys)
    if "partition-id" not in node_config:
        raise UsageError("the SuperNode's node config has neither partition-id (simulation) nor keystore "
                         f"(deployment: {', '.join(DEPLOYMENT_KEYS)}, and data-file or data-dir)")
    return _simulated_node(settings_json, int(str(node_config["partition-id"])))


def check_settings(ledger: Ledger, settings: RunSettings) -> None:
    """Refuses settings the federation was not deployed for: their hash must be the task
    hash, and every bound the contract enforces (quorum, caps, norm bound, committee,
    grace) the one they state. A participant trains with what the consortium deployed,
    whatever the aggregator sends."""
    try:
        expected = parameters_for(settings.experiment)
    except (KeyError, TypeError, ValueError) as error:
        raise UsageError(f"the run settings the aggregator sent are incomplete ({error!r}): refused") from None
    differences = parameter_differences(expected, ledger.parameters())
    if differences:
        raise UsageError(f"the aggregator asks to train with settings the federation {ledger.address} was not "
                         f"deployed for ({'; '.join(differences)}): refused before touching any data")


@lru_cache(maxsize=1024)  # one per participant a process plays: its answers live here
def _simulated_node(settings_json: str, index: int) -> Node:
    settings = RunSettings.from_json(settings_json)
    if not settings.keys_dir:
        raise UsageError("the run settings name no keys directory for the simulated participants")
    consortium = _consortium(settings.keys_dir)
    chain = rpc.connect(settings.chain_url)
    ledger = Ledger.attach(chain, settings.contract)
    check_settings(ledger, settings)
    federation = Federation(ledger, open_store(settings.store, None), mode_of(settings.experiment))

    def data_of(participant: int) -> object:
        return open_task(settings.experiment).participant_data(participant, run_shape(settings.experiment))

    participant = consortium.participants[index]
    watcher = (lambda identity: watch_in_thread(federation, identity))
    return Node(index, participant.address, lambda: participant, federation, settings, lambda: data_of(index),
                watcher=watcher, data_of=data_of)


@lru_cache(maxsize=2)
def _consortium(keys_dir: str) -> SimulatedConsortium:
    return SimulatedConsortium.load(Path(keys_dir))


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
    ledger = attach_federation(federation_file, config["chain-url"])
    check_settings(ledger, settings)
    keystore, password_file, x25519_key = Path(config["keystore"]), Path(config["password-file"]), Path(config["x25519-key"])

    def unlock() -> Identity:
        account = unlock_keystore(keystore, password_file=password_file)
        return Identity(account, read_key_file(x25519_key).private_key)

    address = _keystore_address(keystore) or unlock().address
    member = ledger.member(address)
    if not member.active or Role.PARTICIPANT not in member.roles:
        raise UsageError(f"this site's account {address} is not an active participant of federation {ledger.address}")
    _check_task_code(settings.task, config)
    federation = Federation(ledger, LocalStore(Path(config["store-dir"])), mode_of(settings.experiment))
    load_data, summarize = _own_data(open_task(settings.experiment), settings, config, federation, address,
                                     member.index)

    def watcher(identity: Callable[[], Identity]) -> Callable[[SignedCommitment], None]:
        return lambda signed: _watch_in_process(config, signed)

    answers = AnswerFiles(Path(config["store-dir"]) / "answers" / ledger.address.lower())
    return Node(member.index, address, unlock, federation, settings, load_data, summarize=summarize,
                watcher=watcher, answers=answers)


def _own_data(task: Task, settings: RunSettings, config: Mapping[str, str], federation: Federation, address: str,
              index: int) -> tuple[Callable[[], ArrayData], Callable[[], TableSummary] | None]:
    """This site's own data as the federation's task reads it, and (for a table) what it
    shares of it: a folder of images (`data-dir`, against the classes the task declares)
    or a table (`data-file`, preprocessed as every site agrees from their signed summaries)."""
    if not (isinstance(task, SupervisedTask) and isinstance(task.objective, Classification)):
        raise UsageError(f"a deployed site trains a classifier on its own table (data-file) or image folder "
                         f"(data-dir); the federation's task {task_label(settings.task)} is not one")
    test_fraction = task.test_fraction
    if isinstance(task.source, ImageSource):
        source, folder = task.source, _data_path(config, "data-dir", "a folder of images, one sub-folder per class")
        if source.declared_shape() is None:
            raise UsageError("the federation's images task declares no classes (task.classes): a site cannot know "
                             "the class of each index from its own folder alone")
        return (lambda: _images(source, str(folder), index, settings.seed, test_fraction)), None
    data_file = _data_path(config, "data-file", "a table (CSV or Parquet)")
    target = config.get("target", DEFAULT_TARGET)

    def summarize() -> TableSummary:
        return summarize_table(data_file, target=target, seed=settings.seed, index=index, test_fraction=test_fraction)

    def load_data() -> ArrayData:
        shared = _agreed_preprocessing(federation, settings, address, summarize)
        return _table(str(data_file), target, settings.seed, index, test_fraction, json.dumps(shared.to_dict()))

    return load_data, summarize


def _data_path(config: Mapping[str, str], key: str, what: str) -> Path:
    if not config.get(key):
        raise UsageError(f"the SuperNode's node config lacks {key}: this site's data, {what}")
    path = Path(config[key])
    if not (path.is_dir() if key == "data-dir" else path.is_file()):
        raise UsageError(f"{path} named by {key} is not {'a directory' if key == 'data-dir' else 'a file'}")
    return path


@lru_cache(maxsize=4)
def _images(source: ImageSource, folder: str, index: int, seed: int, test_fraction: float) -> ArrayData:
    """The organization's own images, decoded once per process, split into train and test."""
    split = source.site_data(Path(folder), index=index, seed=seed, test_fraction=test_fraction)
    declared = source.declared_shape()
    assert declared is not None  # checked when the node started
    return ArrayData(split, *declared)


def _check_task_code(task: Mapping[str, Any], config: Mapping[str, str]) -> None:
    """A federation's task may name code (a model class, a task class, a Flower module);
    the task hash proves only that its deployer chose it. A site imports it only if its own
    node config names it too (`task-code="my_pkg.Net"`, comma-separated for several)."""
    allowed = {name.strip() for name in config.get("task-code", "").split(",") if name.strip()}
    for key, name in named_code(task).items():
        if name not in allowed:
            raise UsageError(f"the federation's task runs code ({key}={name}); this site imports code only when its "
                             f"own node config names it: task-code=\"{name}\"")


class AnswerFiles(MutableMapping[tuple[int, int], dict[str, Any]]):
    """A deployed site's answers by (round, attempt), one JSON file each: a ClientApp lives
    for one message, so a repeated request is recognised from disk, not from memory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, key: tuple[int, int]) -> Path:
        return self.directory / f"{int(key[0])}-{int(key[1])}.json"

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        try:
            return read_json(self._path(key), "answer")
        except UsageError:
            raise KeyError(key) from None

    def __setitem__(self, key: tuple[int, int], value: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._path(key).write_text(json.dumps(value))

    def __delitem__(self, key: tuple[int, int]) -> None:
        self._path(key).unlink(missing_ok=True)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for path in sorted(self.directory.glob("*-*.json")) if self.directory.is_dir() else []:
            round_text, _, attempt_text = path.stem.partition("-")
            if round_text.isdigit() and attempt_text.isdigit():
                yield int(round_text), int(attempt_text)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _agreed_preprocessing(federation: Federation, settings: RunSettings, address: str,
                          summarize: Callable[[], TableSummary]) -> SharedPreprocessing:
    """The features, classes and scaling every site derives from every site's signed
    summary, after checking each signature, that every signer is an active participant,
    that all of them are there, and that this site's own summary is what it said."""
    if not settings.summaries:
        raise ProtocolError("the aggregator sent no data summaries of the sites: it must greet them first")
    try:
        signed = {to_checksum_address(who): SignedSummary.from_record(record, to_checksum_address(who),
                                                                     federation.address, federation.chain_id)
                  for who, record in settings.summaries.items()}
    except (MalformedMessage, ValueError) as refused:
        raise ProtocolError(f"the sites' data summaries the aggregator sent are not all genuine: {refused}") from None
    members = {m.address: m for m in federation.ledger.members() if m.active and Role.PARTICIPANT in m.roles}
    participants = set(members)
    for who, item in signed.items():  # a site's weight in the scaling is its rows: no more than it may claim
        rows = int(item.summary.statistics.count.max())
        if who in members and rows > members[who].example_cap:
            raise ProtocolError(f"the data summary of {who} counts {rows} rows, above the {members[who].example_cap} "
                                "examples it was admitted with")
    if set(signed) != participants:
        raise ProtocolError(f"the aggregator sent data summaries of {sorted(signed)}, not of the federation's "
                            f"participants {sorted(participants)}")
    if signed[address].text != summarize().to_json():
        raise ProtocolError("the aggregator sent this site's data summary altered")
    return SignedSummary.combine(signed)


def _watch_in_process(config: Mapping[str, str], signed: SignedCommitment) -> None:
    """A deployed ClientApp's process ends with its reply, so a detached process keeps an eye
    on the commitment and sends it itself if the aggregator does not relay it in time."""
    command = [sys.executable, "-m", "clients.watch", "--keystore", config["keystore"],
               "--password-file", config["password-file"], "--federation-file", config["federation-file"],
               "--chain-url", config["chain-url"]]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    assert process.stdin is not None
    process.stdin.write(json.dumps(Receipt(signed).to_record()).encode())
    process.stdin.close()


def _train_fn(settings: RunSettings, load_data: Callable[[], object], index: int) -> TrainFn:
    task = open_task(settings.experiment)

    def train_fn(base: Tensors, ticket: Ticket) -> Trained:
        return train_as(task, base, load_data(), run_seed=settings.seed, round_number=ticket.round, index=index)

    return train_fn


def _evaluate_fn(settings: RunSettings, load_data: Callable[[], object], index: int) -> EvaluateFn:
    task = open_task(settings.experiment)
    return lambda weights: evaluate_seeded(task, weights, load_data(), derive_seed(settings.seed, index))


def _keystore_address(path: Path) -> str | None:
    """The account a v3 keystore names, without decrypting it (None if it names none: then
    the keystore is unlocked; a wrong name is caught when the unlocked key signs)."""
    document = read_json(path, "keystore file", KeystoreError)
    named = document.get("address") if isinstance(document, dict) else None
    return to_checksum_address("0x" + named.removeprefix("0x")) if isinstance(named, str) and named else None


@lru_cache(maxsize=4)
def _table(path: str, target: str, seed: int, index: int, test_fraction: float, shared_json: str) -> ArrayData:
    """The organization's own table, split into train and test, its labels encoded and its
    features standardized as every site agreed (federated statistics, no rows pooled)."""
    shared = SharedPreprocessing.from_dict(json.loads(shared_json))
    data = load_own_table(path, target=target, seed=seed, index=index, test_fraction=test_fraction, shared=shared)
    return ArrayData(data, (len(shared.feature_names),), len(shared.classes))

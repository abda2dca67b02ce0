"""Runs one experiment from its resolved config: chain, store, federation, rounds, outputs.

`run_experiment` is what `flchain run` calls for each Hydra job. It founds a federation
with keys derived from the seed, serves the chain to the participants' processes, runs
the Flower simulation with the on-chain strategy, then writes the run directory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp
from flwr.simulation import run_simulation
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from aggregator.strategy import OnChainStrategy, RoundPlan
from clients.app import app as client_app
from clients.baseline import centralized
from clients.data.plots import plot_label_distribution
from clients.models import build_model, model_weights
from clients.settings import RunSettings, load_dataset
from fl_chain import protocol
from fl_chain.chain import rpc
from fl_chain.chain.anvil import AnvilNode
from fl_chain.chain.artifacts import FEDERATION
from fl_chain.chain.bridge import RpcBridge
from fl_chain.chain.embedded import EmbeddedChain
from fl_chain.chain.federation import FederationParameters
from fl_chain.consortium import SimulatedConsortium
from fl_chain.errors import UsageError
from fl_chain.keyfile import write_key_file
from fl_chain.plots import plot_per_round
from fl_chain.progress import Progress
from fl_chain.runlog import RunLog
from fl_chain.storage.blockstore import LocalStore

AGGREGATION_RULES = {"fedavg": 0, "fedprox": 1}
CHAIN_BACKENDS = ("embedded", "anvil", "rpc")


CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def compose_experiment(overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The experiment configs/config.yaml describes with Hydra `overrides`, outside `flchain run`."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return resolve_config(compose(config_name="config", overrides=list(overrides)))


def resolve_config(cfg: DictConfig) -> dict[str, Any]:
    """The composed Hydra config as plain data, with what follows from it filled in."""
    try:
        config = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as missing:
        raise UsageError(f"the config needs a value for {missing.full_key} (e.g. {missing.full_key}=...)") from None
    assert isinstance(config, dict)
    if config["task"]["name"] == "csv":
        config["num_participants"] = len(config["task"]["files"])
    return config


def validate(config: dict[str, Any]) -> None:
    """Checks the config before anything touches a chain; each problem is one clear line."""
    participants = config["num_participants"]
    checks = [
        (participants >= 1, f"num_participants must be at least 1, got {participants}"),
        (config["rounds"] >= 1, f"rounds must be at least 1, got {config['rounds']}"),
        (1 <= config["quorum"] <= participants,
         f"quorum {config['quorum']} must be between 1 and num_participants ({participants})"),
        (1 <= config["num_validators"] <= participants,
         f"num_validators {config['num_validators']} must be between 1 and num_participants ({participants})"),
        (1 <= config["attestation_threshold"] <= config["num_validators"],
         f"attestation_threshold {config['attestation_threshold']} must be between 1 and "
         f"num_validators ({config['num_validators']})"),
        (0 < config["fraction_train"] <= 1, f"fraction_train must be in (0, 1], got {config['fraction_train']}"),
        (config["strategy"]["name"] in AGGREGATION_RULES,
         f"unknown strategy {config['strategy']['name']!r}; choose one of {tuple(AGGREGATION_RULES)}"),
        (config["chain"]["backend"] in CHAIN_BACKENDS,
         f"unknown chain backend {config['chain']['backend']!r}; choose one of {CHAIN_BACKENDS}"),
        (config["storage"]["backend"] == "local", f"unknown storage backend {config['storage']['backend']!r}"),
        (config["privacy"]["mode"] == "sealed", f"unknown privacy mode {config['privacy']['mode']!r}"),
    ]
    for holds, message in checks:
        if not holds:
            raise UsageError(message)


def task_hash(config: dict[str, Any]) -> bytes:
    """Binds the federation on chain to its exact config."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode()).digest()


@contextmanager
def serve_chain(config: dict[str, Any], run_dir: Path, funded: list[str]) -> Iterator[str]:
    """Yields a JSON-RPC URL for the configured chain, started and stopped around the run."""
    chain = config["chain"]
    if chain["backend"] == "embedded":
        embedded = EmbeddedChain.create(run_dir / "ledger", chain_id=chain["chain_id"], funded=funded)
        with RpcBridge(embedded.web3) as url:
            yield url
    elif chain["backend"] == "anvil":
        with AnvilNode(chain_id=chain["chain_id"]) as node:
            rpc.fund(rpc.connect(node.url), funded)
            yield node.url
    else:
        connected = rpc.connect(chain["url"], expected_chain_id=chain.get("chain_id"))
        rpc.fund(connected, funded)
        yield chain["url"]


def run_experiment(config: dict[str, Any], run_dir: Path, drive: Callable[[OnChainStrategy], None] | None = None) -> dict[str, Any]:
    """Runs the experiment `config` describes and fills `run_dir`; returns summary.json.

    `drive` runs the rounds: by default Flower's simulation engine; a ServerApp started by
    `flwr run` passes its own grid instead.
    """
    validate(config)
    run_dir.mkdir(parents=True, exist_ok=True)
    _quiet_frameworks()
    consortium = SimulatedConsortium.derive(config["seed"], config["num_participants"], config["num_validators"])
    store = LocalStore(run_dir / "store")
    settings_without_chain = dict(seed=config["seed"], num_participants=config["num_participants"],
                                  num_validators=config["num_validators"], store_dir=str((run_dir / "store").resolve()),
                                  task=config["task"], partition=config["partition"],
                                  proximal_mu=float(config["strategy"]["proximal_mu"]))
    dataset = load_dataset(RunSettings(chain_url="", contract="", **settings_without_chain))
    genesis_model = build_model(dataset.input_shape, dataset.num_classes, config["seed"])
    genesis = protocol.publish_genesis_model(store, model_weights(genesis_model))
    progress = Progress(config["rounds"])
    progress.note(f"fl-chain: {config['task']['name']}, {config['num_participants']} participants, "
                  f"{config['rounds']} rounds, {config['chain']['backend']} chain -> {run_dir}")

    with serve_chain(config, run_dir, consortium.transacting_addresses) as url:
        chain = rpc.connect(url)
        parameters = FederationParameters(
            task_hash=task_hash(config),
            aggregation_rule=AGGREGATION_RULES[config["strategy"]["name"]],
            quorum=config["quorum"],
            round_duration=config["round_duration"],
            attestation_threshold=config["attestation_threshold"],
        )
        ledger = consortium.found(chain, parameters, genesis)
        federation = protocol.Federation(ledger, store)
        progress.note(f"federation {ledger.address} on chain {chain.chain_id}, genesis model {genesis}")
        settings = RunSettings(chain_url=url, contract=ledger.address, **settings_without_chain)
        runlog = RunLog(run_dir)
        plan = RoundPlan(config["rounds"], config["quorum"], config["fraction_train"],
                         config["attestation_threshold"], config["reply_timeout"])
        strategy = OnChainStrategy(federation, consortium.aggregator, settings, plan, runlog, progress)
        (drive or _simulate)(strategy)
        final_round, final_model = ledger.latest_accepted()
        (run_dir / "model.safetensors").write_bytes(store.get(final_model))
        federation_file = {
            "address": ledger.address,
            "chain_id": chain.chain_id,
            "artifact_sha256": FEDERATION.sha256,
            "parameters": {**dataclasses.asdict(parameters), "task_hash": "0x" + parameters.task_hash.hex()},
            "genesis_model": str(genesis),
            "members": [{"address": m.address, "index": m.index, "roles": m.roles.name} for m in ledger.members()],
        }
        (run_dir / "federation.json").write_text(json.dumps(federation_file, indent=1) + "\n")
        _write_opening_keys(run_dir / "keys", consortium)
        chain_info = {"backend": config["chain"]["backend"], "chain_id": chain.chain_id, "contract": ledger.address}

    _check_rounds_ran(runlog)
    progress.note("training the centralized baseline on the pooled data")
    settings_pooled = dataclasses.replace(settings.training, epochs=settings.training.epochs * config["rounds"])
    baseline = centralized(dataset, settings_pooled, seed=config["seed"])
    _plot(run_dir, runlog, baseline.accuracy, dataset)
    last = runlog.rounds[-1]
    summary = runlog.write_summary(
        chain_info,
        {"round": final_round, "accuracy": last.accuracy, "loss": last.loss, "global_cid": str(final_model),
         "centralized_accuracy": baseline.accuracy},
    )
    progress.note(f"final accuracy {last.accuracy:.4f} (centralized {baseline.accuracy:.4f}), "
                  f"model {final_model}, {sum(r.accepted for r in runlog.rounds)} rounds accepted")
    return summary


def _write_opening_keys(directory: Path, consortium: SimulatedConsortium) -> None:
    """The keys that open this run's updates, for `flchain verify --key`. Secret: in a
    simulation the seed derives them anyway, in a deployment each party keeps its own."""
    write_key_file(directory / "aggregator.json", consortium.aggregator, "aggregator")
    for index, validator in enumerate(consortium.validators):
        write_key_file(directory / f"validator-{index}.json", validator, "validator")


def _quiet_frameworks() -> None:
    """Flower and Ray narrate (and warn about their own deprecations); the run's progress
    lines are what a user needs, errors still come through."""
    logging.getLogger("flwr").setLevel(logging.ERROR)
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    warnings.filterwarnings("ignore", category=FutureWarning, module="ray")


def _simulate(strategy: OnChainStrategy) -> None:
    """Runs Flower's simulation engine; an error in the ServerApp is raised here, not lost."""
    failures: list[BaseException] = []
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            strategy.start(grid)
        except BaseException as error:  # noqa: BLE001 - re-raised below, after Flower shuts down
            failures.append(error)

    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=strategy.settings.num_participants,
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"num_cpus": 2, "include_dashboard": False, "logging_level": logging.ERROR},
        },
    )
    if failures:
        raise failures[0]


def _check_rounds_ran(runlog: RunLog) -> None:
    if not runlog.rounds:
        raise UsageError("the simulation ended before any round completed (see the messages above)")


def _plot(run_dir: Path, runlog: RunLog, centralized_accuracy: float, dataset: Any) -> None:
    rounds = runlog.rounds
    plot_per_round(run_dir / "accuracy.png", "Federated accuracy per round", "accuracy",
                   {"federated (on-chain)": [r.accuracy for r in rounds]}, ("centralized baseline", centralized_accuracy))
    plot_per_round(run_dir / "loss.png", "Federated loss per round", "loss",
                   {"federated (on-chain)": [r.loss for r in rounds]})
    plot_label_distribution(dataset, run_dir / "label_distribution.png")

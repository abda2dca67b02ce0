"""Runs one experiment from its resolved config: chain, store, federation, rounds, outputs.

`run_experiment` is what `flchain run` calls for each Hydra job. It founds a federation
with keys derived from the seed, serves the chain to the participants' processes, runs
the Flower simulation with the on-chain strategy, then writes the run directory.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp
from flwr.simulation import run_simulation

from aggregator.config import AGGREGATION_RULES, RUN_OWNED_CHAINS, validate
from aggregator.drill import KillDrill
from aggregator.strategy import OnChainStrategy, RoundPlan
from clients.app import app as client_app
from clients.baseline import centralized
from clients.data.plots import plot_label_distribution
from clients.drills import parse_drills
from clients.models import build_model, model_weights
from clients.settings import RunSettings, load_dataset
from fl_chain import protocol
from fl_chain.chain import rpc
from fl_chain.chain.anvil import AnvilNode
from fl_chain.chain.bridge import RpcBridge
from fl_chain.chain.chain import Chain
from fl_chain.chain.embedded import EmbeddedChain
from fl_chain.chain.federation import FederationParameters, task_hash
from fl_chain.chain.federation_file import describe
from fl_chain.chain.ledger import Ledger
from fl_chain.chain.operator import RpcSettings, connect_operator, fund_accounts
from fl_chain.consortium import SimulatedConsortium
from fl_chain.errors import ChainError, FlChainError, StoreError, UsageError
from fl_chain.jsonfiles import read_json
from fl_chain.keyfile import write_key_file
from fl_chain.plots import plot_per_round
from fl_chain.progress import Progress
from fl_chain.protocol import ProtocolError
from fl_chain.runlog import RunLog
from fl_chain.storage.backends import open_store
from fl_chain.storage.blockstore import ContentStore
from fl_chain.storage.cid import Cid


class RunStopped(FlChainError):
    """A run stopped part-way for a reason outside it (chain unreachable, rounds failing);
    what it did is kept and `flchain resume` continues it."""


@contextmanager
def serve_chain(config: dict[str, Any], run_dir: Path, funded: list[str], resume: bool = False) -> Iterator[str]:
    """Yields a JSON-RPC URL for the configured chain, started and stopped around the run.

    `resume` re-executes an embedded chain's journal; an anvil chain lived in a process
    that ended with the run, so there is nothing to resume.
    """
    chain = config["chain"]
    if chain["backend"] == "embedded":
        if resume:
            embedded = EmbeddedChain.resume(run_dir / "ledger")
        else:
            embedded = EmbeddedChain.create(run_dir / "ledger", chain_id=chain["chain_id"], funded=funded)
        with RpcBridge(embedded.web3, increase_time=embedded.increase_time) as url:
            yield url
    elif chain["backend"] == "anvil" and resume:
        raise UsageError("a chain=anvil run's chain lived in the anvil node the run started, which ended with it: "
                         "it cannot be resumed (chain=embedded keeps a journal; chain=rpc uses a node that outlives "
                         "the run)")
    elif chain["backend"] == "anvil":
        with AnvilNode(chain_id=chain["chain_id"]) as node:
            rpc.fund(rpc.connect(node.url), funded)
            yield node.url
    else:
        connected, operator = connect_operator(chain)
        fund_accounts(connected, operator, funded, RpcSettings.from_config(chain).fund_wei)
        yield chain["url"]


@dataclasses.dataclass(frozen=True)
class Experiment:
    """What a run needs before it touches a chain: keys, store, data, genesis model."""

    config: dict[str, Any]
    run_dir: Path
    consortium: SimulatedConsortium
    store: ContentStore
    dataset: Any
    genesis: Cid
    base_settings: dict[str, Any]
    progress: Progress

    @classmethod
    def prepare(cls, config: dict[str, Any], run_dir: Path) -> Experiment:
        validate(config)
        drills = parse_drills(config.get("drills") or [], config["num_participants"])
        run_dir.mkdir(parents=True, exist_ok=True)
        _quiet_frameworks()
        consortium = SimulatedConsortium.derive(config["seed"], config["num_participants"], config["num_validators"])
        store_spec = _store_spec(config["storage"], run_dir)
        store = open_store(store_spec, run_dir)
        base_settings = dict(seed=config["seed"], num_participants=config["num_participants"],
                             num_validators=config["num_validators"], store=store_spec,
                             task=config["task"], partition=config["partition"],
                             proximal_mu=float(config["strategy"]["proximal_mu"]),
                             drills=[dataclasses.asdict(drill) for drill in drills])
        dataset = load_dataset(RunSettings(chain_url="", contract="", **base_settings))
        genesis_model = build_model(dataset.input_shape, dataset.num_classes, config["seed"])
        genesis = protocol.publish_genesis_model(store, model_weights(genesis_model))
        return cls(config, run_dir, consortium, store, dataset, genesis, base_settings, Progress(config["rounds"]))

    def parameters(self) -> FederationParameters:
        return FederationParameters(
            task_hash=task_hash(self.config),
            aggregation_rule=AGGREGATION_RULES[self.config["strategy"]["name"]],
            quorum=self.config["quorum"],
            round_duration=self.config["round_duration"],
            attestation_threshold=self.config["attestation_threshold"],
        )

    def train(self, ledger: Ledger, url: str, runlog: RunLog, drive: Callable[[OnChainStrategy], None] | None) -> None:
        """Runs (or, with a resumed `runlog`, finishes) the rounds on `ledger`."""
        config = self.config
        settings = RunSettings(chain_url=url, contract=ledger.address, **self.base_settings)
        plan = RoundPlan(config["rounds"], config["quorum"], config["fraction_train"], config["attestation_threshold"],
                         config["reply_timeout"], max_attempts=config.get("max_attempts", 3),
                         fast_forward=config["chain"]["backend"] in RUN_OWNED_CHAINS)
        strategy = OnChainStrategy(protocol.Federation(ledger, self.store), self.consortium.aggregator, settings, plan,
                                   runlog, self.progress, KillDrill.from_environment())
        try:
            (drive or _simulate)(strategy)
        except (ChainError, StoreError, ProtocolError) as error:  # outside the run: it can continue
            raise RunStopped(f"{error}. The run stopped after {len(runlog.rounds)} of {config['rounds']} rounds; "
                             f"`flchain resume {self.run_dir}` continues it from the chain") from error

    def finish(self, ledger: Ledger, runlog: RunLog) -> dict[str, Any]:
        """The final model, plots, baseline and summary.json, once every round is accepted."""
        config, run_dir, progress = self.config, self.run_dir, self.progress
        _check_rounds_ran(runlog)
        final_round, final_model = ledger.latest_accepted()
        (run_dir / "model.safetensors").write_bytes(self.store.get(final_model))
        chain_info = {"backend": config["chain"]["backend"], "chain_id": ledger.chain.chain_id, "contract": ledger.address}
        progress.note("training the centralized baseline on the pooled data")
        training = RunSettings(chain_url="", contract="", **self.base_settings).training
        baseline = centralized(self.dataset, dataclasses.replace(training, epochs=training.epochs * config["rounds"]),
                               seed=config["seed"])
        _plot(run_dir, runlog, baseline.accuracy, self.dataset)
        last = runlog.rounds[-1]
        summary = runlog.write_summary(
            chain_info,
            {"round": final_round, "accuracy": last.accuracy, "loss": last.loss, "global_cid": str(final_model),
             "centralized_accuracy": baseline.accuracy},
        )
        shown = f"{last.accuracy:.4f}" if last.accuracy is not None else "not evaluated"
        progress.note(f"final accuracy {shown} (centralized {baseline.accuracy:.4f}), "
                      f"model {final_model}, {sum(r.accepted for r in runlog.rounds)} rounds accepted")
        return summary


def run_experiment(config: dict[str, Any], run_dir: Path, drive: Callable[[OnChainStrategy], None] | None = None) -> dict[str, Any]:
    """Runs the experiment `config` describes and fills `run_dir`; returns summary.json.

    `drive` runs the rounds: by default Flower's simulation engine; a ServerApp started by
    `flwr run` passes its own grid instead. federation.json and the opening keys are
    written as soon as the federation exists, so a run killed later can be resumed.
    """
    experiment = Experiment.prepare(config, run_dir)
    experiment.progress.note(f"fl-chain: {config['task']['name']}, {config['num_participants']} participants, "
                             f"{config['rounds']} rounds, {config['chain']['backend']} chain -> {run_dir}")
    with serve_chain(config, run_dir, experiment.consortium.transacting_addresses) as url:
        chain = _connect(config, url)
        ledger = experiment.consortium.found(chain, experiment.parameters(), experiment.genesis)
        experiment.progress.note(f"federation {ledger.address} on chain {chain.chain_id}, genesis model {experiment.genesis}")
        write_federation_file(run_dir / "federation.json", ledger, experiment.genesis)
        _write_opening_keys(run_dir / "keys", experiment.consortium)
        runlog = RunLog(run_dir)
        experiment.train(ledger, url, runlog, drive)
        return experiment.finish(ledger, runlog)


def resume_experiment(run_dir: Path, config: dict[str, Any],
                      drive: Callable[[OnChainStrategy], None] | None = None) -> dict[str, Any]:
    """Finishes a run that stopped (aggregator killed, node unreachable, round failed too
    often) from the chain's state: accepted rounds stay, the open one is completed."""
    federation_file = read_json(run_dir / "federation.json", "federation file")
    if (run_dir / "summary.json").is_file():
        raise UsageError(f"{run_dir} finished already (it has summary.json): nothing to resume")
    experiment = Experiment.prepare(config, run_dir)
    with serve_chain(config, run_dir, experiment.consortium.transacting_addresses, resume=True) as url:
        ledger = Ledger.attach(_connect(config, url), str(federation_file["address"]))
        runlog = RunLog(run_dir, resume=True)
        experiment.progress.note(f"fl-chain: resuming {run_dir} on federation {ledger.address} "
                                 f"({len(runlog.rounds)} of {config['rounds']} rounds recorded)")
        experiment.train(ledger, url, runlog, drive)
        return experiment.finish(ledger, runlog)


def _store_spec(storage: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """The store as the participants' processes must open it: a local one by absolute path."""
    if storage["backend"] == "local":
        return {**storage, "dir": str(Path(storage.get("dir") or run_dir / "store").resolve())}
    return dict(storage)


def _connect(config: dict[str, Any], url: str) -> Chain:
    """The aggregator's connection, riding out outages for `chain.retry_seconds`."""
    return rpc.connect(url, retry_seconds=float(config["chain"].get("retry_seconds", rpc.DEFAULT_RETRY_SECONDS)))


def write_federation_file(path: Path, ledger: Ledger, genesis: Cid) -> None:
    """The federation file members load (fl_chain.chain.federation_file), plus the members."""
    members = [{"address": m.address, "index": m.index, "roles": m.roles.name} for m in ledger.members()]
    document = {**describe(ledger, genesis, None).to_json(), "members": members}
    path.write_text(json.dumps(document, indent=1) + "\n")


def _write_opening_keys(directory: Path, consortium: SimulatedConsortium) -> None:
    """The keys that open this run's updates, for `flchain verify --key`. Secret: in a
    simulation the seed derives them anyway, in a deployment each party keeps its own."""
    write_key_file(directory / "aggregator.json", consortium.aggregator, "aggregator")
    for index, validator in enumerate(consortium.validators):
        write_key_file(directory / f"validator-{index}.json", validator, "validator")


def _quiet_frameworks() -> None:
    """Flower and Ray narrate (and warn about their own deprecations, and print a ClientApp's
    traceback); the run's progress lines are what a user needs: a participant's failure
    comes back in its reply and is shown there in one line, a ServerApp error is raised."""
    logging.getLogger("flwr").setLevel(logging.CRITICAL)
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

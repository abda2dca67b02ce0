"""Runs one experiment from its resolved config: chain, store, federation, rounds, outputs.

`run_experiment` is what `flchain run` calls for each Hydra job. It makes the run's keys
(keys/: fresh X25519 keys always; accounts from the seed only on the run's own chain),
founds a federation, serves the chain to the participants' processes, runs the Flower
simulation with the on-chain strategy, then writes the run directory.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shlex
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aggregator.config import RUN_OWNED_CHAINS, validate
from aggregator.drill import KillDrill
from aggregator.strategy import OnChainStrategy
from fl_chain import protocol
from fl_chain.chain.federation import FederationParameters, experiment_of, parameter_differences, parameters_for
from fl_chain.chain.federation_file import write_federation_file
from fl_chain.chain.ledger import Ledger
from fl_chain.chain.opening import open_chain
from fl_chain.consortium import SimulatedConsortium, admission_caps
from fl_chain.drills import records
from fl_chain.errors import ChainError, FlChainError, StoreError, UsageError
from fl_chain.identity import Identity
from fl_chain.jsonfiles import read_json
from fl_chain.plots import plot_per_round
from fl_chain.privacy import mode_of
from fl_chain.progress import Progress
from fl_chain.protocol import ProtocolError
from fl_chain.round import RoundPlan
from fl_chain.runlog import RunLog, outlier_lines, shown_figures
from fl_chain.settings import RunSettings
from fl_chain.storage.backends import open_store
from fl_chain.storage.blockstore import ContentStore
from fl_chain.storage.cid import Cid
from fl_chain.task import RunShape, Task
from fl_chain.tasks.baseline import centralized
from fl_chain.tasks.catalog import open_task, run_shape, task_label


class RunStopped(FlChainError):
    """A run stopped part-way for a reason outside it (chain unreachable, rounds failing);
    what it did is kept and `flchain resume` continues it."""


Confirm = Callable[[str], bool]
Drive = Callable[[OnChainStrategy], None]  # runs the rounds: experiments.simulation.simulate, or a grid's


@dataclasses.dataclass(frozen=True)
class Experiment:
    """What a run needs before it touches a chain: keys, store, data, genesis model."""

    config: dict[str, Any]
    run_dir: Path
    store: ContentStore
    task: Task
    run: RunShape
    genesis: Cid
    store_spec: dict[str, Any]
    progress: Progress

    @classmethod
    def prepare(cls, config: dict[str, Any], run_dir: Path) -> Experiment:
        validate(config)
        run_dir.mkdir(parents=True, exist_ok=True)
        _quiet_frameworks()
        store_spec = _store_spec(config["storage"], run_dir)
        store = open_store(store_spec, run_dir)
        task, run = open_task(config), run_shape(config)
        genesis = protocol.publish_genesis_model(store, task.initial_weights(run))
        return cls(config, run_dir, store, task, run, genesis, store_spec, Progress(config["rounds"]))

    @staticmethod
    def _settings(config: dict[str, Any], store_spec: dict[str, Any], url: str, contract: str,
                  keys_dir: Path | None = None) -> RunSettings:
        return RunSettings(experiment=experiment_of(config), chain_url=url, contract=contract, store=store_spec,
                           keys_dir=str(keys_dir) if keys_dir else None)

    def parameters(self) -> FederationParameters:
        return parameters_for(self.config)

    def example_caps(self) -> list[int]:
        """What each participant may claim (`admission_caps`: its own training set's size, or the federation's maximum)."""
        return admission_caps(self.task, self.run, self.config)

    def new_consortium(self) -> SimulatedConsortium:
        """The run's parties, their keys saved in keys/ before anything uses them. Accounts
        come from the seed only on a chain the run starts itself."""
        config = self.config
        consortium = SimulatedConsortium.create(config["seed"], config["num_participants"], config["num_validators"],
                                                seed_accounts=config["chain"]["backend"] in RUN_OWNED_CHAINS)
        consortium.save(self.run_dir / "keys")
        return consortium

    def train(self, ledger: Ledger, aggregator: Identity, url: str, runlog: RunLog,
              drive: Drive) -> None:
        """Runs (or, with a resumed `runlog`, finishes) the rounds on `ledger`."""
        config = self.config
        settings = self._settings(config, self.store_spec, url, ledger.address, (self.run_dir / "keys").resolve())
        plan = RoundPlan(config["rounds"], config["quorum"], config["fraction_train"], config["reply_timeout"],
                         seed=config["seed"], max_attempts=config.get("max_attempts", 3),
                         fast_forward=config["chain"]["backend"] in RUN_OWNED_CHAINS)
        strategy = OnChainStrategy(protocol.Federation(ledger, self.store, mode_of(config)), aggregator, settings, plan,
                                   runlog, self.progress, KillDrill.from_environment())
        try:
            drive(strategy)
        except (ChainError, StoreError, ProtocolError) as error:  # outside the run: it can continue
            raise RunStopped(f"{error}. The run stopped after {len(runlog.rounds)} of {config['rounds']} rounds; "
                             f"`{resume_command(config, self.run_dir)}` continues it from the chain") from error

    def finish(self, ledger: Ledger, runlog: RunLog) -> dict[str, Any]:
        """The final model, plots, baseline and summary.json, once every round is accepted."""
        config, run_dir, progress = self.config, self.run_dir, self.progress
        _check_rounds_ran(runlog)
        final_round, final_model = ledger.latest_accepted()
        (run_dir / "model.safetensors").write_bytes(self.store.get(final_model))
        chain_info = {"backend": config["chain"]["backend"], "chain_id": ledger.chain.chain_id, "contract": ledger.address}
        progress.note("training the centralized baseline on the pooled data")
        baseline = centralized(self.task, self.run).metrics
        self._plot(runlog, baseline)
        summary = runlog.write_final(chain_info, final_round, str(final_model), baseline)
        progress.note(f"final {shown_figures(runlog.rounds[-1].metrics)} (centralized {shown_figures(baseline)}), "
                      f"model {final_model}, {sum(r.accepted for r in runlog.rounds)} rounds accepted")
        for line in outlier_lines(summary["outliers"], len(runlog.rounds)):
            progress.note(line)
        return summary

    def _plot(self, runlog: RunLog, baseline: dict[str, float]) -> None:
        """The headline figure and the loss per round, and how the data is spread."""
        for name in dict.fromkeys((self.task.headline, "loss")):
            reference = ("centralized baseline", baseline[name]) if name in baseline else None
            plot_per_round(self.run_dir / f"{name}.png", f"Federated {name} per round", name,
                           {"federated (on-chain)": [r.metrics.get(name) for r in runlog.rounds]}, reference)
        self.task.plot_data(self.run, self.run_dir / "label_distribution.png")


def run_experiment(config: dict[str, Any], run_dir: Path, drive: Drive,
                   confirm: Confirm | None = None) -> dict[str, Any]:
    """Runs the experiment `config` describes and fills `run_dir`; returns summary.json.

    `drive` runs the rounds: Flower's simulation engine (experiments.simulation.simulate),
    or a ServerApp started by `flwr run` with its own grid. keys/ and federation.json are written as soon
    as they exist, so a run killed later can be resumed.
    """
    experiment = Experiment.prepare(config, run_dir)
    experiment.progress.note(f"fl-chain: {task_label(config['task'])}, {config['num_participants']} participants, "
                             f"{config['rounds']} rounds, {config['chain']['backend']} chain -> {run_dir}")
    consortium = experiment.new_consortium()
    with open_chain(config["chain"], run_dir, consortium.transacting_addresses, confirm=confirm) as opened:
        ledger = consortium.found(opened.chain, experiment.parameters(), experiment.genesis, experiment.example_caps())
        experiment.progress.note(f"federation {ledger.address} on chain {opened.chain.chain_id}, genesis model "
                                 f"{experiment.genesis}")
        write_federation_file(run_dir / "federation.json", ledger, experiment.genesis, consortium.seed_accounts)
        drills = _drills(config, consortium)
        if drills:
            experiment.progress.note(f"drills: {'; '.join(drill['label'] for drill in drills)}")
        runlog = RunLog(run_dir, metrics=experiment.task.metrics, drills=drills)
        experiment.train(ledger, consortium.aggregator, opened.url, runlog, drive)
        return experiment.finish(ledger, runlog)


def resume_experiment(run_dir: Path, config: dict[str, Any], drive: Drive,
                      confirm: Confirm | None = None) -> dict[str, Any]:
    """Finishes a run that stopped (aggregator killed, node unreachable, round failed too
    often) from the chain's state: accepted rounds stay, the open one is completed."""
    federation_file = read_json(run_dir / "federation.json", "federation file")
    if (run_dir / "summary.json").is_file():
        raise UsageError(f"{run_dir} finished already (it has summary.json): nothing to resume")
    address = federation_file.get("address") if isinstance(federation_file, dict) else None
    if not isinstance(address, str):
        raise UsageError(f"{run_dir / 'federation.json'} names no federation address")
    if config["chain"]["backend"] == "anvil":
        raise UsageError("a chain=anvil run's chain lived in the anvil node the run started, which ended with it: "
                         "it cannot be resumed (chain=embedded keeps a journal; chain=rpc uses a node that outlives "
                         "the run)")
    experiment = Experiment.prepare(config, run_dir)
    consortium = SimulatedConsortium.load(run_dir / "keys")
    with open_chain(config["chain"], run_dir, consortium.transacting_addresses, resume=True,
                    confirm=confirm) as opened:
        ledger = Ledger.attach(opened.chain, address)
        differences = parameter_differences(parameters_for(config), ledger.parameters())
        if differences:
            raise UsageError(f"federation {ledger.address} was deployed for another experiment than {run_dir}'s "
                             f"config.yaml describes: {'; '.join(differences)}")
        runlog = RunLog(run_dir, metrics=experiment.task.metrics, resume=True, drills=_drills(config, consortium))
        experiment.progress.note(f"fl-chain: resuming {run_dir} on federation {ledger.address} "
                                 f"({len(runlog.rounds)} of {config['rounds']} rounds recorded)")
        experiment.train(ledger, consortium.aggregator, opened.url, runlog, drive)
        return experiment.finish(ledger, runlog)


def resume_command(config: dict[str, Any], run_dir: Path) -> str:
    """How to resume: a run's chain and store outside its directory are named again on the
    command line (resume takes nothing of the kind from the run's files)."""
    chain, storage = config["chain"], config["storage"]
    where = []
    if chain["backend"] == "rpc":
        where += ["chain=rpc", f"chain.url={chain['url']}", *([f"chain.keystore={chain['keystore']}"]
                                                              if chain.get("keystore") else [])]
    if storage["backend"] != "local":
        where += [f"storage={storage['backend']}", *(f"storage.{k}={v}" for k, v in storage.items() if k != "backend")]
    return shlex.join(["flchain", "resume", str(run_dir), *where])


def _store_spec(storage: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """The store as the participants' processes must open it: a local one by absolute path."""
    if storage["backend"] == "local":
        return {**storage, "dir": str(Path(storage.get("dir") or run_dir / "store").resolve())}
    return dict(storage)


def _quiet_frameworks() -> None:
    """Flower and Ray narrate (and warn about their own deprecations, and print a ClientApp's
    traceback); the run's progress lines are what a user needs: a participant's failure
    comes back in its reply and is shown there in one line, a ServerApp error is raised."""
    logging.getLogger("flwr").setLevel(logging.CRITICAL)
    os.environ.setdefault("FLWR_LOG_LEVEL", "ERROR")  # the participants' processes (Ray actors) inherit it
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    warnings.filterwarnings("ignore", category=FutureWarning, module="ray")


def _drills(config: dict[str, Any], consortium: SimulatedConsortium) -> list[dict[str, Any]]:
    """The run's drills for its summary, each participant named by its address too."""
    return records(config, {index: participant.address for index, participant in enumerate(consortium.participants)})


def _check_rounds_ran(runlog: RunLog) -> None:
    if not runlog.rounds:
        raise UsageError("the simulation ended before any round completed (see the messages above)")

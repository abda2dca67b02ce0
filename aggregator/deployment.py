"""The aggregator's side of a deployment: the ServerApp run on the SuperLink's host.

The federation exists already (`flchain deploy`) and its members were admitted by the
admin (`flchain members add --card`); the aggregator only attaches to it. Its own keys,
store and chain node are named in an aggregator file (JSON, `fl-chain-aggregator/1`)
on its host, which the run config points to (`flwr run . <superlink> --run-config
'deployment="/path/aggregator.json" overrides="..."'`):

    {"format": "fl-chain-aggregator/1", "federation_file": "...", "chain_url": "...",
     "keystore": "...", "password_file": "...", "x25519_key": "...", "store_dir": "..."}

The overrides must describe the experiment the federation was deployed for (the task
hash on chain is checked). Each organization keeps its own store, so the run settings say
`ship_blobs`: sealed updates and models travel in the Flower messages, checked by CID.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr.serverapp import Grid
from omegaconf import OmegaConf

from aggregator.config import compose_experiment, validate
from aggregator.strategy import OnChainStrategy
from fl_chain.chain.accounts import unlock_keystore
from fl_chain.chain.federation import experiment_of, parameter_differences, parameters_for
from fl_chain.chain.federation_file import GENESIS_MODEL_FILE, FederationFile, write_federation_file
from fl_chain.chain.ledger import Ledger
from fl_chain.chain.opening import attach_federation
from fl_chain.drills import records
from fl_chain.errors import UsageError
from fl_chain.identity import Identity
from fl_chain.jsonfiles import read_json
from fl_chain.keyfile import read_key_file
from fl_chain.privacy import mode_of
from fl_chain.progress import Progress
from fl_chain.protocol import Federation
from fl_chain.round import RoundPlan
from fl_chain.runlog import RunLog, outlier_lines, shown_figures
from fl_chain.settings import RunSettings
from fl_chain.storage.blockstore import LocalStore
from fl_chain.tasks.catalog import open_task

FORMAT = "fl-chain-aggregator/1"


@dataclass(frozen=True)
class AggregatorFile:
    """Where the aggregator's federation file, chain node, keys and store are."""

    federation_file: Path
    chain_url: str
    keystore: Path
    password_file: Path
    x25519_key: Path
    store_dir: Path

    def write(self, path: Path) -> None:
        document = {"format": FORMAT, **{key: str(value) for key, value in self.__dict__.items()}}
        Path(path).write_text(json.dumps(document, indent=1) + "\n")

    @classmethod
    def read(cls, path: Path) -> AggregatorFile:
        document = read_json(path, "aggregator file")
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise UsageError(f"{path} is not an aggregator file (format {FORMAT})")
        try:
            return cls(Path(document["federation_file"]), str(document["chain_url"]), Path(document["keystore"]),
                       Path(document["password_file"]), Path(document["x25519_key"]), Path(document["store_dir"]))
        except KeyError as missing:
            raise UsageError(f"aggregator file {path} lacks {missing}") from None


def run_deployment(grid: Grid, aggregator_file: Path, overrides: list[str], run_dir: Path) -> dict[str, Any]:
    """Runs the configured rounds on the deployed federation and fills `run_dir`."""
    config = compose_experiment(overrides)
    validate(config, deployment=True)
    setup = AggregatorFile.read(aggregator_file)
    federation_file = FederationFile.read(setup.federation_file)
    ledger = attach_federation(federation_file, setup.chain_url)
    differences = parameter_differences(parameters_for(config), ledger.parameters())
    if differences:
        raise UsageError(f"the overrides describe another experiment than federation {ledger.address} was deployed "
                         f"for ({'; '.join(differences)}): pass the overrides given to `flchain deploy`")
    account = unlock_keystore(setup.keystore, password_file=setup.password_file)
    identity = Identity(account, read_key_file(setup.x25519_key).private_key)
    if ledger.aggregator() != identity.address:
        raise UsageError(f"{setup.keystore} holds {identity.address}, but the federation's aggregator is "
                         f"{ledger.aggregator()}: the admin appoints it with `flchain members set-aggregator`")
    store = LocalStore(setup.store_dir)
    _import_genesis(store, setup.federation_file.parent / GENESIS_MODEL_FILE, federation_file)
    progress = Progress(config["rounds"])
    progress.note(f"fl-chain deployment: federation {ledger.address} on chain {ledger.chain.chain_id}, "
                  f"aggregator {identity.address} -> {run_dir}")
    run_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(config), run_dir / "config.yaml")
    write_federation_file(run_dir / "federation.json", ledger, federation_file.genesis_model)
    runlog = RunLog(run_dir, metrics=open_task(config).metrics,
                    drills=records(config, {member.index: member.address for member in ledger.members()}))
    strategy = OnChainStrategy(Federation(ledger, store, mode_of(config)), identity, _settings(config, setup, ledger),
                               _plan(config), runlog, progress)
    strategy.start(grid)
    return _finish(run_dir, ledger, store, runlog, progress)


def _settings(config: dict[str, Any], setup: AggregatorFile, ledger: Ledger) -> RunSettings:
    """What every participant must agree on (each checks its hash against the chain);
    their identity, data and store are their own."""
    return RunSettings(experiment=experiment_of(config), chain_url=setup.chain_url, contract=ledger.address,
                       store={"backend": "local", "dir": str(setup.store_dir)}, ship_blobs=True)


def _plan(config: dict[str, Any]) -> RoundPlan:
    return RoundPlan(config["rounds"], config["quorum"], config["fraction_train"], config["reply_timeout"],
                     seed=config["seed"], max_attempts=config.get("max_attempts", 3))


def _import_genesis(store: LocalStore, path: Path, federation_file: FederationFile) -> None:
    """Round 1 starts from the genesis model: the aggregator must hold it to hand it out."""
    if store.has(federation_file.genesis_model):
        return
    if not path.is_file():
        raise UsageError(f"the genesis model {federation_file.genesis_model} is neither in the store "
                         f"{store.root} nor in {path}")
    if store.put(path.read_bytes()) != federation_file.genesis_model:
        raise UsageError(f"{path} is not the federation's genesis model {federation_file.genesis_model}")


def _finish(run_dir: Path, ledger: Ledger, store: LocalStore, runlog: RunLog, progress: Progress) -> dict[str, Any]:
    if not runlog.rounds:
        raise UsageError("the deployment ended before any round completed (see the messages above)")
    final_round, final_model = ledger.latest_accepted()
    (run_dir / "model.safetensors").write_bytes(store.get(final_model))
    chain_info = {"backend": "rpc", "chain_id": ledger.chain.chain_id, "contract": ledger.address}
    summary = runlog.write_final(chain_info, final_round, str(final_model))
    progress.note(f"final {shown_figures(runlog.rounds[-1].metrics)}, model {final_model}, "
                  f"{sum(r.accepted for r in runlog.rounds)} rounds accepted")
    for line in outlier_lines(summary["outliers"], len(runlog.rounds)):
        progress.note(line)
    return summary

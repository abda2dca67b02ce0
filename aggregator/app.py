"""The ServerApp for `flwr run .`: the same experiment as `flchain run`, driven by Flower.

`flchain run` is the usual way in (Hydra overrides, sweeps, progress); this lets Flower's
own tooling start the same apps from pyproject.toml. Hydra overrides come from the run
config key `overrides` (`flwr run . --run-config 'overrides="rounds=3"'`), and the run
directory from `run-dir`. With `deployment` naming an aggregator file, it is the
aggregator of a deployed federation instead (aggregator/deployment.py, docs/deployment.md).
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from aggregator.config import compose_experiment
from aggregator.deployment import run_deployment
from experiments.harness import run_experiment
from fl_chain.errors import UsageError

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    overrides = shlex.split(str(context.run_config.get("overrides", "")))
    run_dir = Path(str(context.run_config.get("run-dir", "runs/flwr"))) / time.strftime("%Y-%m-%d_%H-%M-%S")
    if context.run_config.get("deployment"):  # organizations' SuperNodes on a real federation
        run_deployment(grid, Path(str(context.run_config["deployment"])), overrides, run_dir.resolve())
        return
    config = compose_experiment(overrides)
    nodes = _settled_node_count(grid)
    if nodes != config["num_participants"]:
        raise UsageError(
            f"the federation has {nodes} SuperNodes but the config asks for {config['num_participants']} "
            f"participants: set `flwr federation simulation-config <federation> <superlink> --num-supernodes "
            f"{config['num_participants']}`, or pass overrides=\"num_participants={nodes} ...\""
        )
    run_experiment(config, run_dir.resolve(), drive=lambda strategy: strategy.start(grid))


def _settled_node_count(grid: Grid, patience: float = 3.0, limit: float = 60.0) -> int:
    """SuperNodes register one by one: wait until their count has not changed for a while."""
    start = changed = time.monotonic()
    count = len(list(grid.get_node_ids()))
    while time.monotonic() - changed < patience and time.monotonic() - start < limit:
        time.sleep(0.2)
        current = len(list(grid.get_node_ids()))
        if current != count:
            count, changed = current, time.monotonic()
    return count

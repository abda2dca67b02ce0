"""Flower's simulation engine as a run's driver: one SuperNode per participant, in Ray.

The harness (experiments/harness.py) runs rounds through whatever drives its strategy;
`flchain run` and the suites pass `simulate`, `flwr run .` its own grid
(aggregator/app.py). Kept apart so that nothing on the aggregator's side imports the
participants' ClientApp.
"""

from __future__ import annotations

import logging

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp
from flwr.simulation import run_simulation

from aggregator.strategy import OnChainStrategy
from clients.app import app as client_app


def simulate(strategy: OnChainStrategy) -> None:
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



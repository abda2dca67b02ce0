"""Plain Flower, the overhead baseline: the same model, data, seeds, rounds and training code
as an fl-chain run, with Flower's own FedAvg carrying the weights in its messages, and no
chain, no content store, no encryption.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation

from fl_chain.seeding import derive_seed
from fl_chain.settings import RunSettings
from fl_chain.task import Task, evaluate_seeded, train_as
from fl_chain.tasks.catalog import open_task, run_shape

client_app = ClientApp()


def _local(message: Message, context: Context) -> tuple[RunSettings, int, Task, Any, dict[str, np.ndarray]]:
    settings = RunSettings.from_json(str(message.content["config"]["settings"]))
    index = int(context.node_config["partition-id"])
    task = open_task(settings.experiment)
    weights = message.content["arrays"].to_numpy_ndarrays()
    names = list(task.initial_weights(run_shape(settings.experiment)))
    return settings, index, task, task.participant_data(index, run_shape(settings.experiment)), dict(zip(names, weights))


@client_app.train()
def train_round(message: Message, context: Context) -> Message:
    settings, index, task, data, weights = _local(message, context)
    round_number = int(message.content["config"]["server-round"])
    trained = train_as(task, weights, data, run_seed=settings.seed, round_number=round_number, index=index)
    content = RecordDict({"arrays": ArrayRecord(list(trained.tensors.values())),
                          "metrics": MetricRecord({**trained.metrics, "num-examples": trained.examples})})
    return Message(content, reply_to=message)


@client_app.evaluate()
def evaluate_round(message: Message, context: Context) -> Message:
    settings, index, task, data, weights = _local(message, context)
    result = evaluate_seeded(task, weights, data, derive_seed(settings.seed, index))
    metrics = MetricRecord({**result.metrics, "num-examples": result.examples})
    return Message(RecordDict({"metrics": metrics}), reply_to=message)


def run_plain(settings: RunSettings, rounds: int) -> list[float]:
    """Runs plain Flower; returns the wall-clock seconds of each round (train + evaluate)."""
    marks: list[float] = []
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        initial = open_task(settings.experiment).initial_weights(run_shape(settings.experiment))
        everyone = settings.num_participants
        strategy = FedAvg(fraction_train=1.0, fraction_evaluate=1.0, min_train_nodes=everyone,
                          min_evaluate_nodes=everyone, min_available_nodes=everyone)
        config = ConfigRecord({"settings": settings.to_json()})

        def mark_round(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
            marks.append(time.perf_counter())
            return None

        strategy.start(grid, ArrayRecord(list(initial.values())), num_rounds=rounds, train_config=config,
                       evaluate_config=config, evaluate_fn=mark_round)

    run_simulation(server_app=server_app, client_app=client_app, num_supernodes=settings.num_participants,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"num_cpus": 2, "include_dashboard": False}})
    return [later - earlier for earlier, later in zip(marks, marks[1:])]

"""Plain Flower, the overhead baseline: the same model, data, seeds, rounds and training code
as an fl-chain run, with Flower's own FedAvg carrying the weights in its messages, and no
chain, no content store, no encryption.
"""

from __future__ import annotations

import time

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation

from fl_chain.seeding import derive_seed
from fl_chain.settings import RunSettings, load_dataset
from fl_chain.tasks.models import build_model
from fl_chain.tasks.training import evaluate, train

client_app = ClientApp()


def _local(message: Message, context: Context):  # type: ignore[no-untyped-def]
    settings = RunSettings.from_json(str(message.content["config"]["settings"]))
    index = int(context.node_config["partition-id"])
    dataset = load_dataset(settings)
    model = build_model(dataset.input_shape, dataset.num_classes, settings.seed)
    model.load_state_dict(message.content["arrays"].to_torch_state_dict())
    return settings, index, dataset.participants[index], model


@client_app.train()
def train_round(message: Message, context: Context) -> Message:
    settings, index, data, model = _local(message, context)
    round_number = int(message.content["config"]["server-round"])
    report = train(model, data, settings.training, seed=derive_seed(settings.seed, round_number, index),
                   proximal_mu=settings.proximal_mu)
    content = RecordDict({"arrays": ArrayRecord(model.state_dict()),
                          "metrics": MetricRecord({"loss": report.loss, "num-examples": report.examples})})
    return Message(content, reply_to=message)


@client_app.evaluate()
def evaluate_round(message: Message, context: Context) -> Message:
    _, _, data, model = _local(message, context)
    result = evaluate(model, data.test_x, data.test_y)
    metrics = MetricRecord({"loss": result.loss, "accuracy": result.accuracy, "num-examples": result.examples})
    return Message(RecordDict({"metrics": metrics}), reply_to=message)


def run_plain(settings: RunSettings, rounds: int) -> list[float]:
    """Runs plain Flower; returns the wall-clock seconds of each round (train + evaluate)."""
    marks: list[float] = []
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        dataset = load_dataset(settings.experiment)
        model = build_model(dataset.input_shape, dataset.num_classes, settings.seed)
        everyone = settings.num_participants
        strategy = FedAvg(fraction_train=1.0, fraction_evaluate=1.0, min_train_nodes=everyone,
                          min_evaluate_nodes=everyone, min_available_nodes=everyone)
        config = ConfigRecord({"settings": settings.to_json()})

        def mark_round(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
            marks.append(time.perf_counter())
            return None

        strategy.start(grid, ArrayRecord(model.state_dict()), num_rounds=rounds, train_config=config,
                       evaluate_config=config, evaluate_fn=mark_round)

    run_simulation(server_app=server_app, client_app=client_app, num_supernodes=settings.num_participants,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"num_cpus": 2, "include_dashboard": False}})
    return [later - earlier for earlier, later in zip(marks, marks[1:])]

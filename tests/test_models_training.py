"""Models, their named-array form, deterministic local training and a FedAvg smoke run."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from fl_chain.aggregation import WeightedUpdate, federated_average
from fl_chain.data.builtin import BUILTIN_TASKS
from fl_chain.errors import SchemaMismatch, UsageError
from fl_chain.seeding import derive_seed
from fl_chain.settings import TrainingSettings
from fl_chain.task import Evaluated, RunShape
from fl_chain.tasks.baseline import centralized, local_only
from fl_chain.tasks.catalog import TASK_NAMES, open_task
from fl_chain.tasks.models import build_model, load_weights, model_weights
from fl_chain.tasks.objectives import Classification, Regression
from fl_chain.tasks.supervised import SupervisedTask
from fl_chain.tasks.training import fit, predict

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
FAST = TrainingSettings(epochs=1, batch_size=16, learning_rate=0.05, momentum=0.9)
RUN = RunShape(0, 5, {"scheme": "dirichlet", "alpha": 0.5})


def experiment(name: str, proximal_mu: float = 0.0, **task: Any) -> dict[str, Any]:
    """An experiment with `name`'s task config (configs/task/NAME.yaml), `task` overriding it."""
    defaults = OmegaConf.to_container(OmegaConf.load(CONFIGS / "task" / f"{name}.yaml"))
    assert isinstance(defaults, dict)
    return {"task": {**defaults, **task}, "strategy": {"proximal_mu": proximal_mu}}


@pytest.fixture(scope="module")
def task() -> SupervisedTask:
    opened = open_task(experiment("breast_cancer"))
    assert isinstance(opened, SupervisedTask)
    return opened


def same_weights(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[name], b[name]) for name in a)


# ---------------------------------------------------------------- models


@pytest.mark.parametrize(("shape", "classes"), [((30,), 2), ((1, 8, 8), 10)])
def test_models_are_seeded_and_give_logits(shape: tuple[int, ...], classes: int) -> None:
    state = torch.random.get_rng_state()
    model = build_model(shape, classes, seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is left alone
    assert same_weights(model_weights(model), model_weights(build_model(shape, classes, seed=1)))
    assert not same_weights(model_weights(model), model_weights(build_model(shape, classes, seed=2)))
    assert model(torch.zeros(3, *shape)).shape == (3, classes)


def test_unsupported_shapes_are_usage_errors() -> None:
    with pytest.raises(UsageError, match=r"no model for input shape \(8, 8\)"):
        build_model((8, 8), 10, seed=0)
    with pytest.raises(UsageError, match="at least 1 output"):
        build_model((4,), 0, seed=0)
    with pytest.raises(UsageError, match="at least 2 classes"):
        Classification().outputs(1)


def test_weights_round_trip_through_named_arrays() -> None:
    source, target = build_model((1, 8, 8), 10, seed=1), build_model((1, 8, 8), 10, seed=2)
    weights = model_weights(source)
    assert list(weights) == list(source.state_dict())
    assert all(array.dtype == np.float32 for array in weights.values())
    load_weights(target, weights)
    assert same_weights(model_weights(target), weights)
    inputs = torch.rand(4, 1, 8, 8)
    assert torch.equal(source(inputs), target(inputs))
    weights["output.bias"][0] += 1.0  # a copy: changing it leaves the model alone
    assert not same_weights(model_weights(source), weights)


def test_weights_that_do_not_fit_are_refused() -> None:
    model = build_model((30,), 2, seed=0)
    weights = model_weights(model)
    with pytest.raises(SchemaMismatch, match=r"missing \['output.bias'\]"):
        load_weights(model, {k: v for k, v in weights.items() if k != "output.bias"})
    with pytest.raises(SchemaMismatch, match=r"wrong shape \['hidden.weight \(32, 29\) != \(32, 30\)'\]"):
        load_weights(model, {**weights, "hidden.weight": weights["hidden.weight"][:, :29]})


# ---------------------------------------------------------------- training


def test_training_is_bit_identical_for_the_same_seed(task: SupervisedTask) -> None:
    data, start = task.participant_data(1, RUN), task.initial_weights(RUN)
    assert same_weights(task.train(start, data, seed=5).tensors, task.train(start, data, seed=5).tensors)
    assert not same_weights(task.train(start, data, seed=5).tensors, task.train(start, data, seed=6).tensors)


def test_training_digits_cnn_is_bit_identical() -> None:
    digits = open_task(experiment("digits", epochs=1))
    run = RunShape(0, 4, {"scheme": "iid"})
    start, data = digits.initial_weights(run), digits.participant_data(0, run)
    first = digits.train(start, data, seed=3).tensors
    assert same_weights(first, digits.train(start, data, seed=3).tensors)
    assert not same_weights(first, start)


def test_a_round_reports_examples_and_loss(task: SupervisedTask) -> None:
    data = task.participant_data(0, RUN)
    trained = open_task(experiment("breast_cancer", epochs=3)).train(task.initial_weights(RUN), data, seed=0)
    assert trained.examples == data.split.examples == task.train_examples(data)
    assert 0.0 < trained.metrics["loss"] < 0.69  # below chance-level cross-entropy after three epochs


def test_fit_counts_steps(task: SupervisedTask) -> None:
    split = task.participant_data(0, RUN).split
    model = build_model((30,), 2, seed=0)
    report = fit(model, split.train_x, split.train_y, Classification().loss, replace(FAST, epochs=3), seed=0)
    assert report.steps == 3 * -(-split.examples // FAST.batch_size) and report.examples == split.examples


def test_fedprox_pulls_towards_the_starting_weights(task: SupervisedTask) -> None:
    data, start = task.participant_data(2, RUN), task.initial_weights(RUN)

    def drift(mu: float) -> tuple[dict[str, np.ndarray], float]:
        proximal = open_task(experiment("breast_cancer", epochs=5, proximal_mu=mu))
        weights = proximal.train(start, data, seed=1).tensors
        return weights, sum(float(((weights[k] - start[k]) ** 2).sum()) for k in start)

    plain, plain_drift = drift(0.0)
    proximal, proximal_drift = drift(1.0)
    assert not same_weights(plain, proximal)
    assert proximal_drift < plain_drift


def test_bad_training_settings_are_usage_errors(task: SupervisedTask) -> None:
    with pytest.raises(UsageError, match="unknown optimizer 'rmsprop'"):
        TrainingSettings(epochs=1, batch_size=8, learning_rate=0.1, optimizer="rmsprop")
    with pytest.raises(UsageError, match="learning_rate must be positive"):
        TrainingSettings(epochs=1, batch_size=8, learning_rate=0.0)
    with pytest.raises(UsageError, match="learning_rate must be positive"):
        open_task(experiment("breast_cancer", learning_rate=-1.0))
    split = task.participant_data(0, RUN).split
    with pytest.raises(UsageError, match="proximal_mu must be non-negative"):
        fit(build_model((30,), 2, seed=0), split.train_x, split.train_y, Classification().loss, FAST, seed=0,
            proximal_mu=-1.0)


def test_evaluation_is_example_weighted() -> None:
    mean = Evaluated.weighted_mean([Evaluated({"loss": 1.0, "accuracy": 1.0}, 30),
                                    Evaluated({"loss": 3.0, "accuracy": 0.5}, 10)])
    assert mean == Evaluated({"accuracy": 0.875, "loss": 1.5}, 40)
    model = build_model((2,), 2, seed=0)
    x = np.array([[0.0, 1.0], [1.0, 0.0]], dtype=np.float32)
    figures = Classification().figures(predict(model, x), torch.tensor([0, 1]))
    logits = model(torch.from_numpy(x)).detach()
    assert figures["loss"] == pytest.approx(torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1])).item())
    assert figures["accuracy"] == ((logits.argmax(dim=1) == torch.tensor([0, 1])).sum().item() / 2)


def test_regression_figures_are_in_the_targets_units() -> None:
    objective = Regression(center=10.0, scale=2.0)
    targets = torch.from_numpy(objective.targets(np.array([8.0, 10.0, 14.0])))
    perfect = objective.figures(targets.clone(), targets)
    assert perfect["mse"] == 0.0 and perfect["r2"] == 1.0
    off = objective.figures(targets + 0.5, targets)  # every prediction 1.0 too high, in the target's units
    assert off["mse"] == pytest.approx(1.0) and off["loss"] == pytest.approx(0.25)
    assert off["r2"] == pytest.approx(1 - 3 * 0.25 / float(((targets - targets.mean()) ** 2).sum()))


# ---------------------------------------------------------------- federation and baselines


def test_fedavg_on_breast_cancer_reaches_the_tuned_accuracy(task: SupervisedTask) -> None:
    """The tuning scenario for seed 0: 10 rounds of plain FedAvg with the task defaults."""
    weights = task.initial_weights(RUN)
    participants = [task.participant_data(index, RUN) for index in range(RUN.num_participants)]
    for round_number in range(10):
        updates = []
        for index, data in enumerate(participants):
            trained = task.train(weights, data, seed=derive_seed(0, round_number, index))
            updates.append(WeightedUpdate(f"0x{index + 1:040x}", trained.examples, trained.tensors))
        weights = federated_average(updates)
    federated = Evaluated.weighted_mean([task.evaluate(weights, data) for data in participants])
    assert federated.metrics["accuracy"] >= 0.95
    assert federated.metrics["accuracy"] == pytest.approx(task.evaluate(weights, task.pooled_data(RUN)).metrics["accuracy"])


def test_baselines(task: SupervisedTask) -> None:
    run = RunShape(0, 5, {"scheme": "dirichlet", "alpha": 0.5}, rounds=4)
    central = centralized(task, run)
    assert central.examples == len(task.pooled_data(run).split.test_y)
    assert central.metrics["accuracy"] >= 0.93
    alone = local_only(task, run)
    assert alone.examples == central.examples and 0.5 < alone.metrics["accuracy"] <= 1.0


def test_every_builtin_task_has_a_config_that_opens() -> None:
    assert {path.stem for path in (CONFIGS / "task").glob("*.yaml")} == {*TASK_NAMES, "custom"}
    for name in (*BUILTIN_TASKS, "csv", "images"):
        task = open_task(experiment(name, files=["a.csv"], target="y", dirs=["site_a"]))
        assert isinstance(task, SupervisedTask) and task.training.epochs >= 1

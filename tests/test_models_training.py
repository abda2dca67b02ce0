"""Models, their named-array form, deterministic local training and a FedAvg smoke run."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from fl_chain.aggregation import WeightedUpdate, federated_average
from fl_chain.data.builtin import BUILTIN_TASKS, load_builtin
from fl_chain.data.dataset import FederatedDataset
from fl_chain.data.partition import Partitioning
from fl_chain.errors import SchemaMismatch, UsageError
from fl_chain.seeding import derive_seed
from fl_chain.settings import TrainingSettings, training_settings
from fl_chain.tasks.baseline import centralized, local_only
from fl_chain.tasks.models import build_model, load_weights, model_weights
from fl_chain.tasks.training import Evaluation, evaluate, evaluate_participants, train

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def task_defaults(task: str) -> TrainingSettings:
    """The training settings a run of `task` uses: its Hydra task config."""
    return training_settings(OmegaConf.to_container(OmegaConf.load(CONFIGS / "task" / f"{task}.yaml")))

FAST = TrainingSettings(epochs=1, batch_size=16, learning_rate=0.05, momentum=0.9)


@pytest.fixture(scope="module")
def breast_cancer() -> FederatedDataset:
    return load_builtin(
        "breast_cancer", num_participants=5, partitioning=Partitioning("dirichlet", alpha=0.5), seed=0
    )


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
    with pytest.raises(UsageError, match="at least 2 classes"):
        build_model((4,), 1, seed=0)


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


def test_training_is_bit_identical_for_the_same_seed(breast_cancer: FederatedDataset) -> None:
    participant = breast_cancer.participants[1]

    def trained(seed: int) -> dict[str, np.ndarray]:
        model = build_model(breast_cancer.input_shape, 2, seed=0)
        train(model, participant, FAST, seed=seed)
        return model_weights(model)

    assert same_weights(trained(5), trained(5))
    assert not same_weights(trained(5), trained(6))


def test_training_digits_cnn_is_bit_identical() -> None:
    digits = load_builtin("digits", num_participants=4, partitioning=Partitioning("iid"), seed=0)

    def trained() -> dict[str, np.ndarray]:
        model = build_model(digits.input_shape, 10, seed=0)
        train(model, digits.participants[0], FAST, seed=3)
        return model_weights(model)

    first = trained()
    assert same_weights(first, trained())
    assert not same_weights(first, model_weights(build_model(digits.input_shape, 10, seed=0)))


def test_report_counts_examples_and_steps(breast_cancer: FederatedDataset) -> None:
    participant = breast_cancer.participants[0]
    model = build_model(breast_cancer.input_shape, 2, seed=0)
    report = train(model, participant, replace(FAST, epochs=3), seed=0)
    assert report.examples == participant.examples
    assert report.steps == 3 * -(-participant.examples // FAST.batch_size)
    assert 0.0 < report.loss < 0.69  # below chance-level cross-entropy after three epochs


def test_fedprox_pulls_towards_the_starting_weights(breast_cancer: FederatedDataset) -> None:
    participant = breast_cancer.participants[2]
    start = model_weights(build_model(breast_cancer.input_shape, 2, seed=0))

    def drift(mu: float) -> tuple[dict[str, np.ndarray], float]:
        model = build_model(breast_cancer.input_shape, 2, seed=0)
        train(model, participant, replace(FAST, epochs=5), seed=1, proximal_mu=mu)
        weights = model_weights(model)
        return weights, sum(float(((weights[k] - start[k]) ** 2).sum()) for k in start)

    plain, plain_drift = drift(0.0)
    proximal, proximal_drift = drift(1.0)
    assert not same_weights(plain, proximal)
    assert proximal_drift < plain_drift


def test_bad_training_settings_are_usage_errors(breast_cancer: FederatedDataset) -> None:
    with pytest.raises(UsageError, match="unknown optimizer 'rmsprop'"):
        TrainingSettings(epochs=1, batch_size=8, learning_rate=0.1, optimizer="rmsprop")
    with pytest.raises(UsageError, match="learning_rate must be positive"):
        TrainingSettings(epochs=1, batch_size=8, learning_rate=0.0)
    model = build_model(breast_cancer.input_shape, 2, seed=0)
    with pytest.raises(UsageError, match="proximal_mu must be non-negative"):
        train(model, breast_cancer.participants[0], FAST, seed=0, proximal_mu=-1.0)


def test_evaluation_is_example_weighted() -> None:
    mean = Evaluation.weighted_mean([Evaluation(1.0, 1.0, 30), Evaluation(3.0, 0.5, 10)])
    assert mean == Evaluation(loss=1.5, accuracy=0.875, examples=40)
    model = build_model((2,), 2, seed=0)
    x = np.array([[0.0, 1.0], [1.0, 0.0]], dtype=np.float32)
    loss, accuracy, examples = evaluate(model, x, np.array([0, 1]))
    logits = model(torch.from_numpy(x)).detach()
    expected = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1])).item()
    assert loss == pytest.approx(expected) and examples == 2
    assert accuracy == ((logits.argmax(dim=1) == torch.tensor([0, 1])).sum().item() / 2)


# ---------------------------------------------------------------- federation and baselines


def test_fedavg_on_breast_cancer_reaches_the_tuned_accuracy(breast_cancer: FederatedDataset) -> None:
    """The tuning scenario for seed 0: 10 rounds of plain FedAvg with the task defaults."""
    settings = task_defaults("breast_cancer")
    model = build_model(breast_cancer.input_shape, breast_cancer.num_classes, seed=0)
    weights = model_weights(model)
    for round_number in range(10):
        updates = []
        for index, participant in enumerate(breast_cancer.participants):
            load_weights(model, weights)
            report = train(model, participant, settings, seed=derive_seed(0, round_number, index))
            updates.append(WeightedUpdate(f"0x{index + 1:040x}", report.examples, model_weights(model)))
        weights = federated_average(updates)
    load_weights(model, weights)
    federated = evaluate_participants(model, breast_cancer.participants)
    pooled = breast_cancer.pooled()
    assert federated.accuracy >= 0.95
    assert federated.accuracy == pytest.approx(evaluate(model, pooled.test_x, pooled.test_y).accuracy)


def test_baselines(breast_cancer: FederatedDataset) -> None:
    settings = replace(task_defaults("breast_cancer"), epochs=20)
    central = centralized(breast_cancer, settings, seed=0)
    assert central.examples == len(breast_cancer.pooled().test_y)
    assert central.accuracy >= 0.93
    alone = local_only(breast_cancer, settings, seed=0)
    assert alone.examples == central.examples and 0.5 < alone.accuracy <= 1.0


def test_every_task_has_a_config() -> None:
    assert {path.stem for path in (CONFIGS / "task").glob("*.yaml")} == {*BUILTIN_TASKS, "csv"}
    for task in (*BUILTIN_TASKS, "csv"):
        assert task_defaults(task).epochs >= 1

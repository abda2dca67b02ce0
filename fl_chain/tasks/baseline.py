"""Reference points for federated results: all data in one place, or no federation.

The centralized baseline trains the same model on the pooled train splits and scores it
on the pooled test splits (an upper reference that federation should approach); the
local-only baseline trains one model per participant on its own data and scores each on
its own test split (what federation should beat). Give them the epochs of the whole
federated run (rounds x local epochs) for a like-for-like comparison.
"""

from __future__ import annotations

from fl_chain.data.dataset import FederatedDataset, ParticipantData
from fl_chain.seeding import derive_seed
from fl_chain.settings import TrainingSettings
from fl_chain.tasks.models import build_model
from fl_chain.tasks.training import Evaluation, evaluate, train


def centralized(dataset: FederatedDataset, settings: TrainingSettings, *, seed: int) -> Evaluation:
    """Train on all training splits pooled; evaluate on all test splits pooled."""
    return _train_and_evaluate(dataset, dataset.pooled(), settings, seed=seed)


def local_only(dataset: FederatedDataset, settings: TrainingSettings, *, seed: int) -> Evaluation:
    """Each participant alone; the example-weighted mean of their own test scores."""
    return Evaluation.weighted_mean(
        [
            _train_and_evaluate(dataset, participant, settings, seed=derive_seed(seed, index))
            for index, participant in enumerate(dataset.participants)
        ]
    )


def _train_and_evaluate(
    dataset: FederatedDataset, data: ParticipantData, settings: TrainingSettings, *, seed: int
) -> Evaluation:
    model = build_model(dataset.input_shape, dataset.num_classes, seed)
    train(model, data, settings, seed=seed)
    return evaluate(model, data.test_x, data.test_y)

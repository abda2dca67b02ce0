"""Reference points for federated results: all data in one place, or no federation.

The centralized baseline is one participant holding every participant's data: it trains
as many rounds of the task's local training on the pooled train splits as the federated
run has rounds, and is scored on the pooled test splits (an upper reference that
federation should approach). The local-only baseline trains each participant alone for
the same rounds and scores it on its own test split (what federation should beat). Both
work for any task, through its own training and evaluation.
"""

from __future__ import annotations

from typing import Any

from fl_chain.seeding import derive_seed
from fl_chain.task import Evaluated, RunShape, Task, evaluate_seeded, train_seeded


def centralized(task: Task, run: RunShape) -> Evaluated:
    """Train on all training splits pooled; evaluate on all test splits pooled."""
    return _alone(task, task.pooled_data(run), run, run.seed)


def local_only(task: Task, run: RunShape) -> Evaluated:
    """Each participant alone; the example-weighted mean of their own test scores."""
    return Evaluated.weighted_mean([_alone(task, task.participant_data(index, run), run, derive_seed(run.seed, index))
                                    for index in range(run.num_participants)])


def _alone(task: Task, data: Any, run: RunShape, seed: int) -> Evaluated:
    weights = task.initial_weights(run)
    for round_number in range(1, run.rounds + 1):
        weights = train_seeded(task, weights, data, derive_seed(seed, round_number)).tensors
    return evaluate_seeded(task, weights, data, seed)

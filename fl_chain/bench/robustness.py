"""A federation's rounds replayed in one process, for the robustness benchmark's matrix.

The model a run ends with depends on its config alone: the task's seeded training, the
drills, what the contract refuses (a claim above the member's example cap), what the
aggregator excludes (an update beyond the norm bound, the outlier test) and the rule. The
chain, the store and the envelopes carry and prove those steps but change no number. This
module takes the same steps with the same functions, without them, so a matrix of
hundreds of runs fits in minutes; tests/test_robustness_bench.py checks that a replay
ends with exactly the model bytes a real on-chain run of the same config does.

Replayed as a simulation runs: every participant trains every round (fraction_train 1),
admitted with the cap `admission_caps` says; a round below the quorum fails,
and as the same participants would fail it again, the run stops there.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fl_chain.aggregation import WeightedUpdate
from fl_chain.attacks import Attack, attack_seed
from fl_chain.consortium import admission_caps, seeded_participant_address
from fl_chain.drills import Drill, parse_drills
from fl_chain.outliers import screen
from fl_chain.protocol import distance
from fl_chain.rules import rule_named
from fl_chain.seeding import derive_seed
from fl_chain.task import Evaluated, Trained, evaluate_seeded, train_as
from fl_chain.tasks.catalog import open_task, run_shape


@dataclass
class Replay:
    """What a replayed run ended with, and who was left out of its rounds."""

    model: dict[str, np.ndarray]
    metrics: dict[str, float]
    rounds: int  # rounds that finalized (fewer than asked when one fell below the quorum)
    attacker_updates: int = 0  # attacker updates offered (one per attacker per round)
    attackers_excluded: int = 0  # of those, refused by the contract or excluded by the aggregator
    honest_updates: int = 0
    honest_excluded: int = 0
    stopped: str | None = None  # why the run stopped early, if it did
    outliers: dict[int, list[int]] = field(default_factory=dict)  # participant -> rounds excluded as an outlier


def replay(experiment: Mapping[str, Any]) -> Replay:
    """The rounds `experiment` (a composed config, as `flchain run` takes it) describes."""
    task, run = open_task(experiment), run_shape(experiment)
    seed, participants = run.seed, run.num_participants
    rule = rule_named(experiment["strategy"])
    quorum, norm_bound = int(experiment["quorum"]), float(experiment["max_update_norm"])
    drills = parse_drills(experiment)
    data = [task.participant_data(index, run) for index in range(participants)]
    caps = admission_caps(task, run, experiment)
    address = [seeded_participant_address(seed, index) for index in range(participants)]
    model = task.initial_weights(run)
    result = Replay(model, {}, 0)
    for round_number in range(1, run.rounds + 1):
        trained = _round_updates(task, model, data, drills, seed, round_number)
        offered: list[tuple[int, WeightedUpdate]] = []
        for index, (update, attacked) in enumerate(trained):
            result.attacker_updates += attacked
            result.honest_updates += not attacked
            if update.examples > caps[index] or not _within(update.tensors, model, norm_bound):
                _excluded(result, attacked)
                continue
            offered.append((index, WeightedUpdate(address[index], update.examples, update.tensors)))
        if len(offered) < quorum:
            result.stopped = f"round {round_number}: {len(offered)} valid updates, below the quorum of {quorum}"
            break
        screening = screen([u for _, u in offered], model, rule.outliers, quorum)
        flagged = {u.sender for u in screening.outliers}
        for index, update in offered:
            if update.sender in flagged:
                _excluded(result, trained[index][1])
                result.outliers.setdefault(index, []).append(round_number)
        model = rule.aggregate(screening.kept, model)
        result.rounds = round_number
    result.model = model
    result.metrics = Evaluated.weighted_mean(
        [evaluate_seeded(task, model, d, derive_seed(seed, index)) for index, d in enumerate(data)]).metrics
    return result


def _round_updates(task: Any, model: Mapping[str, np.ndarray], data: list[Any], drills: list[Drill], seed: int,
                   round_number: int) -> list[tuple[Trained, bool]]:
    """Each participant's update for the round (an attacker's as its drill makes it)."""
    honest = [train_as(task, model, d, run_seed=seed, round_number=round_number, index=index)
              for index, d in enumerate(data)]
    updates = []
    for index, trained in enumerate(honest):
        attack = _attack_of(drills, index, round_number)
        if attack is None:
            updates.append((trained, False))
            continue
        if attack.poisons_data:
            trained = train_as(task, model, attack.poison(data[index], attack_seed(seed, index)), run_seed=seed,
                               round_number=round_number, index=index)
        updates.append((attack.apply(trained, model, honest=honest, seed=attack_seed(seed, index, round_number)),
                        True))
    return updates


def _attack_of(drills: list[Drill], index: int, round_number: int) -> Attack | None:
    """The attack participant `index` mounts in the round's first attempt, if any."""
    return next((d.attack for d in drills if index in d.participants and d.hits(round_number, 1)), None)


def _within(tensors: Mapping[str, np.ndarray], base: Mapping[str, np.ndarray], bound: float) -> bool:
    """What the aggregator checks of an opened update besides its envelope: finite, and no
    farther from the base model than the federation's bound."""
    return all(np.isfinite(t).all() for t in tensors.values()) and distance(tensors, base) <= bound


def _excluded(result: Replay, attacked: bool) -> None:
    if attacked:
        result.attackers_excluded += 1
    else:
        result.honest_excluded += 1


def rate(part: int, whole: int) -> float:
    return part / whole if whole else math.nan

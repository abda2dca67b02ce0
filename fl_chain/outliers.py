"""The outlier test run on a round's valid updates before the rule combines them.

Every update is scored against the round's robust centre, the coordinate-wise median of
the valid updates: its L2 distance to the centre, the cosine of its step from the base
model with the centre's step, and the length of its step. An update farther from the
centre than `factor` times the median of those distances is an outlier and is excluded
on chain with the `outlier` reason, most distant first, never so many that fewer than
the quorum remain (the round would fail and the same attacker fail the next one).

The aggregator, every validator and `flchain verify` run this same function on the same
updates, so they flag the same participants: the test's factor is recorded on chain with
the rule (fl_chain/rules.py). Sums are exactly rounded (math.fsum) and ties broken by
address, so the verdict does not depend on the machine's BLAS.

The test catches updates that are far from the honest majority (scaling, sign flips,
heavy noise); attacks built to stay inside the honest spread ("A Little Is Enough") pass
it by design and are left to the robust rule itself.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fl_chain.aggregation import WeightedUpdate, flattened, in_address_order

Tensors = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class UpdateScore:
    """How one update sits against the round's robust centre (the evidence for a flag)."""

    participant: str
    distance: float  # L2 distance to the coordinate-wise median of the round's updates
    cosine: float  # of (update - base) with (centre - base); 0 when either step is zero
    norm: float  # L2 length of (update - base)
    outlier: bool = False

    def describe(self, threshold: float) -> str:
        return (f"{self.distance:.4g} from the round's median update, beyond {threshold:.4g} "
                f"(cosine {self.cosine:.3f}, step {self.norm:.4g})")


@dataclass(frozen=True)
class Screening:
    """The updates the rule combines, the outliers left out, and every update's score."""

    kept: tuple[WeightedUpdate, ...]
    outliers: tuple[WeightedUpdate, ...]
    scores: tuple[UpdateScore, ...]
    threshold: float  # the distance beyond which an update is an outlier (inf: no test)

    def score_of(self, participant: str) -> UpdateScore:
        return next(score for score in self.scores if score.participant == participant)


def screen(updates: Sequence[WeightedUpdate], base: Tensors, factor: float, keep: int) -> Screening:
    """Scores `updates` and flags those farther than `factor` x the median distance from
    the centre; at least `keep` updates (the quorum) are always kept. Factor 0: no test."""
    ordered = in_address_order(updates)
    if not ordered or not factor:  # no test, no scores: they cost a float64 copy of every update
        return Screening(tuple(ordered), (), (), math.inf)
    reference = flattened(base)
    steps = [flattened(update.tensors) - reference for update in ordered]
    centre_step = np.median(np.stack(steps), axis=0)
    centre_norm = _norm(centre_step)
    distances = [_norm(step - centre_step) for step in steps]
    threshold = factor * float(np.median(distances))
    flagged_order = sorted((i for i, d in enumerate(distances) if d > threshold),
                           key=lambda i: (-distances[i], int(ordered[i].sender, 16)))
    flagged = set(flagged_order[: max(0, len(ordered) - keep)])
    scores = []
    for i, (update, step) in enumerate(zip(ordered, steps, strict=True)):
        norm = _norm(step)
        cosine = _dot(step, centre_step) / (norm * centre_norm) if norm and centre_norm else 0.0
        scores.append(UpdateScore(update.sender, distances[i], cosine, norm, i in flagged))
    return Screening(tuple(u for i, u in enumerate(ordered) if i not in flagged),
                     tuple(u for i, u in enumerate(ordered) if i in flagged), tuple(scores), threshold)


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    return math.fsum((a * b).tolist())


def _norm(a: np.ndarray) -> float:
    return math.sqrt(_dot(a, a))

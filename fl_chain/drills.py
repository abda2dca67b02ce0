"""Fault drills for participants: rehearse what the consortium sees when one misbehaves.

A run's config may list drills (`drills=[{participant: 1, round: 2, kind: crash}]`); the
named participant then fails that round's attempt on purpose. They are part of the
experiment (the model depends on who took part), so they live in config.yaml and a
reproduced run drills the same way. Kinds:

- `crash`: the ClientApp fails before committing (Flower reports an error reply);
- `hang`: it sleeps `seconds` before training, so its reply misses the aggregator's
  `reply_timeout` (and its late commitment, if any, misses the round);
- `nan`: it commits an update whose first tensor holds NaN (the aggregator excludes it).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from fl_chain.errors import FlChainError, UsageError
from fl_chain.messages import Ticket
from fl_chain.participant import TrainFn
from fl_chain.task import Trained

KINDS = ("crash", "hang", "nan")
MAX_HANG = 3_600.0


class DrillFailure(FlChainError):
    """The participant failed on purpose (a `crash` drill)."""


@dataclass(frozen=True)
class ParticipantDrill:
    participant: int
    round: int
    kind: str
    attempt: int = 1
    seconds: float = 0.0

    @classmethod
    def parse(cls, entry: Mapping[str, Any], num_participants: int) -> ParticipantDrill:
        unknown = set(entry) - {"participant", "round", "kind", "attempt", "seconds"}
        if unknown:
            raise UsageError(f"drill {dict(entry)} has unknown keys {sorted(unknown)}")
        try:
            drill = cls(int(entry["participant"]), int(entry["round"]), str(entry["kind"]),
                        int(entry.get("attempt", 1)), float(entry.get("seconds", 0.0)))
        except (KeyError, TypeError, ValueError):
            raise UsageError(f"drill {dict(entry)} needs participant, round and kind (and numbers where numbers go)") from None
        if drill.kind not in KINDS:
            raise UsageError(f"drill kind {drill.kind!r} is not one of {KINDS}")
        if not 0 <= drill.participant < num_participants or drill.round < 1 or drill.attempt < 1:
            raise UsageError(f"drill {dict(entry)} names no participant index, round or attempt of this run")
        if drill.kind == "hang" and not 0 < drill.seconds <= MAX_HANG:
            raise UsageError(f"a hang drill needs seconds in (0, {MAX_HANG}] (longer than reply_timeout to miss the "
                             "round)")
        return drill


def parse_drills(entries: Sequence[Mapping[str, Any]], num_participants: int) -> list[ParticipantDrill]:
    return [ParticipantDrill.parse(entry, num_participants) for entry in entries]


def drilled(train_fn: TrainFn, drills: Sequence[ParticipantDrill]) -> TrainFn:
    """`train_fn` with this participant's drills around it: installed only when configured,
    never a branch in the training path itself."""

    def train_with_drills(base: Mapping[str, np.ndarray], ticket: Ticket) -> Trained:
        drill = next((d for d in drills if (d.round, d.attempt) == (ticket.round, ticket.attempt)), None)
        if drill is not None and drill.kind == "crash":
            raise DrillFailure(f"drill: participant {drill.participant} crashed in round {drill.round}")
        if drill is not None and drill.kind == "hang":
            time.sleep(drill.seconds)
        trained = train_fn(base, ticket)
        if drill is not None and drill.kind == "nan":
            return replace(trained, tensors=poison(trained.tensors))
        return trained

    return train_with_drills


def poison(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The update a `nan` drill commits: the first tensor's first value is NaN."""
    first = next(iter(weights))
    poisoned = weights[first].astype(weights[first].dtype, copy=True)
    poisoned.flat[0] = np.nan
    return {**weights, first: poisoned}

"""Participant drills: rehearse what the consortium sees when participants misbehave.

A run's config may list drills (`drills=[{participant: 1, round: 2, kind: crash}]`); the
named participants then fail or attack on purpose. They are part of the experiment (the
model depends on who took part and what they sent), so they live in config.yaml and a
reproduced run drills the same way. Each names its participants by `participant` (an index
or a list of them) or by `fraction` (a seeded share of them, `attackers_of`), and a `round`.

Faults (`round` required; `attempt`, default 1, is the attempt of that round they hit):

- `crash`: the ClientApp fails before committing (Flower reports an error reply);
- `hang`: it sleeps `seconds` before training, so its reply misses the aggregator's
  `reply_timeout` (and its late commitment, if any, misses the round);
- `nan`: it commits an update whose first tensor holds NaN (the aggregator excludes it).

Attacks (every round unless `round` is given; fl_chain/attacks.py has the maths):
`sign_flip`, `scale` (`factor`), `noise` (`sigma`), `label_flip` (`rate`), `alie` (`z`),
`inflate` (`examples`), `free_ride`. `alie` trains every participant's honest update itself
(all of the run's, also those a round with fraction_train < 1 does not ask), so it runs only
in a simulation, where this process holds every participant's data.

summary.json lists the run's drills (`records`), and metrics.csv's `drills` column names
those active in each row's round.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from fl_chain.attacks import ATTACKS, Attack, attack_seed, attackers_of, check_poisonable
from fl_chain.errors import FlChainError, UsageError
from fl_chain.messages import Ticket
from fl_chain.participant import TrainFn
from fl_chain.task import Task, Trained, train_as

FAULTS: dict[str, tuple[str, ...]] = {"crash": ("attempt",), "hang": ("attempt", "seconds"), "nan": ("attempt",)}
KINDS = (*FAULTS, *ATTACKS)
SELECTION = ("participant", "fraction")
MAX_HANG = 3_600.0
ONLY_SIMULATED = ("the {kind} drill trains every participant's honest update itself, which only a simulation can: a "
                  "deployed site holds its own data alone")


class DrillFailure(FlChainError):
    """The participant failed on purpose (a `crash` drill)."""


@dataclass(frozen=True)
class Drill:
    """One entry of `drills`: what its participants do, and in which round (None: every
    round, for an attack); a fault hits one `attempt` of its round."""

    kind: str
    participants: tuple[int, ...]
    round: int | None
    attempt: int = 1
    seconds: float = 0.0
    attack: Attack | None = None

    @classmethod
    def parse(cls, entry: object, experiment: Mapping[str, Any]) -> Drill:
        if not isinstance(entry, Mapping):
            raise UsageError(f"drill {entry!r} is not a mapping like {{participant: 1, round: 2, kind: crash}}")
        shown = dict(entry)
        kind = str(entry["kind"]) if "kind" in entry else None  # a YAML `nan` is a float
        if kind is None:
            raise UsageError(f"drill {shown} needs a kind, one of {KINDS}")
        if kind not in KINDS:
            raise UsageError(f"drill kind {kind!r} is not one of {KINDS}")
        takes = FAULTS.get(kind) or ATTACKS[kind]
        unknown = set(entry) - {"kind", "round", *SELECTION, *takes}
        others = sorted(unknown & {name for names in (*FAULTS.values(), *ATTACKS.values()) for name in names})
        if others:
            raise UsageError(f"drill {shown}: {kind} takes {', '.join(takes) or 'no parameters'}, not "
                             f"{', '.join(others)}")
        if unknown:
            raise UsageError(f"drill {shown} has unknown keys {sorted(unknown)}")
        participants = attackers_of(entry, int(experiment["num_participants"]), int(experiment["seed"]))
        round_number, rounds = entry.get("round"), int(experiment["rounds"])
        if round_number is None and kind in FAULTS:
            raise UsageError(f"drill {shown}: a {kind} drill needs the round it happens in")
        if round_number is not None and not (_is_int(round_number) and 1 <= round_number <= rounds):
            raise UsageError(f"drill {shown} names round {round_number!r}, not one of this run's 1..{rounds}")
        if kind not in FAULTS:
            try:
                attack = Attack.parse(kind, {name: entry[name] for name in takes if name in entry},
                                      participants=int(experiment["num_participants"]), attackers=len(participants))
            except UsageError as error:
                raise UsageError(f"drill {shown}: {error}") from None
            return cls(kind, participants, round_number, attack=attack)
        attempt, attempts = entry.get("attempt", 1), int(experiment.get("max_attempts", 3))
        if not (_is_int(attempt) and 1 <= attempt <= attempts):
            raise UsageError(f"drill {shown} names attempt {attempt!r}, not one of this run's 1..{attempts}")
        seconds = entry.get("seconds", 0.0)
        if kind == "hang" and not (_is_number(seconds) and 0 < seconds <= MAX_HANG):
            raise UsageError(f"drill {shown}: a hang drill needs seconds in (0, {MAX_HANG}] (longer than "
                             "reply_timeout to miss the round)")
        return cls(kind, participants, round_number, attempt, float(seconds))

    def hits(self, round_number: int, attempt: int) -> bool:
        """Whether it happens in this attempt of this round."""
        if self.attack is not None:
            return self.round in (None, round_number)
        return (self.round, self.attempt) == (round_number, attempt)

    @property
    def parameters(self) -> dict[str, float]:
        """What its kind takes, by name (a fault: its attempt, and a hang's seconds)."""
        if self.attack is not None:
            return self.attack.parameters
        return {"attempt": self.attempt, **({"seconds": self.seconds} if self.kind == "hang" else {})}

    @property
    def label(self) -> str:
        """How metrics.csv names it: `scale(factor=50)@p1`, `crash@p0+p2` (attempt 1 unsaid)."""
        shown = {name: value for name, value in self.parameters.items() if (name, value) != ("attempt", 1)}
        parameters = f"({','.join(f'{name}={value:g}' for name, value in shown.items())})" if shown else ""
        return f"{self.kind}{parameters}@{'+'.join(f'p{index}' for index in self.participants)}"

    def record(self, addresses: Mapping[int, str], rounds: int) -> dict[str, Any]:
        """What summary.json says of it: kind, parameters, who (index and address), which rounds."""
        return {"kind": self.kind, "parameters": self.parameters, "participants": list(self.participants),
                "addresses": [addresses.get(index, "") for index in self.participants],
                "rounds": [self.round] if self.round is not None else list(range(1, rounds + 1)), "label": self.label}


def parse_drills(experiment: Mapping[str, Any], *, deployment: bool = False) -> list[Drill]:
    """The experiment's drills, checked against its participants, rounds and attempts; one
    participant has at most one drill in any attempt of a round. `deployment`: refuses what
    only a simulation can rehearse (alie)."""
    entries = experiment.get("drills") or []
    if not isinstance(entries, Sequence) or isinstance(entries, str):
        raise UsageError(f"drills must be a list, e.g. drills=[{{participant:1,round:2,kind:crash}}], got {entries!r}")
    drills = [Drill.parse(entry, experiment) for entry in entries]
    for position, drill in enumerate(drills):
        if deployment and drill.attack is not None and drill.attack.needs_honest:
            raise UsageError(ONLY_SIMULATED.format(kind=drill.kind))
        for other in drills[:position]:
            shared = sorted(set(drill.participants) & set(other.participants))
            if shared and _overlap(drill, other):
                raise UsageError(f"participant {shared[0]} has two drills at once ({other.label} and {drill.label}): "
                                 "give them different rounds (or attempts)")
    return drills



def check_drill_task(drills: Sequence[Drill], experiment: Mapping[str, Any]) -> None:
    """label_flip flips class labels: refused, before anything runs, for a task without them."""
    if any(drill.attack is not None and drill.attack.poisons_data for drill in drills):
        from fl_chain.tasks.catalog import open_task, task_label  # the task's code: only when it is needed

        check_poisonable(open_task(experiment), task_label(experiment["task"]))


def records(experiment: Mapping[str, Any], addresses: Mapping[int, str]) -> list[dict[str, Any]]:
    """The run's drills as summary.json lists them (`Drill.record`), participants' addresses
    by index."""
    return [drill.record(addresses, int(experiment["rounds"])) for drill in parse_drills(experiment)]


@dataclass(frozen=True)
class LocalTraining:
    """How participant `index` trains, for the drills that train themselves: the run's task
    and seed, its own data and, in a simulation, every participant's (`data_of`; a deployed
    site has none but its own)."""

    task: Task
    seed: int
    index: int
    num_participants: int
    own_data: Callable[[], Any]
    data_of: Callable[[int], object] | None = None

    def train(self, base: Mapping[str, np.ndarray], round_number: int, data: object, index: int | None = None) -> Trained:
        return train_as(self.task, base, data, run_seed=self.seed, round_number=round_number,
                        index=self.index if index is None else index)

    def everyone(self, base: Mapping[str, np.ndarray], round_number: int, own: Trained) -> list[Trained]:
        """Every participant's honest update of the round, with the seeds they train with."""
        assert self.data_of is not None  # checked when the drills were installed
        return [own if index == self.index else self.train(base, round_number, self.data_of(index), index)
                for index in range(self.num_participants)]


def drilled(train_fn: TrainFn, drills: Sequence[Drill], training: LocalTraining) -> TrainFn:
    """`train_fn` with this participant's drills around it: installed only when configured,
    never a branch in the training path itself. An attack that trains itself (label_flip on
    its poisoned data, alie as every participant) trains as `training` says."""
    for drill in drills:
        if drill.attack is not None and drill.attack.poisons_data:
            check_poisonable(training.task, type(training.task).__name__)
        if drill.attack is not None and drill.attack.needs_honest and training.data_of is None:
            raise UsageError(ONLY_SIMULATED.format(kind=drill.kind))

    def train_with_drills(base: Mapping[str, np.ndarray], ticket: Ticket) -> Trained:
        drill = next((d for d in drills if d.hits(ticket.round, ticket.attempt)), None)
        if drill is not None and drill.kind == "crash":
            raise DrillFailure(f"drill: participant {training.index} crashed in round {ticket.round}")
        if drill is not None and drill.kind == "hang":
            time.sleep(drill.seconds)
        if drill is not None and drill.attack is not None:
            return _attacked(drill.attack, train_fn, base, ticket, training)
        trained = train_fn(base, ticket)
        if drill is not None and drill.kind == "nan":
            return replace(trained, tensors=poison(trained.tensors))
        return trained

    return train_with_drills


def _attacked(attack: Attack, train_fn: TrainFn, base: Mapping[str, np.ndarray], ticket: Ticket,
              training: LocalTraining) -> Trained:
    """What an attacker commits: its honest update transformed (after honest training on
    poisoned data, for label_flip; with every honest update of the round, for alie)."""
    if attack.poisons_data:
        data = attack.poison(training.own_data(), attack_seed(training.seed, training.index))
        return attack.apply(training.train(base, ticket.round, data), base)
    trained = train_fn(base, ticket)
    honest = training.everyone(base, ticket.round, trained) if attack.needs_honest else ()
    return attack.apply(trained, base, honest=honest, seed=attack_seed(training.seed, training.index, ticket.round))


def poison(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The update a `nan` drill commits: the first tensor's first value is NaN."""
    first = next(iter(weights))
    poisoned = weights[first].astype(weights[first].dtype, copy=True)
    poisoned.flat[0] = np.nan
    return {**weights, first: poisoned}


def _overlap(one: Drill, other: Drill) -> bool:
    """Whether two drills can hit the same attempt of the same round."""
    if one.attack is None and other.attack is None:
        return (one.round, one.attempt) == (other.round, other.attempt)
    return None in (one.round, other.round) or one.round == other.round


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)

"""Attacks a participant can mount on a round, as pure transformations of its honest update.

Each takes what the participant honestly trained (`Trained`) from the round's base model
and returns what the attacker commits instead; `alie` also sees every participant's honest
update of the round. Attack drills (fl_chain/drills.py) install them around a participant's
training in a real run; the robustness benchmark calls the same functions in-process.

- `sign_flip`: base - (trained - base), the update reversed;
- `scale` (`factor`, default 50): base + factor * (trained - base), a model replacement
  (Bagdasaryan et al. 2020, "How To Backdoor Federated Learning");
- `noise` (`sigma` > 0): trained + Gaussian noise of standard deviation sigma, drawn from
  `attack_seed` (the same run, round and participant give the same bytes);
- `label_flip` (`rate` in (0, 1], default 1): data poisoning. A seeded `rate` share of the
  participant's training labels y becomes num_classes - 1 - y (`flip_labels`; the middle
  class of an odd count maps to itself), the same labels every round, and the update is
  honest training on that data. Built-in classification tasks only (`check_poisonable`);
- `alie` (`z`): "A Little Is Enough" (Baruch et al. 2019, NeurIPS). Every colluder sends
  the same vector, the coordinate-wise mean - z * std (population std) of the round's
  honest updates: far enough to pull the mean, close enough to pass as honest to a robust
  rule. Default z from the paper (`alie_z`): s = floor(n/2 + 1) - m, z = Phi^-1((n - s)/n)
  for m attackers among n participants. The attacker here is omniscient: it knows every
  participant's honest update exactly, not an estimate from its colluders' data, which is
  the worst case for a defence;
- `inflate` (`examples`, default 10^9): claims that many examples for its honest weights
  (the example cap each member is admitted with, enforced on chain, is the defence);
- `free_ride`: sends the base model back unchanged, claiming its honest example count.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from fl_chain.errors import UsageError
from fl_chain.floatbits import finite
from fl_chain.seeding import derive_seed
from fl_chain.task import Task, Trained, Weights

if TYPE_CHECKING:
    from fl_chain.tasks.supervised import ArrayData

# each kind and the parameters it takes; their defaults are Attack's
ATTACKS: dict[str, tuple[str, ...]] = {
    "sign_flip": (), "scale": ("factor",), "noise": ("sigma",), "label_flip": ("rate",), "alie": ("z",),
    "inflate": ("examples",), "free_ride": (),
}
MAX_EXAMPLES = 2**64 - 1  # what a commitment can hold (uint64)
ATTACKER_CHOICE = 0xA7  # derive_seed label of the attackers a fraction picks
ATTACK_DRAWS = 0xA77AC  # and of an attack's own draws (apart from its training's)


@dataclass(frozen=True)
class Attack:
    """One attack and its parameters; only those `ATTACKS[kind]` names apply, each checked
    when it is made. `parse` reads them from a config entry; alie's default z depends on
    the run (`alie_z`), so `parse` fills it in (made directly, an alie attack needs z)."""

    kind: str
    factor: float = 50.0
    sigma: float = 0.0
    rate: float = 1.0
    z: float | None = None
    examples: int = 10**9

    @classmethod
    def parse(cls, kind: str, given: Mapping[str, Any], *, participants: int, attackers: int) -> Attack:
        """The attack `kind` with the parameters `given` (a config entry's), for a run of
        `participants` of which `attackers` mount it; a bad value is a one-line UsageError."""
        wrong = sorted(set(given) - set(_parameters_of(kind)))
        if wrong:
            raise UsageError(f"the {kind} attack takes {_listed(ATTACKS[kind])}, not {', '.join(wrong)}")
        values = {name: _number(kind, name, value) for name, value in given.items()}
        if kind == "noise" and "sigma" not in values:
            raise UsageError("the noise attack needs sigma, the noise's standard deviation (sigma > 0)")
        if kind == "alie" and "z" not in values:
            values["z"] = alie_z(participants, attackers)
        return cls(kind, **values)

    def __post_init__(self) -> None:
        _parameters_of(self.kind)
        if not math.isfinite(self.factor):
            raise UsageError(f"the scale attack's factor must be a finite number, got {self.factor}")
        if self.kind == "noise" and not 0 < self.sigma < math.inf:
            raise UsageError(f"the noise attack's sigma must be a positive finite number, got {self.sigma}")
        if not 0 < self.rate <= 1:
            raise UsageError(f"the label_flip attack's rate must be in (0, 1], got {self.rate}")
        if self.kind == "alie" and (self.z is None or not math.isfinite(self.z)):
            raise UsageError(f"the alie attack's z must be a finite number (alie_z gives the paper's), got {self.z}")
        if not 1 <= self.examples <= MAX_EXAMPLES:
            raise UsageError(f"the inflate attack's examples must be from 1 to {MAX_EXAMPLES}, got {self.examples}")

    @property
    def parameters(self) -> dict[str, float]:
        """The parameters its kind takes, by name (what summary.json records)."""
        return {name: getattr(self, name) for name in ATTACKS[self.kind]}

    @property
    def poisons_data(self) -> bool:
        """It changes the data the participant trains on (`poison`), not the update."""
        return self.kind == "label_flip"

    @property
    def needs_honest(self) -> bool:
        """It needs every participant's honest update of the round (`apply(honest=...)`)."""
        return self.kind == "alie"

    def poison(self, data: ArrayData, seed: int) -> ArrayData:
        """The participant's data as the attacker trains on it (unchanged but for label_flip)."""
        return flip_labels(data, self.rate, seed) if self.poisons_data else data

    def apply(self, trained: Trained, base: Weights, *, honest: Sequence[Trained] = (), seed: int = 0) -> Trained:
        """What the attacker commits instead of `trained`, its honest result from `base`.
        `honest` is every participant's honest update of the round (alie only); `seed` is
        noise's stream (`attack_seed`)."""
        if self.kind == "sign_flip":
            return replace(trained, tensors=_moved(trained, base, -1.0))
        if self.kind == "scale":
            return replace(trained, tensors=_moved(trained, base, self.factor))
        if self.kind == "noise":
            rng = np.random.default_rng(seed)
            return replace(trained, tensors={name: (t.astype(np.float64) + rng.normal(0.0, self.sigma, t.shape))
                                             .astype(t.dtype) for name, t in trained.tensors.items()})
        if self.kind == "alie":
            if not honest or self.z is None:
                raise ValueError("an alie attack needs the round's honest updates")
            return replace(trained, tensors=little_is_enough(honest, self.z))
        if self.kind == "inflate":
            return replace(trained, examples=self.examples)
        if self.kind == "free_ride":
            return replace(trained, tensors={name: np.array(base[name], dtype=t.dtype, copy=True)
                                             for name, t in trained.tensors.items()})
        return trained  # label_flip: honest training on poisoned data


def alie_z(participants: int, attackers: int) -> float:
    """The paper's z for `attackers` (m) of `participants` (n): s = floor(n/2 + 1) - m
    honest participants the attackers need on their side, z = Phi^-1((n - s) / n)."""
    needed = math.floor(participants / 2 + 1) - attackers
    if needed < 1:
        raise UsageError(f"alie's default z needs the attackers to be at most half of the participants ({attackers} "
                         f"of {participants} are not): give z")
    return statistics.NormalDist().inv_cdf((participants - needed) / participants)


def little_is_enough(honest: Sequence[Trained], z: float) -> dict[str, np.ndarray]:
    """The colluders' common vector: per coordinate, mean - z * std of the honest updates."""
    first = honest[0].tensors
    tensors = {}
    for name, tensor in first.items():
        stacked = np.stack([h.tensors[name].astype(np.float64) for h in honest])
        tensors[name] = (stacked.mean(axis=0) - z * stacked.std(axis=0)).astype(tensor.dtype)
    return tensors


def flip_labels(data: ArrayData, rate: float, seed: int) -> ArrayData:
    """`data` with round(rate * n) of its n training labels, chosen from `seed`, turned into
    num_classes - 1 - y (a copy: the loaded data set is shared)."""
    labels = data.split.train_y
    chosen = np.random.default_rng(seed).choice(len(labels), size=round(rate * len(labels)), replace=False)
    flipped = labels.copy()
    flipped[chosen] = data.num_classes - 1 - labels[chosen]
    return replace(data, split=replace(data.split, train_y=flipped))


def check_poisonable(task: Task, label: str) -> None:
    """label_flip flips class indices: the task (named `label` in the error) must be a
    built-in classifier, a SupervisedTask with a Classification objective."""
    from fl_chain.tasks.objectives import Classification  # torch: only when a task is checked
    from fl_chain.tasks.supervised import SupervisedTask

    if not (isinstance(task, SupervisedTask) and isinstance(task.objective, Classification)):
        raise UsageError(f"a label_flip drill flips class labels, so it needs a built-in classification task; "
                         f"{label} is not one (its data is not class indices fl-chain can flip)")


def attack_seed(run_seed: int, index: int, round_number: int = 0) -> int:
    """The seed participant `index`'s attack draws from in `round_number` (noise), or once
    per run (round 0: the labels label_flip flips); apart from its training's seed."""
    return derive_seed(run_seed, round_number, index, ATTACK_DRAWS)


def attackers_of(entry: Mapping[str, Any], num_participants: int, seed: int) -> tuple[int, ...]:
    """The participant indices a drill entry names, ascending: `participant` (an index or a
    list of them) or `fraction` (a seeded choice of round(fraction * n), at least 1: the
    same for every run of `seed`, and a smaller fraction's among a larger one's)."""
    shown = dict(entry)
    if ("participant" in entry) == ("fraction" in entry):
        raise UsageError(f"drill {shown} needs either participant (an index or a list of them) or fraction")
    if "fraction" in entry:
        fraction = entry["fraction"]
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
            raise UsageError(f"drill {shown}: fraction must be a share of the participants in (0, 1], "
                             f"got {fraction!r}")
        count = max(1, round(fraction * num_participants))
        order = np.random.default_rng(derive_seed(seed, ATTACKER_CHOICE)).permutation(num_participants)
        return tuple(sorted(int(index) for index in order[:count]))
    named = entry["participant"]
    indices = named if isinstance(named, list) else [named]
    if not indices or not all(isinstance(i, int) and not isinstance(i, bool) for i in indices):
        raise UsageError(f"drill {shown}: participant must be an index or a non-empty list of them, got {named!r}")
    outside = [i for i in indices if not 0 <= i < num_participants]
    if outside:
        raise UsageError(f"drill {shown} names participant {outside[0]}, not one of this run's 0..{num_participants - 1}")
    if len(set(indices)) != len(indices):
        raise UsageError(f"drill {shown} names a participant twice")
    return tuple(sorted(indices))


def _moved(trained: Trained, base: Weights, factor: float) -> dict[str, np.ndarray]:
    """base + factor * (trained - base), in float64, back in each tensor's type."""
    return {name: (base[name].astype(np.float64) + factor * (t.astype(np.float64) - base[name].astype(np.float64)))
            .astype(t.dtype) for name, t in trained.tensors.items()}


def _parameters_of(kind: str) -> tuple[str, ...]:
    if kind not in ATTACKS:
        raise UsageError(f"attack kind {kind!r} is not one of {tuple(ATTACKS)}")
    return ATTACKS[kind]


def _number(kind: str, name: str, value: object) -> float | int:
    """A parameter's value as its type: examples an integer, the others any number."""
    whole = name == "examples"
    number = value if whole and isinstance(value, int) and not isinstance(value, bool) else finite(value)
    if number is None or (whole and not isinstance(value, int)):
        raise UsageError(f"the {kind} attack's {name} must be {'an integer' if whole else 'a finite number'}, "
                         f"got {value!r}")
    return number


def _listed(names: Sequence[str]) -> str:
    return ", ".join(names) if names else "no parameters"

"""What every participant must agree on for a run, sent to each ClientApp once per run.

`experiment` is the run's config without its `chain` and `storage` groups: what is trained
and how. Its hash is the federation's task hash on chain, and a participant trains with
nothing else: it checks the hash before it touches its data, so an aggregator cannot ask a
site to train with settings (a learning rate, a number of epochs) the consortium did not
deploy. The rest says where the chain and the store are; in a simulation, also where the
run's secret keys are (a deployed site has its own, named by its SuperNode).

The aggregator sends them with its greeting, and again only when they change (deployed
sites' data summaries) or to a node that did not acknowledge them; a node keeps them in
its Flower context for the rest of the run. `ship_blobs` is the one place that decides
whether blobs travel inside messages (fl_chain/blobs.py): both ends read it from here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from fl_chain.errors import UsageError
from fl_chain.jsonfiles import parse_json

OPTIMIZERS = ("sgd", "adam")
FIELD = "settings"  # the request field that carries RunSettings.to_json()


@dataclass(frozen=True)
class TrainingSettings:
    """Local training hyper-parameters for one round (mirrored by the task config).

    `momentum` applies to SGD only. Optimizer state starts fresh every round.
    """

    epochs: int
    batch_size: int
    learning_rate: float
    optimizer: str = "sgd"
    momentum: float = 0.0

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise UsageError(f"unknown optimizer {self.optimizer!r}; choose one of {OPTIMIZERS}")
        if not (1 <= self.epochs <= 10_000 and 1 <= self.batch_size <= 10_000_000):
            raise UsageError(
                f"epochs must be from 1 to 10000 and batch_size from 1 to 10000000, got {self.epochs} and "
                f"{self.batch_size}"
            )
        if not 0 < self.learning_rate < 1e6:
            raise UsageError(f"learning_rate must be positive (and below 1e6), got {self.learning_rate}")
        if not 0 <= self.momentum < 1:
            raise UsageError(f"momentum must be in [0, 1), got {self.momentum}")


@dataclass(frozen=True)
class RunSettings:
    experiment: dict[str, Any]
    chain_url: str
    contract: str
    store: dict[str, Any]  # the content store as every process opens it (fl_chain.storage.backends)
    keys_dir: str | None = None  # simulations: the run's keys/ (fl_chain/consortium.py)
    # deployments: every site's signed data summary, by address (fl_chain/data/preprocessing.py)
    summaries: dict[str, dict[str, str]] | None = None
    ship_blobs: bool = False  # deployments: every party keeps its own store, so blobs travel in messages

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> RunSettings:
        try:
            settings = cls(**parse_json(text))
        except (ValueError, TypeError) as error:
            raise UsageError(f"the run settings sent with the request are malformed: {error}") from None
        if not isinstance(settings.ship_blobs, bool):
            raise UsageError(f"the run settings sent with the request are malformed: ship_blobs is "
                             f"{settings.ship_blobs!r}, not true or false")
        return settings

    @property
    def seed(self) -> int:
        return int(self.experiment["seed"])

    @property
    def num_participants(self) -> int:
        return int(self.experiment["num_participants"])

    @property
    def num_validators(self) -> int:
        return int(self.experiment["num_validators"])

    @property
    def task(self) -> dict[str, Any]:
        return dict(self.experiment["task"])


"""A real federation for playing each role against: embedded chain, local store, real code.

Participants are `ParticipantRole`s whose task is a small least-squares regression in
NumPy (one gradient step on their own data per round), so a round takes a fraction of a
second; the coordinator is the one a Flower run drives, over the in-process transport.
An attacker is a responder that wraps an honest role and changes what it sends.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fl_chain import protocol
from fl_chain.chain.embedded import EmbeddedChain
from fl_chain.chain.federation import FederationParameters
from fl_chain.consortium import SimulatedConsortium
from fl_chain.inprocess import InProcessTransport, Responder
from fl_chain.messages import Ticket
from fl_chain.participant import Evaluated, ParticipantRole, Trained
from fl_chain.progress import Progress
from fl_chain.protocol import Federation
from fl_chain.round import RoundCoordinator, RoundPlan
from fl_chain.rules import AggregationRule, FedAvg
from fl_chain.runlog import RunLog
from fl_chain.storage.blockstore import LocalStore

PARTICIPANTS = 5
VALIDATORS = 3
QUICK = protocol.FetchRetries(attempts=2, first_delay=0.01, max_delay=0.01)


def genesis_model() -> dict[str, np.ndarray]:
    return {"b": np.zeros(1, np.float32), "w": np.zeros(3, np.float32)}


def local_data(index: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(100 + index)
    x = rng.normal(size=(20 + 5 * index, 3))
    return x, x @ np.array([1.0, -2.0, 0.5]) + 0.3 + rng.normal(scale=0.05, size=len(x))


def trainer(index: int):  # type: ignore[no-untyped-def]
    x, y = local_data(index)

    def train(base: Mapping[str, np.ndarray], ticket: Ticket) -> Trained:
        w, b = base["w"].astype(np.float64), base["b"].astype(np.float64)
        error = x @ w + b - y
        w, b = w - 0.3 * x.T @ error / len(y), b - 0.3 * error.mean(keepdims=True)
        return Trained({"b": b.astype(np.float32), "w": w.astype(np.float32)}, len(y), {"loss": float((error**2).mean())})

    def evaluate(model: Mapping[str, np.ndarray]) -> Evaluated:
        error = x @ model["w"] + model["b"] - y
        mse = float((error**2).mean())
        return Evaluated({"loss": mse, "accuracy": 1.0 / (1.0 + mse)}, len(y))

    return train, evaluate


@dataclass
class Cast:
    """A founded federation, its consortium and one honest role per participant."""

    federation: Federation
    consortium: SimulatedConsortium
    embedded: EmbeddedChain
    directory: Path
    roles: dict[str, ParticipantRole] = field(default_factory=dict)
    stream: io.StringIO = field(default_factory=io.StringIO)

    @property
    def ledger(self):  # type: ignore[no-untyped-def]
        return self.federation.ledger

    def participant(self, index: int):  # type: ignore[no-untyped-def]
        return self.consortium.participants[index]

    def address(self, index: int) -> str:
        return self.consortium.participants[index].address

    def coordinator(self, responders: Mapping[str, Responder] | None = None, rounds: int = 1,
                    max_attempts: int = 3, reply_timeout: float = 60.0) -> RoundCoordinator:
        answering = {**self.roles, **(responders or {})}
        plan = RoundPlan(rounds, self.ledger.parameters().quorum, 1.0, reply_timeout, seed=0,
                         max_attempts=max_attempts, fast_forward=True)
        run = self.directory / "run"
        run.mkdir(exist_ok=True)
        resume = (run / "metrics.csv").is_file()
        return RoundCoordinator(self.federation, self.consortium.aggregator, plan, InProcessTransport(answering),
                                RunLog(run, resume=resume), Progress(rounds, self.stream))

    @property
    def said(self) -> str:
        return self.stream.getvalue()


def found_cast(directory: Path, *, quorum: int = 3, threshold: int = 2, committee_size: int = 0,
               max_update_norm: float = 10.0, caps: list[int] | None = None, commit_grace: int = 0,
               rule: AggregationRule = FedAvg()) -> Cast:
    consortium = SimulatedConsortium.create(7, PARTICIPANTS, VALIDATORS, seed_accounts=True)
    embedded = EmbeddedChain.create(directory / "ledger", funded=consortium.transacting_addresses)
    store = LocalStore(directory / "store")
    genesis = protocol.publish_genesis_model(store, genesis_model())
    parameters = FederationParameters(b"\x01" * 32, rule.code, quorum, 600, threshold, committee_size, 1000,
                                      max_update_norm, commit_grace, rule.parameters)
    chain = embedded.connect()
    exact = caps or [len(local_data(i)[1]) for i in range(PARTICIPANTS)]
    federation = Federation(consortium.found(chain, parameters, genesis, exact), store)
    cast = Cast(federation, consortium, embedded, directory)
    for index, identity in enumerate(consortium.participants):
        train, evaluate = trainer(index)
        cast.roles[identity.address] = ParticipantRole(federation, lambda identity=identity: identity, train, evaluate)
    return cast


class Altered:
    """A participant that answers as the honest role would, then changes its records."""

    def __init__(self, honest: Responder, **changes: Any) -> None:
        self.honest, self.changes = honest, changes

    def train(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        records = self.honest.train(payload)
        change = self.changes.get("train")
        return change(records) if change else records

    def attest(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        change = self.changes.get("attest")
        return change(payload) if change else self.honest.attest(payload)

    def evaluate(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        records = self.honest.evaluate(payload)
        change = self.changes.get("evaluate")
        return change(records) if change else records

"""The on-chain strategy's aggregator half, on a real chain and store without Flower: a
commitment a participant sends itself while the others are aggregated makes finalize's
accounting refuse, and the strategy collects again instead of failing the round."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from test_protocol import found, model

from aggregator.strategy import OnChainStrategy, RoundPlan
from clients.settings import RunSettings
from fl_chain import protocol
from fl_chain.chain.federation import RoundStatus
from fl_chain.progress import Progress
from fl_chain.protocol import RoundTicket
from fl_chain.runlog import RunLog
from fl_chain.timing import Stopwatch


def test_a_commitment_that_arrives_while_aggregating_is_collected_again(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    federation, consortium = found(tmp_path)
    ticket = protocol.open_round(federation, consortium.aggregator, 1)
    base = protocol.fetch_global_model(federation, ticket)
    signed = [protocol.commit_update(federation, participant, ticket, {k: v + np.float32(i) for k, v in base.items()},
                                     examples=10)
              for i, participant in enumerate(consortium.participants)]
    protocol.relay(federation, consortium.aggregator, [signed[0], *signed[2:]])
    late = consortium.participants[1]  # a validator: it has a balance to send its own transaction

    collect = protocol.collect
    collections = []

    def collect_while_the_last_commits(*args, **kwargs):  # type: ignore[no-untyped-def]
        collections.append(collect(*args, **kwargs))
        if len(collections) == 1:  # the fourth participant commits with its own transaction meanwhile
            federation.ledger.commit(late.account, 1, signed[1].commitment.cid, 10)
        return collections[-1]

    monkeypatch.setattr(protocol, "collect", collect_while_the_last_commits)
    stream = io.StringIO()
    (tmp_path / "run").mkdir()
    settings = RunSettings(seed=7, num_participants=4, num_validators=2, chain_url="", contract=federation.address,
                           store={}, task={}, partition={}, proximal_mu=0.0)
    strategy = OnChainStrategy(federation, consortium.aggregator, settings, RoundPlan(1, 3, 1.0, 2, 60.0),
                               RunLog(tmp_path / "run"), Progress(1, stream))
    strategy._conclude(RoundTicket(1, ticket.attempt, ticket.base, ticket.deadline), Stopwatch())

    assert [len(c.updates) for c in collections] == [3, 4]
    state = federation.ledger.round(1)
    assert (state.status, state.commitments, state.included) == (RoundStatus.FINALIZED, 4, 4)
    assert "a commitment arrived while aggregating; collecting again" in stream.getvalue()
    assert model(0).keys() == protocol.load_model(federation.store, state.global_model).keys()

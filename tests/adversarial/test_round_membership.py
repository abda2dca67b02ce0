"""Who the round coordinator asks (fl_chain/round.py `_participants`).

Only active members with the participant role that the transport reaches are asked to
train or evaluate: a reached node that is no member, or a member the admin removed, is
never sampled (it could only fill the sample with refusals), and the round goes on.
"""

from __future__ import annotations

from collections.abc import Sequence

from adversarial.cast import Cast
from fl_chain.chain.federation import RoundStatus
from fl_chain.inprocess import InProcessTransport
from fl_chain.transport import EVALUATE, TRAIN, Reply, Request

STRANGER = "0x" + "5a" * 20


class Recording(InProcessTransport):
    def __init__(self, inner: InProcessTransport) -> None:
        super().__init__(inner.responders)
        self.asked: list[tuple[str, str]] = []

    def send(self, requests: Sequence[Request], timeout: float) -> list[Reply]:
        self.asked += [(request.participant, request.kind) for request in requests]
        return super().send(requests, timeout)


def test_only_active_participants_are_asked_to_train_or_evaluate(cast: Cast) -> None:
    removed = cast.address(4)
    cast.ledger.remove_member(cast.consortium.admin.account, removed)
    stranger = cast.roles[cast.address(3)]  # answers as someone else would: it must never be asked
    coordinator = cast.coordinator({STRANGER: stranger}, rounds=1)
    transport = Recording(coordinator.transport)  # type: ignore[arg-type]
    coordinator.transport = transport
    coordinator.run()
    assert cast.ledger.round(1).status == RoundStatus.ACCEPTED
    asked = {who for who, kind in transport.asked if kind in (TRAIN, EVALUATE)}
    assert STRANGER not in asked and removed not in asked
    assert asked == {cast.address(i) for i in range(4)}

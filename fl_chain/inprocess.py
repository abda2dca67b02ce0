"""A transport of direct calls: the coordinator's requests answered by objects in this process.

Tests, benchmarks and anyone driving a federation by hand get the same coordinator and the
same participant code as a Flower run, without starting Flower. A responder is anything
with `train`, `attest` and `evaluate` methods taking the request's payload and returning
its records (`fl_chain.participant.ParticipantRole`, or a wrapper that misbehaves). A
responder that raises answers with the error's last line, as a failed ClientApp does; one
that takes longer than the timeout is treated as not having answered.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from fl_chain.transport import Reply, Request


class Responder(Protocol):
    def train(self, payload: Mapping[str, Any]) -> dict[str, Any]: ...

    def attest(self, payload: Mapping[str, Any]) -> dict[str, Any]: ...

    def evaluate(self, payload: Mapping[str, Any]) -> dict[str, Any]: ...


class InProcessTransport:
    def __init__(self, responders: Mapping[str, Responder]) -> None:
        self.responders = dict(responders)

    def participants(self) -> list[str]:
        return list(self.responders)

    def send(self, requests: Sequence[Request], timeout: float) -> list[Reply]:
        return [self._answer(request, timeout) for request in requests]

    def _answer(self, request: Request, timeout: float) -> Reply:
        responder = self.responders.get(request.participant)
        if responder is None:
            return Reply(request.participant, request.kind, error="not reachable")
        started = time.monotonic()
        try:
            content = getattr(responder, request.kind)(dict(request.payload))
        except Exception as error:  # noqa: BLE001 - any failure of a participant is its reply, as in Flower
            lines = str(error).strip().splitlines()
            reason = lines[-1] if lines else type(error).__name__
            return Reply(request.participant, request.kind, error=f"failed to {request.kind}: {reason}")
        if time.monotonic() - started > timeout:
            return Reply(request.participant, request.kind, error=f"no reply within {timeout:g} s")
        return Reply(request.participant, request.kind, content)

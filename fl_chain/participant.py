"""What a participant (and, if it validates, a validator) does with each request, without Flower.

A participant trusts no request: the round it is asked to train must be open on chain on
the announced model, an attestation is of the chain's finalized attempt as the validator
judges it itself, and a model to evaluate must be the one the chain finalized. Training and
evaluation are the task's (`train` and `evaluate` callables); everything else is here, so
the ClientApp and the in-process transport run the same code.

A participant does not depend on the aggregator relaying its commitment: if it is not on
chain shortly before the federation's commit grace ends (seconds after the round opened,
`FederationParameters.commit_grace`), it sends it with its own transaction
(`commit_unless_relayed`). The contract finalizes no attempt before that grace ends unless
every participant committed, and lets nothing committed within it be called late, so a
receipt the aggregator swallows still has to be accounted for.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from eth_account.signers.local import LocalAccount

from fl_chain import protocol
from fl_chain.chain.commitment import SignedCommitment
from fl_chain.chain.federation import RoundStatus
from fl_chain.chain.ledger import Ledger
from fl_chain.errors import FlChainError
from fl_chain.identity import Identity
from fl_chain.messages import AttestationReport, Evaluation, Receipt, Ticket, read_cid, read_int
from fl_chain.protocol import Federation, ProtocolError
from fl_chain.task import Evaluated, Trained
from fl_chain.timing import Stopwatch

Tensors = Mapping[str, np.ndarray]
DEADLINE_MARGIN = 5  # seconds before the deadline by which a participant's own commitment is sent
WATCH_POLL = 1.0


TrainFn = Callable[[Tensors, Ticket], Trained]
EvaluateFn = Callable[[Tensors], Evaluated]
Watcher = Callable[[SignedCommitment], None]


@dataclass
class ParticipantRole:
    """One member's side of the protocol. `identity` is called when a key is first needed
    (a deployed keystore takes a moment to unlock); `watch` is how it keeps an eye on its
    own commitment after replying (a thread here, a separate process in a deployment)."""

    federation: Federation
    identity: Callable[[], Identity]
    train_fn: TrainFn
    evaluate_fn: EvaluateFn
    watch: Watcher | None = None
    # what it answered for each (round, attempt): asked again (a flood, or a retry), it
    # answers the same without training, storing or watching again (a deployed site keeps
    # it on disk: its ClientApp lives for one message)
    answered: MutableMapping[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    evaluated: dict[tuple[int, str], dict[str, Any]] = field(default_factory=dict)  # by (round, model)
    # the round's recipients, for a process playing many participants that reads them once
    # (they are the chain's as of the round's opening block: the same for every participant)
    recipients: Callable[[Ticket], Sequence[bytes]] | None = None

    def train(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Fetch the announced model (checked against the chain), train, seal, store, sign."""
        ticket = Ticket.from_record(payload)
        if (ticket.round, ticket.attempt) in self.answered:
            return self.answered[(ticket.round, ticket.attempt)]
        stopwatch = Stopwatch()
        with stopwatch("fetch"):
            base = protocol.fetch_global_model(self.federation, ticket)
        with stopwatch("train"):
            trained = self.train_fn(base, ticket)
        recipients = self.recipients(ticket) if self.recipients is not None else None
        signed = protocol.commit_update(self.federation, self.identity(), ticket, trained.tensors, trained.examples,
                                        stopwatch, recipients)
        if self.watch is not None:
            self.watch(signed)
        size = self.federation.store.declared_size(signed.commitment.cid)
        metrics = {**trained.metrics, "examples": float(trained.examples), "bytes": float(size),
                   **{f"seconds_{stage}": seconds for stage, seconds in stopwatch.seconds.items()}}
        records = {"receipt": Receipt(signed).to_record(), "metrics": metrics}
        for earlier in [key for key in self.answered if key[0] < ticket.round]:
            del self.answered[earlier]
        self.answered[(ticket.round, ticket.attempt)] = records
        return records

    def attest(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Judge the chain's finalized attempt with this validator's own key and attest what it
        finds (once: asked again, it says it already did, without judging again)."""
        round_number = read_int(payload, "round", "the attestation request", 1)
        start = time.perf_counter()
        identity = self.identity()
        if self.federation.ledger.has_attested(round_number, identity.address):
            return {"attestation": AttestationReport(identity.address, None).to_record(), "metrics": {}}
        judgement = protocol.judge(self.federation, identity, round_number)
        gas = protocol.attest(self.federation, identity, round_number, judgement.model)
        metrics = {"gas": float(gas), "seconds_attest": time.perf_counter() - start}
        report = AttestationReport(identity.address, judgement.model, "; ".join(judgement.disputes)[:4096])
        return {"attestation": report.to_record(), "metrics": metrics}

    def evaluate(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Score the round's finalized model (checked against the chain) on the local test split, signed."""
        what = "the evaluation request"
        round_number, announced = read_int(payload, "round", what, 1), read_cid(payload, "model", what)
        start = time.perf_counter()
        state = self.federation.ledger.round(round_number)
        if announced != state.global_model:
            raise ProtocolError(f"asked to evaluate {announced}, but round {round_number} finalized "
                                f"{state.global_model}")
        if (round_number, str(announced)) in self.evaluated:
            return self.evaluated[(round_number, str(announced))]
        base = protocol.load_model(self.federation.store, state.base)
        evaluated = self.evaluate_fn(protocol.load_model(self.federation.store, announced, protocol.model_cap(base)))
        evaluation = Evaluation.sign(self.identity().account, self.federation.address, self.federation.chain_id,
                                     round_number, announced, evaluated.metrics, evaluated.examples)
        records = {"evaluation": evaluation.to_record(), "metrics": {"seconds_evaluate": time.perf_counter() - start}}
        self.evaluated = {key: value for key, value in self.evaluated.items() if key[0] >= round_number}
        self.evaluated[(round_number, str(announced))] = records
        return records


def commit_unless_relayed(ledger: Ledger, participant: LocalAccount, signed: SignedCommitment,
                          poll: float = WATCH_POLL) -> bool:
    """Waits until shortly before the commit grace of the commitment's round ends (or its
    deadline, for a federation without one) for the commitment to appear on chain; if it
    has not, sends it with the participant's own transaction. Returns whether it did."""
    commitment = signed.commitment
    parameters = ledger.parameters()
    state = ledger.round(commitment.round)
    opened = state.deadline - parameters.round_duration
    grace = parameters.commit_grace
    send_at = opened + grace - min(DEADLINE_MARGIN, grace / 3) if grace else state.deadline - DEADLINE_MARGIN
    while True:
        state = ledger.round(commitment.round)
        if (state.status != RoundStatus.OPEN or state.attempt != commitment.attempt
                or commitment.participant in ledger.committed(commitment.round)):
            return False
        now = max(int(ledger.chain.web3.eth.get_block("latest")["timestamp"]), int(time.time()))
        if now >= send_at:
            break
        time.sleep(min(poll, send_at - now))
    ledger.commit(participant, commitment.round, commitment.cid, commitment.examples)
    return True


def watch_in_thread(federation: Federation, identity: Callable[[], Identity]) -> Watcher:
    """A watcher for processes that outlive the reply (a simulation's participants): a
    daemon thread per commitment; a chain gone away (the run ended) ends it quietly."""

    def watch(signed: SignedCommitment) -> None:
        def run() -> None:
            try:
                commit_unless_relayed(federation.ledger, identity().account, signed)
            except FlChainError:
                pass  # the round moved on or the chain is gone: nothing left to commit to

        threading.Thread(target=run, name=f"commit-watch-{signed.commitment.round}", daemon=True).start()

    return watch

"""The on-chain strategy: Flower's Grid as the transport of fl-chain's round coordinator.

FedAvg: McMahan et al. 2017, "Communication-Efficient Learning of Deep Networks from
Decentralized Data". FedProx: Li et al. 2020, "Federated Optimization in Heterogeneous
Networks" (the proximal term lives in the participants' local training).

The round itself (open, train, relay, quorum, collect, aggregate, finalize, attest,
evaluate, fail and retry, resume) is `fl_chain.round.RoundCoordinator`; this module only
carries its requests over Flower. Flower's node ids are random, so each node first proves
which member it speaks for (a greeting signed with that member's account over a fresh
challenge); the Flower replies only carry receipts, attestations and evaluations, and the
coordinator checks every one of them against the chain.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterable, Sequence

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy

from aggregator.drill import KillDrill
from fl_chain import blobs
from fl_chain.chain.federation import Role
from fl_chain.data.preprocessing import SignedSummary
from fl_chain.errors import FlChainError, UsageError
from fl_chain.identity import Identity
from fl_chain.messages import Greeting, MalformedMessage
from fl_chain.progress import Progress
from fl_chain.protocol import Federation, ProtocolError
from fl_chain.round import RoundCoordinator, RoundPlan
from fl_chain.runlog import RunLog
from fl_chain.settings import FIELD as SETTINGS
from fl_chain.settings import RunSettings
from fl_chain.storage.cid import Cid
from fl_chain.transport import ATTEST, EVALUATE, TRAIN, Reply, Request

GREETING_TIMEOUT = 120.0  # seconds participants get to start and say who they are
MESSAGE_TYPES = {TRAIN: MessageType.TRAIN, ATTEST: MessageType.QUERY + ".attest", EVALUATE: MessageType.EVALUATE}
KINDS = {message_type: kind for kind, message_type in MESSAGE_TYPES.items()}


class GridTransport:
    """The coordinator's requests as Flower messages to the nodes that proved who they are.

    The run settings go to a node once: with the greeting, then again only if they change
    or the node did not acknowledge them (a reply without error does; after an error they
    go with the next request). With the settings'
    `ship_blobs` (a deployment: every party keeps its own content store) the blobs a
    request needs travel with it, and a sealed update travels back with its receipt; each
    is stored only under the CID it hashes to (fl_chain/blobs.py)."""

    def __init__(self, grid: Grid, federation: Federation, settings: RunSettings, progress: Progress) -> None:
        self.grid = grid
        self.federation = federation
        self.progress = progress
        self.nodes: dict[str, int] = {}  # participant address -> Flower node id
        self._addresses: dict[int, str] = {}
        self._informed: set[int] = set()  # nodes that acknowledged the current settings
        self.settings = settings

    @property
    def settings(self) -> RunSettings:
        return self._settings

    @settings.setter
    def settings(self, settings: RunSettings) -> None:
        self._settings = settings
        self._informed.clear()

    def participants(self) -> list[str]:
        return list(self.nodes)

    # ------------------------------------------------------------ greeting

    def greet(self, expected: int, timeout: float) -> dict[str, SignedSummary]:
        """Learns which node is which member: each signs a fresh challenge with its account.
        A node that cannot prove a membership is left out; all `expected` must be found.
        Returns what deployed sites said of their data (signed), by address."""
        deadline = time.monotonic() + timeout
        while len(list(self.grid.get_node_ids())) < expected:
            if time.monotonic() > deadline:
                raise ProtocolError(f"only {len(list(self.grid.get_node_ids()))} of {expected} participants connected")
            time.sleep(0.1)
        challenge = os.urandom(16)
        hello = ConfigRecord({SETTINGS: self.settings.to_json(), "challenge": challenge.hex()})
        messages = [Message(RecordDict({"config": hello}), dst_node_id=node, message_type=MessageType.QUERY + ".hello")
                    for node in self.grid.get_node_ids()]
        summaries: dict[str, SignedSummary] = {}
        for reply in self.grid.send_and_receive(messages, timeout=timeout):
            node = reply.metadata.src_node_id
            if reply.has_error():
                raise ProtocolError(f"a participant could not start: {last_line(reply.error.reason)}")
            try:
                address = self._admit(node, reply, challenge)
            except (MalformedMessage, ProtocolError) as refused:
                self.progress.note(f"node {node} is left out: {refused}")
                continue
            self._informed.add(node)
            if "data" in reply.content:
                try:
                    summaries[address] = SignedSummary.from_record(dict(reply.content["data"]), address,
                                                                   self.federation.address, self.federation.chain_id)
                except (MalformedMessage, ProtocolError) as refused:
                    raise ProtocolError(f"participant {address} described its data unusably: {refused}") from None
        if len(self.nodes) < expected:
            raise ProtocolError(f"only {len(self.nodes)} of {expected} participants proved their membership within "
                                f"{timeout:g} s")
        return summaries

    def _admit(self, node: int, reply: Message, challenge: bytes) -> str:
        record = dict(reply.content["greeting"]) if "greeting" in reply.content else None
        greeting = Greeting.from_record(record, federation=self.federation.address,
                                        chain_id=self.federation.chain_id, node=node, challenge=challenge)
        member = self.federation.ledger.member(greeting.address)
        if not member.active or Role.PARTICIPANT not in member.roles:
            raise ProtocolError(f"it speaks for {greeting.address}, which is not an active participant")
        if greeting.address in self.nodes:
            raise ProtocolError(f"node {self.nodes[greeting.address]} already speaks for {greeting.address}")
        self.nodes[greeting.address] = node
        self._addresses[node] = greeting.address
        return greeting.address

    # ------------------------------------------------------------ requests

    def send(self, requests: Sequence[Request], timeout: float) -> list[Reply]:
        messages = [self._message(request) for request in requests if request.participant in self.nodes]
        answered: dict[tuple[str, str], Reply] = {}
        for message in self.grid.send_and_receive(messages, timeout=timeout):
            address = self._addresses.get(message.metadata.src_node_id)
            kind = KINDS.get(message.metadata.message_type)
            if address is not None and kind is not None:
                answered[(address, kind)] = self._reply(address, kind, message)
                if message.has_error():  # it may have lost them (a SuperNode restarted keeps its id)
                    self._informed.discard(message.metadata.src_node_id)
                else:
                    self._informed.add(message.metadata.src_node_id)
        return [answered.get((r.participant, r.kind)) or Reply(r.participant, r.kind, error=f"no reply within {timeout:g} s")
                for r in requests]

    def _message(self, request: Request) -> Message:
        node = self.nodes[request.participant]
        settings = {} if node in self._informed else {SETTINGS: self.settings.to_json()}
        records: dict[str, ConfigRecord] = {"config": ConfigRecord({**request.payload, **settings})}
        if self.settings.ship_blobs and request.carried:
            records[blobs.RECORD] = ConfigRecord(blobs.pack(self.federation.store, request.carried))
        return Message(RecordDict(records), dst_node_id=node, message_type=MESSAGE_TYPES[request.kind])

    def _reply(self, address: str, kind: str, message: Message) -> Reply:
        if message.has_error():
            return Reply(address, kind, error=f"failed to {kind}: {last_line(message.error.reason)}")
        if self.settings.ship_blobs and blobs.RECORD in message.content:  # the sealed update its receipt names, into our store
            receipt = message.content.get("receipt")
            try:
                wanted = {Cid.parse(str(receipt["cid"]))} if receipt is not None and "cid" in receipt else set()
                blobs.unpack(self.federation.store, message.content[blobs.RECORD], wanted)
            except FlChainError as refused:
                return Reply(address, kind, error=str(refused))
        content = {name: dict(record.items()) for name, record in message.content.items() if name != blobs.RECORD}
        return Reply(address, kind, content)


NOT_WRAPPABLE = ("OnChainStrategy runs its rounds itself (its start() drives fl-chain's round coordinator on "
                 "chain); a Flower strategy wrapped around it, such as DifferentialPrivacyServerSideFixedClipping, "
                 "would drive per-round hooks it does not have and train nothing. Call its start() directly; the "
                 "aggregation rule is the federation's and privacy is fl-chain's privacy mode")


class OnChainStrategy(Strategy):
    """Runs fl-chain's round coordinator over the Grid Flower hands the ServerApp."""

    def __init__(self, federation: Federation, aggregator: Identity, settings: RunSettings, plan: RoundPlan,
                 runlog: RunLog, progress: Progress, drill: KillDrill | None = None) -> None:
        self.federation = federation
        self.aggregator = aggregator
        self.settings = settings
        self.plan = plan
        self.runlog = runlog
        self.progress = progress
        self.drill = drill

    def start(self, grid: Grid, initial_arrays: ArrayRecord | None = None, num_rounds: int = 0,
              timeout: float = 0, **_unused: object) -> Result:
        transport = GridTransport(grid, self.federation, self.settings, self.progress)
        summaries = transport.greet(self.settings.num_participants, max(self.plan.reply_timeout, GREETING_TIMEOUT))
        if summaries:
            self._agree_on_preprocessing(transport, summaries)
        checkpoint = (lambda r, point: self.drill.check(r, point, self.progress)) if self.drill else None
        RoundCoordinator(self.federation, self.aggregator, self.plan, transport, self.runlog, self.progress,
                         checkpoint).run()
        return Result()

    def _agree_on_preprocessing(self, transport: GridTransport, summaries: dict[str, SignedSummary]) -> None:
        """Deployed sites each hold their own table: every site gets every site's signed
        summary and combines them itself into the features, classes and standardization."""
        missing = sorted(set(transport.nodes) - set(summaries))
        if missing:
            raise ProtocolError(f"participants {missing} did not describe their data, the others did")
        signed = {address: summaries[address].to_record() for address in sorted(summaries)}
        self.settings = dataclasses.replace(self.settings, summaries=signed)
        transport.settings = self.settings
        shared = SignedSummary.combine(summaries)
        self.progress.note(f"{len(summaries)} sites agreed on {len(shared.feature_names)} features and "
                           f"{len(shared.classes)} classes, scaled with federated statistics")

    # ------------------------------------------------------------ Flower's strategy hooks

    # Flower's per-round hooks are what a wrapping strategy (its differential-privacy ones,
    # for instance) drives from its own `start`. fl-chain's rounds are its coordinator's, on
    # chain: a wrapper would run rounds that train nothing, so each hook refuses, naming why.

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        raise UsageError(NOT_WRAPPABLE)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        raise UsageError(NOT_WRAPPABLE)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        raise UsageError(NOT_WRAPPABLE)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        raise UsageError(NOT_WRAPPABLE)

    def summary(self) -> None:
        """Flower calls this to log the strategy; the run's summary.json says more."""


def last_line(reason: str) -> str:
    """What went wrong, without the transport's traceback: Flower's simulation wraps a
    ClientApp's exception in Ray's, ending in `Message: <the error>'>`."""
    message = reason.rpartition("Message: ")[2] if "Message: " in reason else reason
    lines = [line.strip() for line in message.strip().rstrip("'>").splitlines() if line.strip()]
    return lines[-1] if lines else reason.strip()



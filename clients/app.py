"""The Flower ClientApp: a participant (and, for some, a validator) of the federation.

A thin adapter: Flower carries requests in and records out; what a participant does with
them is `fl_chain.participant.ParticipantRole`, against the chain and the content store.
In a simulation model weights never travel in Flower messages, only CIDs; in a
deployment each organization has its own store, so blobs travel with the messages and are
checked against their CIDs (fl_chain/blobs.py). Who this node is, where its data is and
which store it keeps comes from clients/node.py, which also refuses run settings whose
hash is not the federation's task hash.

Message types:
- `query.hello`: prove which member this node speaks for (a signature over the
  aggregator's challenge) and, in a deployment, sign what the other sites need of its
  table to preprocess alike (fl_chain/data/preprocessing.py);
- `train`: fetch the round's model by CID, check it against the chain, train, seal,
  store, sign; reply with the receipt (and, if it is not relayed in time, commit it itself);
- `query.attest`: judge a finalized round from chain and store, attest on chain;
- `evaluate`: score a round's finalized model (checked against the chain) on the local
  test split, signed, while validators attest it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clients.node import Node, resolve_node
from fl_chain import blobs
from fl_chain.data.preprocessing import SignedSummary
from fl_chain.errors import UsageError
from fl_chain.messages import Greeting, read_hex
from fl_chain.settings import FIELD as SETTINGS
from fl_chain.storage.cid import Cid

app = ClientApp()


def _node_of(message: Message, context: Context) -> Node:
    """This node's participant; the blobs the message carries that the chain names for
    this request go into its store first (any other is dropped)."""
    node = resolve_node(_settings_of(message, context), context.node_config)
    if blobs.RECORD in message.content:
        blobs.unpack(node.federation.store, message.content[blobs.RECORD], _named(node, message))
    return node


def _settings_of(message: Message, context: Context) -> str:
    """The run settings: the aggregator sends them once (and when they change); the node
    keeps them in its context, which Flower holds for the rest of the run."""
    config = message.content["config"]
    if SETTINGS in config:
        text = str(config[SETTINGS])
        context.state[SETTINGS] = ConfigRecord({SETTINGS: text})
        return text
    if SETTINGS in context.state:
        return str(context.state[SETTINGS][SETTINGS])
    raise UsageError("the aggregator has not sent this node the run settings (they come with its greeting)")


def _named(node: Node, message: Message) -> set[Cid]:
    """The CIDs the chain names for what this message asks: the round's base (train), the
    base, commitments and global model (attest), the global model (evaluate)."""
    config = message.content["config"]
    if "round" not in config or message.metadata.message_type.endswith("hello"):
        return set()
    ledger = node.federation.ledger
    state = ledger.round(int(config["round"]))
    named = {cid for cid in (state.base, state.global_model) if cid is not None}
    if message.metadata.message_type.endswith("attest"):
        named |= {record.cid for record in ledger.commitments(state.round)}
    return named


def _config(message: Message) -> dict[str, Any]:
    return {key: value for key, value in message.content["config"].items() if key != SETTINGS}


def _reply(message: Message, node: Node, records: Mapping[str, Mapping[str, Any]]) -> Message:
    """Records as Flower's: figures as a MetricRecord, everything else as ConfigRecords;
    in a deployment a receipt's sealed update travels with it."""
    content: dict[str, ConfigRecord | MetricRecord] = {
        name: MetricRecord(dict(values)) if name == "metrics" else ConfigRecord(dict(values))
        for name, values in records.items()
    }
    if node.settings.ship_blobs and "receipt" in records:
        content[blobs.RECORD] = ConfigRecord(blobs.pack(node.federation.store, [Cid.parse(str(records["receipt"]["cid"]))]))
    return Message(RecordDict(content), reply_to=message)


@app.query("hello")
def hello(message: Message, context: Context) -> Message:
    node = _node_of(message, context)
    federation = node.federation
    challenge = read_hex(_config(message), "challenge", "the aggregator's greeting", 16)
    greeting = Greeting.answer(node.identity.account, federation.address, federation.chain_id, context.node_id,
                               challenge)
    records: dict[str, Mapping[str, Any]] = {"greeting": greeting.to_record()}
    if node.summarize is not None:  # a deployed site: what the others need to preprocess alike, signed
        summary = SignedSummary.sign(node.identity.account, federation.address, federation.chain_id, node.summarize())
        records["data"] = summary.to_record()
    return _reply(message, node, records)


@app.train()
def train_round(message: Message, context: Context) -> Message:
    node = _node_of(message, context)
    return _reply(message, node, node.role.train(_config(message)))


@app.query("attest")
def attest_round(message: Message, context: Context) -> Message:
    node = _node_of(message, context)
    return _reply(message, node, node.role.attest(_config(message)))


@app.evaluate()
def evaluate_model(message: Message, context: Context) -> Message:
    node = _node_of(message, context)
    return _reply(message, node, node.role.evaluate(_config(message)))

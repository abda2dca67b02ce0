"""The Flower ClientApp: a participant (and, for some, a validator) of the federation.

A thin adapter: Flower carries the round's announcement in and the signed receipt out;
everything that matters happens through `fl_chain.protocol` against the chain and the
content store. In a simulation model weights never travel in Flower messages, only CIDs;
in a deployment each organization has its own store, so blobs travel with the messages
and are checked against their CIDs (clients/blobs.py). Who this node is, where its data is
and which store it keeps comes from clients/node.py.

Message types:
- `query.hello`: say which participant this node is (its address) and, in a deployment,
  what the other sites need of its table to preprocess alike (clients/data/preprocessing.py);
- `train`: fetch the round's model by CID, check it against the chain, train, seal,
  store, sign; reply with the receipt;
- `query.attest`: re-compute a finalized round from chain and store, attest on chain;
- `evaluate`: score a round's finalized model (checked against the chain) on the local
  test split, while validators attest it.
"""

from __future__ import annotations

import time

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clients import blobs
from clients.drills import drill_for, fail_if_drilled, poison
from clients.models import build_model, load_weights, model_weights
from clients.node import Node, resolve_node
from clients.seeding import derive_seed
from clients.training import evaluate, train
from fl_chain import protocol
from fl_chain.protocol import RoundTicket
from fl_chain.storage.cid import Cid
from fl_chain.timing import Stopwatch

app = ClientApp()


def _node_of(message: Message, context: Context) -> Node:
    """This node's participant; blobs the message carries go into its store first."""
    node = resolve_node(str(message.content["config"]["settings"]), context.node_config)
    if blobs.RECORD in message.content:
        blobs.unpack(node.federation.store, message.content[blobs.RECORD])
    return node


def _reply(message: Message, **records: ConfigRecord | MetricRecord) -> Message:
    return Message(RecordDict(records), reply_to=message)


@app.query("hello")
def hello(message: Message, context: Context) -> Message:
    node = _node_of(message, context)
    records = {"identity": ConfigRecord({"address": node.address})}
    if node.summarize is not None:  # a deployed site: what the others need to preprocess alike
        records["data"] = ConfigRecord({"summary": node.summarize().to_json()})
    return _reply(message, **records)


@app.train()
def train_round(message: Message, context: Context) -> Message:
    node = _node_of(message, context)
    config = message.content["config"]
    ticket = RoundTicket(int(config["round"]), int(config["attempt"]), Cid.parse(str(config["base"])),
                         int(config["deadline"]))
    drill = drill_for(node.drills, node.index, ticket.round, ticket.attempt)
    fail_if_drilled(drill)
    stopwatch = Stopwatch()
    local = node.load_data()
    with stopwatch("fetch"):
        base = protocol.fetch_global_model(node.federation, ticket)
    with stopwatch("train"):
        model = build_model(local.input_shape, local.num_classes, node.settings.seed)
        load_weights(model, base)
        report = train(
            model, local.data, node.settings.training, seed=derive_seed(node.settings.seed, ticket.round, node.index),
            proximal_mu=node.settings.proximal_mu,
        )
        weights = model_weights(model)
    if drill is not None and drill.kind == "nan":
        weights = poison(weights)
    signed = protocol.commit_update(node.federation, node.identity, ticket, weights, report.examples, stopwatch)
    commitment = signed.commitment
    receipt = ConfigRecord({
        "participant": commitment.participant,
        "round": commitment.round,
        "attempt": commitment.attempt,
        "cid": str(commitment.cid),
        "examples": commitment.examples,
        "r": signed.r.hex(),
        "vs": signed.vs.hex(),
    })
    size = len(node.federation.store.get(commitment.cid))
    metrics = MetricRecord({"loss": report.loss, "examples": report.examples, "bytes": size,
                            **{f"seconds_{stage}": seconds for stage, seconds in stopwatch.seconds.items()}})
    if node.ships_blobs:  # the aggregator's store is not ours: the sealed update travels with its receipt
        return _reply(message, receipt=receipt, metrics=metrics,
                      **{blobs.RECORD: blobs.pack(node.federation.store, [commitment.cid])})
    return _reply(message, receipt=receipt, metrics=metrics)


@app.query("attest")
def attest_round(message: Message, context: Context) -> Message:
    node = _node_of(message, context)
    round_number = int(message.content["config"]["round"])
    start = time.perf_counter()
    cid = protocol.recompute(node.federation, node.identity, round_number)
    gas = protocol.attest(node.federation, node.identity, round_number, cid)
    metrics = MetricRecord({"gas": gas, "seconds_attest": time.perf_counter() - start})
    return _reply(message, attestation=ConfigRecord({"cid": str(cid), "validator": node.address}),
                  metrics=metrics)


@app.evaluate()
def evaluate_model(message: Message, context: Context) -> Message:
    node = _node_of(message, context)
    start = time.perf_counter()
    round_number = int(message.content["config"]["round"])
    finalized = node.federation.ledger.round(round_number).global_model
    announced = Cid.parse(str(message.content["config"]["model"]))
    if announced != finalized:
        raise protocol.ProtocolError(f"asked to evaluate {announced}, but round {round_number} finalized {finalized}")
    local = node.load_data()
    model = build_model(local.input_shape, local.num_classes, node.settings.seed)
    load_weights(model, protocol.load_model(node.federation.store, announced))
    result = evaluate(model, local.data.test_x, local.data.test_y)
    return _reply(message, metrics=MetricRecord({
        "loss": result.loss, "accuracy": result.accuracy, "examples": result.examples, "round": round_number,
        "seconds_evaluate": time.perf_counter() - start,
    }))

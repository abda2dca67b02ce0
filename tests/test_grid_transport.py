"""The run settings travel once per run: the aggregator's Grid transport and the ClientApp.

The Grid here is a stand-in that answers every message at once; what is tested is the
transport around it (which messages carry the settings) and the ClientApp's memory of them
in its Flower context.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

import pytest
from flwr.app import ConfigRecord, Context, Error, Message, RecordDict

from aggregator.strategy import GridTransport
from clients.app import _settings_of
from fl_chain.errors import UsageError
from fl_chain.progress import Progress
from fl_chain.settings import FIELD, RunSettings
from fl_chain.transport import TRAIN, Request

SETTINGS = RunSettings(experiment={"seed": 1}, chain_url="http://127.0.0.1:1", contract="0x" + "11" * 20, store={})
ADDRESSES = ("0x" + "aa" * 20, "0x" + "bb" * 20)


pytestmark = pytest.mark.usefixtures("inside_a_flower_run")


class AnsweringGrid:
    """Answers each message with an empty reply, or an error for the nodes in `failing`."""

    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.failing: set[int] = set()

    def get_node_ids(self) -> list[int]:
        return [1, 2]

    def send_and_receive(self, messages: Iterable[Message], timeout: float) -> list[Message]:
        batch = list(messages)
        self.sent += batch
        return [Message(Error(0, "failed"), reply_to=message) if message.metadata.dst_node_id in self.failing
                else Message(RecordDict({"receipt": ConfigRecord({})}), reply_to=message) for message in batch]


def transport_over(grid: AnsweringGrid) -> GridTransport:
    transport = GridTransport(grid, None, SETTINGS, Progress(1))  # type: ignore[arg-type]  # no blobs travel
    transport.nodes = dict(zip(ADDRESSES, (1, 2)))
    transport._addresses = {node: address for address, node in transport.nodes.items()}
    return transport


def carried_settings(grid: AnsweringGrid, send: Callable[[], object]) -> dict[int, bool]:
    """Which node's message carried the settings, for the messages `send` sent."""
    before = len(grid.sent)
    send()
    return {message.metadata.dst_node_id: FIELD in message.content["config"] for message in grid.sent[before:]}


def test_settings_go_to_each_node_once_then_again_only_when_they_change() -> None:
    grid = AnsweringGrid()
    transport = transport_over(grid)
    requests = [Request(address, TRAIN, {"round": 1}) for address in ADDRESSES]

    def send() -> object:
        return transport.send(requests, 5)

    assert carried_settings(grid, send) == {1: True, 2: True}
    assert carried_settings(grid, send) == {1: False, 2: False}
    transport.settings = dataclasses.replace(SETTINGS, summaries={"x": {}})
    assert carried_settings(grid, send) == {1: True, 2: True}
    assert carried_settings(grid, send) == {1: False, 2: False}


def test_a_node_that_did_not_acknowledge_the_settings_gets_them_again() -> None:
    grid = AnsweringGrid()
    transport = transport_over(grid)
    grid.failing = {2}
    requests = [Request(address, TRAIN, {"round": 1}) for address in ADDRESSES]
    replies = transport.send(requests, 5)
    assert [reply.ok for reply in replies] == [True, False]
    grid.failing = set()
    assert carried_settings(grid, lambda: transport.send(requests, 5)) == {1: False, 2: True}


def request(config: dict[str, object]) -> Message:
    return Message(RecordDict({"config": ConfigRecord(config)}), dst_node_id=1, message_type="train")


def test_a_clientapp_keeps_the_settings_in_its_context_for_the_rest_of_the_run() -> None:
    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    with pytest.raises(UsageError, match="has not sent this node the run settings"):
        _settings_of(request({"round": 1}), context)
    assert _settings_of(request({FIELD: SETTINGS.to_json(), "round": 1}), context) == SETTINGS.to_json()
    assert _settings_of(request({"round": 2}), context) == SETTINGS.to_json()
    changed = dataclasses.replace(SETTINGS, summaries={"x": {}}).to_json()
    assert _settings_of(request({FIELD: changed}), context) == changed
    assert _settings_of(request({"round": 3}), context) == changed


def test_settings_that_say_ship_blobs_in_anything_but_a_boolean_are_refused() -> None:
    text = SETTINGS.to_json().replace('"ship_blobs":false', '"ship_blobs":"no"')
    with pytest.raises(UsageError, match="ship_blobs is 'no', not true or false"):
        RunSettings.from_json(text)

"""Run settings sent once per run (aggregator/strategy.py GridTransport, clients/app.py).

The Grid is a stand-in that answers at once (as tests/test_grid_transport.py does); what
is tested is which messages carry the settings, and what a ClientApp does with them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import pytest
from flwr.app import ConfigRecord, Context, Error, Message, RecordDict

from aggregator.strategy import GridTransport
from clients.app import _settings_of
from fl_chain.errors import UsageError
from fl_chain.progress import Progress
from fl_chain.settings import FIELD, RunSettings
from fl_chain.transport import TRAIN, Request

SETTINGS = RunSettings(experiment={"seed": 1}, chain_url="http://127.0.0.1:1", contract="0x" + "11" * 20, store={},
                       ship_blobs=True)
ADDRESSES = ("0x" + "aa" * 20, "0x" + "bb" * 20)


pytestmark = pytest.mark.usefixtures("inside_a_flower_run")


class RestartingGrid:
    """Nodes keep their settings in a Flower context, as a SuperNode does; `restart(node)`
    loses that context (a SuperNode restarted mid-run keeps its registered node id, but
    its NodeState, and so the run's context, starts empty)."""

    def __init__(self) -> None:
        self.contexts = {node: Context(run_id=1, node_id=node, node_config={}, state=RecordDict(), run_config={})
                         for node in (1, 2)}
        self.sent: list[Message] = []

    def get_node_ids(self) -> list[int]:
        return list(self.contexts)

    def restart(self, node: int) -> None:
        self.contexts[node] = Context(run_id=1, node_id=node, node_config={}, state=RecordDict(), run_config={})

    def send_and_receive(self, messages: Iterable[Message], timeout: float) -> list[Message]:
        replies = []
        for message in messages:
            self.sent.append(message)
            try:
                _settings_of(message, self.contexts[message.metadata.dst_node_id])
            except UsageError as error:
                replies.append(Message(Error(0, str(error)), reply_to=message))
                continue
            replies.append(Message(RecordDict({"receipt": ConfigRecord({})}), reply_to=message))
        return replies


def transport_over(grid: RestartingGrid) -> GridTransport:
    transport = GridTransport(grid, None, SETTINGS, Progress(1))  # type: ignore[arg-type]  # no blobs travel
    transport.nodes = dict(zip(ADDRESSES, (1, 2)))
    transport._addresses = {node: address for address, node in transport.nodes.items()}
    return transport


def test_a_node_that_lost_its_settings_is_sent_them_again() -> None:
    """WORKS today (the test fails): once a node acknowledged the settings, an error reply
    does not take it off `_informed`, so a node whose context was lost (a SuperNode
    restart) answers every later request with "the aggregator has not sent this node the
    run settings" for the rest of the run: it is starved, never re-informed."""
    grid = RestartingGrid()
    transport = transport_over(grid)
    requests = [Request(address, TRAIN, {"round": 1}) for address in ADDRESSES]
    assert all(reply.ok for reply in transport.send(requests, 5))
    grid.restart(2)
    first = transport.send(requests, 5)
    assert [reply.ok for reply in first] == [True, False]  # the restarted node could not know them
    second = transport.send(requests, 5)
    assert [reply.ok for reply in second] == [True, True], second[1].error


@pytest.mark.parametrize("value", ["1", '"true"', "null", "[]", "{}"])
def test_ship_blobs_that_is_not_a_boolean_is_refused(value: str) -> None:
    """Holds: an aggregator cannot smuggle a truthy non-boolean ship_blobs past the node."""
    text = SETTINGS.to_json().replace('"ship_blobs":true', f'"ship_blobs":{value}')
    assert text != SETTINGS.to_json()
    with pytest.raises(UsageError, match="ship_blobs"):
        RunSettings.from_json(text)


def test_settings_without_a_previous_message_or_of_an_unknown_shape_are_an_error_not_a_crash() -> None:
    """Holds: an aggregator that omits the settings, or sends fields no RunSettings has,
    gets one UsageError (an error reply), never a node that guesses."""
    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    message = Message(RecordDict({"config": ConfigRecord({"round": 1})}), dst_node_id=1, message_type="train")
    with pytest.raises(UsageError, match="has not sent this node the run settings"):
        _settings_of(message, context)
    extra = SETTINGS.to_json()[:-1] + ',"keys_dir_for_all":"/"}'
    with pytest.raises(UsageError, match="malformed"):
        RunSettings.from_json(extra)


def test_settings_changed_mid_run_reach_every_node_and_replace_the_kept_ones() -> None:
    """Holds (transport side): a change (the sites' summaries) is sent to every node, and
    the node's context then holds the new text; what the new text may say is checked by
    clients/node.py (task hash, federation file, signed summaries)."""
    grid = RestartingGrid()
    transport = transport_over(grid)
    requests = [Request(address, TRAIN, {"round": 1}) for address in ADDRESSES]
    transport.send(requests, 5)
    changed = dataclasses.replace(SETTINGS, summaries={"x": {}})
    transport.settings = changed
    transport.send(requests, 5)
    assert all(str(context.state[FIELD][FIELD]) == changed.to_json() for context in grid.contexts.values())

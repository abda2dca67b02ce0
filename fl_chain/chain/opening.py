"""Opening the chain a config names: the one place every command gets its chain from.

`open_chain` starts a chain the run owns (an embedded EVM, journaled into the run
directory; a local anvil) or reaches someone's node (`chain=rpc`, paid for by the
operator's keystore after `confirm`), and yields an `OpenChain`: the URL other processes
use (simulated participants in Ray actors, SuperNodes) and this process's own connection.
The process that owns an embedded chain talks to it directly, not through the HTTP bridge
it serves to the others; the EVM serializes both (fl_chain/chain/embedded.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fl_chain.chain import rpc
from fl_chain.chain.anvil import AnvilNode
from fl_chain.chain.bridge import RpcBridge
from fl_chain.chain.chain import Chain
from fl_chain.chain.federation_file import FederationFile
from fl_chain.chain.ledger import Ledger
from fl_chain.chain.operator import RpcSettings, connect_operator, fund_accounts


@dataclass(frozen=True)
class OpenChain:
    url: str  # for the other processes of the run
    chain: Chain  # this process's connection


@contextmanager
def open_chain(chain: Mapping[str, Any], run_dir: Path, funded: Sequence[str], resume: bool = False,
               confirm: Callable[[str], bool] | None = None) -> Iterator[OpenChain]:
    """The configured chain (`chain` is the config's chain group), for the block's duration.

    `resume` re-executes an embedded chain's journal; an anvil chain lived in a process
    that ended with its run, so there is nothing to resume. On a node of someone else's,
    `confirm` is asked before the operator's keystore pays for anything.
    """
    backend = chain["backend"]
    if backend == "embedded":
        from fl_chain.chain.embedded import EmbeddedChain  # py-evm: loaded only where it runs

        if resume:
            embedded = EmbeddedChain.resume(run_dir / "ledger")
        else:
            embedded = EmbeddedChain.create(run_dir / "ledger", chain_id=chain["chain_id"], funded=list(funded))
        with RpcBridge(embedded.web3, increase_time=embedded.increase_time) as url:
            yield OpenChain(url, embedded.connect())
    elif backend == "anvil":
        from fl_chain.chain.history import HISTORY_FILE, export_history  # re-executes with py-evm

        with AnvilNode(chain_id=chain["chain_id"]) as node:
            connected = rpc.connect(node.url, development=True)
            rpc.fund(connected, funded)
            try:
                yield OpenChain(node.url, connected)
            finally:  # the node ends with the run: its signed history is what verify re-executes
                export_history(connected.web3, run_dir / HISTORY_FILE)
    else:
        connected, operator = connect_operator(chain)  # rides out outages for chain.retry_seconds
        fund_accounts(connected, operator, funded, RpcSettings.from_config(chain).fund_wei, confirm)
        yield OpenChain(chain["url"], connected)


def attach_federation(federation: FederationFile, url: str) -> Ledger:
    """The federation a federation file describes, on the node at `url`, which must serve
    the file's chain."""
    return federation.attach(rpc.connect(url, expected_chain_id=federation.chain_id))


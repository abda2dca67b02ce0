"""One embedded chain used directly by its owner and over the bridge at once.

fl_chain/chain/opening.py gives the owning process `embedded.connect()` (direct web3)
while RpcBridge serves the same EVM to other processes from its own threads; both go
through the provider's RLock (fl_chain/chain/embedded.py). Several bridge clients, one
moving the clock over the bridge (evm_increaseTime), a reader, and the owner sending and
moving the clock: no transaction lost or doubled, block times never go back, and the
journal re-executes.
"""

from __future__ import annotations

import threading
from pathlib import Path

from eth_account import Account

from fl_chain.chain import rpc
from fl_chain.chain.bridge import RpcBridge
from fl_chain.chain.embedded import EmbeddedChain, replay_journal

COUNT = 8


def test_many_bridge_clients_and_the_owner_share_one_chain(tmp_path: Path) -> None:
    owner, receiver = Account.create(), Account.create()
    remotes = [Account.create() for _ in range(3)]
    embedded = EmbeddedChain.create(tmp_path / "ledger", funded=[owner.address, *(r.address for r in remotes)])
    direct = embedded.connect()
    failures: list[BaseException] = []
    stop = threading.Event()
    with RpcBridge(embedded.web3, increase_time=embedded.increase_time) as url:

        def send(sender: object, moves_clock: bool) -> None:
            try:
                chain = rpc.connect(url)
                for _ in range(COUNT):
                    chain.transfer(sender, receiver.address, 1)  # type: ignore[arg-type]
                    if moves_clock:
                        chain.web3.provider.make_request("evm_increaseTime", [3])
            except BaseException as error:  # noqa: BLE001 - reported below
                failures.append(error)

        def read() -> None:
            try:
                chain = rpc.connect(url)
                while not stop.is_set():
                    chain.web3.eth.get_block("latest")
                    chain.web3.eth.get_logs({"fromBlock": 0, "toBlock": "latest"})
            except BaseException as error:  # noqa: BLE001
                failures.append(error)

        threads = [threading.Thread(target=send, args=(r, i == 0)) for i, r in enumerate(remotes)]
        reader = threading.Thread(target=read)
        for thread in (*threads, reader):
            thread.start()
        for _ in range(COUNT):
            direct.transfer(owner, receiver.address, 10)
            direct.increase_time(1)
        for thread in threads:
            thread.join(timeout=300)
        stop.set()
        reader.join(timeout=60)
    assert not failures, failures
    web3 = direct.web3
    assert all(web3.eth.get_transaction_count(a.address) == COUNT for a in (owner, *remotes))
    assert web3.eth.get_balance(receiver.address) == COUNT * (10 + len(remotes))
    times = [web3.eth.get_block(n)["timestamp"] for n in range(web3.eth.block_number + 1)]
    assert times == sorted(times) and len(set(times)) == len(times)
    replayed, mismatches = replay_journal(tmp_path / "ledger")
    assert mismatches == [] and replayed.block_number == embedded.block_number

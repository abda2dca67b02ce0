"""The embedded chain's journal re-executes from genesis to the same blocks, or says where not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fl_chain.chain.embedded import EmbeddedChain, replay_journal
from fl_chain.chain.journal import BLOCKS_FILE, JournalError
from fl_chain.chain.ledger import Ledger

from conftest import Consortium, deploy_federation, genesis_cid


def journaled_federation(directory: Path, consortium: Consortium) -> tuple[EmbeddedChain, Ledger]:
    embedded = EmbeddedChain.create(directory, funded=[i.address for i in consortium.everyone])
    ledger = deploy_federation(embedded.connect(), consortium)
    state = ledger.open_round(consortium.aggregator.account, 1, genesis_cid())
    batch = [ledger.sign(p.account, 1, state.attempt, genesis_cid(p.address), 7) for p in consortium.participants]
    ledger.relay(consortium.aggregator.account, batch)
    return embedded, ledger


def head_hash(embedded: EmbeddedChain) -> bytes:
    return bytes(embedded.web3.eth.get_block("latest")["hash"])


def rewrite_blocks(directory: Path, edit) -> None:  # type: ignore[no-untyped-def]
    path = directory / BLOCKS_FILE
    lines = path.read_text().splitlines()
    path.write_text("\n".join(edit(lines)) + "\n")


def test_replay_reproduces_blocks_state_and_events(tmp_path: Path, consortium: Consortium) -> None:
    original, ledger = journaled_federation(tmp_path / "ledger", consortium)
    replayed, mismatches = replay_journal(tmp_path / "ledger")
    assert mismatches == []
    assert replayed.block_number == original.block_number > 4
    assert head_hash(replayed) == head_hash(original)
    again = Ledger(replayed.connect(), ledger.address)
    assert again.round(1) == ledger.round(1)
    assert again.commitments(1) == ledger.commitments(1)
    assert again.members() == ledger.members()


def test_resumed_chain_keeps_journaling(tmp_path: Path, consortium: Consortium) -> None:
    original, ledger = journaled_federation(tmp_path / "ledger", consortium)
    resumed = EmbeddedChain.resume(tmp_path / "ledger")
    assert head_hash(resumed) == head_hash(original)
    continued = Ledger(resumed.connect(), ledger.address)
    included = [p.address for p in consortium.participants]
    continued.finalize(consortium.aggregator.account, 1, genesis_cid("global"), included)
    replayed, mismatches = replay_journal(tmp_path / "ledger")
    assert mismatches == []
    assert replayed.block_number == original.block_number + 1


def test_edited_transaction_is_detected(tmp_path: Path, consortium: Consortium) -> None:
    journaled_federation(tmp_path / "ledger", consortium)

    def edit(lines: list[str]) -> list[str]:
        record = json.loads(lines[-1])
        raw = record["transactions"][0]
        record["transactions"][0] = raw[:-70] + ("0" if raw[-70] != "0" else "1") + raw[-69:]
        return [*lines[:-1], json.dumps(record)]

    rewrite_blocks(tmp_path / "ledger", edit)
    _, mismatches = replay_journal(tmp_path / "ledger")
    assert len(mismatches) == 1
    assert mismatches[0].number == len((tmp_path / "ledger" / BLOCKS_FILE).read_text().splitlines())
    with pytest.raises(JournalError, match=f"block {mismatches[0].number}"):
        EmbeddedChain.resume(tmp_path / "ledger")


@pytest.mark.parametrize(("edit", "missing", "found"), [
    pytest.param(lambda lines: lines[:2] + lines[3:], 3, 4, id="dropped"),
    pytest.param(lambda lines: [lines[0], lines[2], lines[1], *lines[3:]], 2, 3, id="reordered"),
])
def test_dropped_or_reordered_block_is_detected(tmp_path: Path, consortium: Consortium, edit, missing, found) -> None:  # type: ignore[no-untyped-def]
    journaled_federation(tmp_path / "ledger", consortium)
    rewrite_blocks(tmp_path / "ledger", edit)
    _, mismatches = replay_journal(tmp_path / "ledger")
    assert len(mismatches) == 1
    assert str(mismatches[0]) == (
        f"block {missing} is missing: the journal holds block {found} in its place (blocks dropped or reordered)"
    )


def test_missing_journal_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="no chain journal in"):
        replay_journal(tmp_path)
    EmbeddedChain.create(tmp_path / "ledger")
    with pytest.raises(JournalError, match="already exists"):
        EmbeddedChain.create(tmp_path / "ledger")

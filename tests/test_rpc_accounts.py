"""Reaching real nodes: keystores, development mnemonics, unreachable or wrong chains."""

from __future__ import annotations

from pathlib import Path

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from fl_chain.chain import rpc
from fl_chain.chain.accounts import (
    KeystoreError,
    read_password,
    unlock_keystore,
    write_keystore,
)
from fl_chain.chain.anvil import DEV_MNEMONIC, AnvilNode
from fl_chain.chain.artifacts import NAIVE_REGISTRY
from fl_chain.chain.errors import ChainUnreachable, UnreachableUrl, WrongChain
from fl_chain.identity import Identity

Account.enable_unaudited_hdwallet_features()


def mnemonic_accounts(mnemonic: str, count: int) -> list[LocalAccount]:
    """The first accounts of a development mnemonic (BIP-44 path m/44'/60'/0'/0/i), as anvil derives them."""
    return [Account.from_mnemonic(mnemonic, account_path=f"m/44'/60'/0'/0/{i}") for i in range(count)]


def test_keystore_round_trip_and_wrong_password(tmp_path: Path) -> None:
    identity = Identity.derive("keystore test", "hospital")
    path = tmp_path / "keys" / "hospital.json"
    write_keystore(identity.account, path, "correct horse")
    assert path.stat().st_mode & 0o777 == 0o600
    (tmp_path / "right").write_text("correct horse\n")
    (tmp_path / "wrong").write_text("battery staple\n")
    assert unlock_keystore(path, password_file=tmp_path / "right").address == identity.address
    with pytest.raises(KeystoreError, match=f"wrong password for keystore {path}"):
        unlock_keystore(path, password_file=tmp_path / "wrong")
    with pytest.raises(KeystoreError, match="does not exist"):
        unlock_keystore(tmp_path / "missing.json", password_file=tmp_path / "right")
    (tmp_path / "garbage.json").write_text("not json")
    with pytest.raises(KeystoreError, match="is not readable JSON"):
        unlock_keystore(tmp_path / "garbage.json", password_file=tmp_path / "right")


def test_passwords_come_from_an_environment_variable_or_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLCHAIN_TEST_PASSWORD", "from env")
    assert read_password(env="FLCHAIN_TEST_PASSWORD") == "from env"
    (tmp_path / "password").write_text("from file\n")
    assert read_password(file=tmp_path / "password") == "from file"
    with pytest.raises(KeystoreError, match="FLCHAIN_UNSET_VARIABLE is not set"):
        read_password(env="FLCHAIN_UNSET_VARIABLE")
    with pytest.raises(KeystoreError, match="cannot read the password file"):
        read_password(file=tmp_path / "nope")
    with pytest.raises(KeystoreError, match="no keystore password given"):
        read_password()


def test_unlocking_a_keystore_takes_the_password_file_over_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    identity = Identity.derive("keystore test", "operator")
    write_keystore(identity.account, tmp_path / "operator.json", "from file")
    (tmp_path / "password").write_text("from file\n")
    monkeypatch.setenv("FLCHAIN_TEST_PASSWORD", "from env")
    unlocked = unlock_keystore(tmp_path / "operator.json", password_env="FLCHAIN_TEST_PASSWORD",
                               password_file=tmp_path / "password")
    assert unlocked.address == identity.address
    with pytest.raises(KeystoreError, match="wrong password for keystore"):
        unlock_keystore(tmp_path / "operator.json", password_env="FLCHAIN_TEST_PASSWORD")
    with pytest.raises(KeystoreError, match=f"keystore file {tmp_path / 'absent.json'} does not exist"):
        unlock_keystore(tmp_path / "absent.json", password_env="FLCHAIN_UNSET_VARIABLE")
    (tmp_path / "not-a-keystore.json").write_text('{"address": "00"}')
    with pytest.raises(KeystoreError, match="is not a v3 keystore"):
        unlock_keystore(tmp_path / "not-a-keystore.json", password_env="FLCHAIN_TEST_PASSWORD")


def test_development_mnemonic_gives_anvils_accounts() -> None:
    first, second = mnemonic_accounts(DEV_MNEMONIC, 2)
    assert first.address == "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
    assert second.address == "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def test_an_unreachable_url_at_start_is_bad_input_without_a_long_retry() -> None:
    with pytest.raises(UnreachableUrl, match="no Ethereum node answers at http://127.0.0.1:9") as caught:
        rpc.connect("http://127.0.0.1:9", timeout=2, retry_seconds=600)
    assert isinstance(caught.value, ChainUnreachable) and caught.value.exit_code == 2
    with pytest.raises(UnreachableUrl, match="localhost:8545 is not an Ethereum JSON-RPC endpoint"):
        rpc.connect("localhost:8545")


@pytest.mark.anvil
def test_wrong_chain_id_is_caught_before_any_transaction(anvil_node: AnvilNode) -> None:
    with pytest.raises(WrongChain, match=f"serves chain {anvil_node.chain_id}, not the expected chain 1"):
        rpc.connect(anvil_node.url, expected_chain_id=1)


@pytest.mark.anvil
def test_anvil_dev_account_can_transact(anvil_node: AnvilNode) -> None:
    chain = rpc.connect(anvil_node.url, expected_chain_id=anvil_node.chain_id)
    [dev] = mnemonic_accounts(DEV_MNEMONIC, 1)
    receipt = chain.deploy(dev, NAIVE_REGISTRY.abi, NAIVE_REGISTRY.bytecode)
    assert receipt["status"] == 1 and receipt["contractAddress"]
    assert chain.backend == "rpc"

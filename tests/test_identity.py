"""Identities derived from a run seed: reproducible, and distinct per label and seed."""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import is_checksum_address

from fl_chain.errors import UsageError
from fl_chain.identity import Identity


def test_same_seed_and_label_give_the_same_keys() -> None:
    first, second = Identity.derive(7, "hospital-0"), Identity.derive(7, "hospital-0")
    assert first.address == second.address
    assert first.account.key == second.account.key
    assert first.x25519_public == second.x25519_public


@pytest.mark.parametrize(
    ("seed", "label"),
    [(7, "hospital-1"), (8, "hospital-0"), ("7", "hospital-0"), (b"7", "hospital-0")],
)
def test_another_label_or_seed_gives_other_keys(seed: int | str | bytes, label: str) -> None:
    reference, other = Identity.derive(7, "hospital-0"), Identity.derive(seed, label)
    assert other.address != reference.address
    assert other.x25519_public != reference.x25519_public


def test_ethereum_and_x25519_keys_are_independent() -> None:
    identity = Identity.derive(7, "hospital-0")
    assert identity.account.key != identity.x25519_private.private_bytes_raw()


def test_derived_account_signs_for_its_address() -> None:
    identity = Identity.derive("run-seed", "aggregator")
    message = encode_defunct(text="commitment")
    signature = identity.account.sign_message(message).signature
    assert is_checksum_address(identity.address)
    assert Account.recover_message(message, signature=signature) == identity.address
    assert len(identity.x25519_public) == 32


def test_generated_identities_are_fresh() -> None:
    assert Identity.generate().address != Identity.generate().address


def test_repr_shows_no_private_key() -> None:
    identity = Identity.derive(7, "hospital-0")
    text = repr(identity)
    assert identity.address in text
    assert identity.account.key.hex().removeprefix("0x") not in text
    assert identity.x25519_private.private_bytes_raw().hex() not in text


def test_bool_is_not_a_seed() -> None:
    with pytest.raises(UsageError, match="seed"):
        Identity.derive(True, "hospital-0")

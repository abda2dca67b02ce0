"""`Ledger`: one Python interface to a Federation contract, for every role.

The admin governs membership, the aggregator opens and finalizes rounds, participants
commit (directly or through a relayer), validators attest, and anyone reads state and
events. Each call takes the account that acts, so one process can play several roles in
a simulation and a deployment gives each party only its own key.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address
from web3.logs import DISCARD
from web3.types import TxReceipt

from fl_chain.chain.artifacts import FEDERATION, deployed_code_matches
from fl_chain.chain.chain import Chain
from fl_chain.chain.commitment import Commitment, SignedCommitment, sign_commitment
from fl_chain.chain.errors import NotAFederation
from fl_chain.chain.federation import (
    CommitmentRecord,
    ExclusionReason,
    FederationParameters,
    Member,
    Refusal,
    RelayOutcome,
    Role,
    RoundState,
    RoundStatus,
    explain_revert,
)
from fl_chain.storage.cid import Cid

_ZERO_DIGEST = b"\x00" * 32
NewMember = tuple[str, bytes, Role] | tuple[str, bytes, Role, int]


def _cid_or_none(digest: bytes, codec: int) -> Cid | None:
    return None if digest == _ZERO_DIGEST and codec == 0 else Cid(codec, bytes(digest))


def bitmap_words(indices: Iterable[int]) -> list[int]:
    """Member indices as the contract's bitmap: bit i of word i // 256."""
    words: list[int] = []
    for index in indices:
        word, bit = divmod(index, 256)
        words.extend([0] * (word + 1 - len(words)))
        words[word] |= 1 << bit
    return words


def bitmap_indices(words: Sequence[int]) -> list[int]:
    return [w * 256 + bit for w, word in enumerate(words) for bit in range(256) if word >> bit & 1]


class Ledger:
    """A Federation contract on a `Chain`."""

    def __init__(self, chain: Chain, address: str) -> None:
        self.chain = chain
        self.address = to_checksum_address(address)
        self.contract = chain.web3.eth.contract(address=self.address, abi=FEDERATION.abi)

    # ------------------------------------------------------------ deployment

    @classmethod
    def deploy(
        cls, chain: Chain, admin: LocalAccount, parameters: FederationParameters, genesis_model: Cid
    ) -> Ledger:
        receipt = chain.deploy(
            admin,
            FEDERATION.abi,
            FEDERATION.bytecode,
            parameters.as_abi(),
            admin.address,
            genesis_model.digest,
            genesis_model.codec,
            explain=explain_revert,
        )
        return cls(chain, receipt["contractAddress"])

    @classmethod
    def attach(cls, chain: Chain, address: str) -> Ledger:
        """Connects to an existing federation, after checking its code is the shipped one."""
        code = bytes(chain.web3.eth.get_code(to_checksum_address(address)))
        if not code:
            raise NotAFederation(f"no contract at {address} on chain {chain.chain_id}")
        if not deployed_code_matches(FEDERATION, code):
            raise NotAFederation(f"the contract at {address} is not this version of the Federation contract")
        return cls(chain, address)

    # ------------------------------------------------------------ governance

    def add_members(self, admin: LocalAccount, members: Sequence[NewMember]) -> TxReceipt:
        """Admits members: (address, X25519 key, roles) or (address, key, roles, example cap);
        a cap of 0 (or none) is the federation's maximum."""
        rows = [(*member, 0) if len(member) == 3 else member for member in members]
        addresses = [to_checksum_address(row[0]) for row in rows]
        keys = [bytes(row[1]) for row in rows]
        roles = [int(row[2]) for row in rows]
        caps = [int(row[3]) for row in rows]
        return self._transact(admin, self.contract.functions.addMembers(addresses, keys, roles, caps))

    def remove_member(self, admin: LocalAccount, member: str) -> TxReceipt:
        return self._transact(admin, self.contract.functions.removeMember(to_checksum_address(member)))

    def set_aggregator(self, admin: LocalAccount, aggregator: str) -> TxReceipt:
        return self._transact(admin, self.contract.functions.setAggregator(to_checksum_address(aggregator)))

    def transfer_admin(self, admin: LocalAccount, successor: str) -> TxReceipt:
        return self._transact(admin, self.contract.functions.transferAdmin(to_checksum_address(successor)))

    # ------------------------------------------------------------ rounds

    def open_round(self, aggregator: LocalAccount, round_number: int, base: Cid) -> RoundState:
        self._transact(aggregator, self.contract.functions.openRound(round_number, base.digest, base.codec))
        return self.round(round_number)

    def commit(self, participant: LocalAccount, round_number: int, cid: Cid, examples: int) -> TxReceipt:
        """The participant's own transaction (no relayer needed)."""
        call = self.contract.functions.commit(round_number, cid.digest, cid.codec, examples)
        return self._transact(participant, call)

    def sign(self, participant: LocalAccount, round_number: int, attempt: int, cid: Cid, examples: int) -> SignedCommitment:
        commitment = Commitment(participant.address, round_number, attempt, cid, examples)
        return sign_commitment(participant, commitment, self.chain.chain_id, self.address)

    def relay(self, relayer: LocalAccount, batch: Sequence[SignedCommitment]) -> RelayOutcome:
        """Relays signed commitments to one round in one transaction; refused entries are
        reported in the outcome, not raised, so one bad participant cannot sink the rest."""
        rounds = {(s.commitment.round, s.commitment.attempt) for s in batch}
        if len(rounds) != 1:
            raise ValueError("a relayed batch holds commitments to exactly one round and attempt")
        ((round_number, attempt),) = rounds
        call = self.contract.functions.commitBatch(round_number, attempt, [s.as_abi() for s in batch])
        receipt = self._transact(relayer, call)
        events = self.contract.events
        accepted = tuple(e["args"]["participant"] for e in events.Committed().process_receipt(receipt, errors=DISCARD))
        refused = tuple(
            (e["args"]["participant"], Refusal(e["args"]["reason"]))
            for e in events.CommitmentRefused().process_receipt(receipt, errors=DISCARD)
        ) + tuple(
            (e["args"]["claimed"], Refusal.BAD_SIGNATURE)
            for e in events.UnverifiedEntrySkipped().process_receipt(receipt, errors=DISCARD)
        )
        return RelayOutcome(accepted, refused, int(receipt["gasUsed"]))

    def finalize(
        self,
        aggregator: LocalAccount,
        round_number: int,
        global_model: Cid,
        included: Sequence[str],
        excluded: Sequence[tuple[str, ExclusionReason]] = (),
        seen: int | None = None,
    ) -> TxReceipt:
        """Concludes the open attempt: each of the first `seen` commitments (default: all of
        them) must be `included` or `excluded` with a reason; any later one the contract
        excludes as late. Below the quorum the attempt fails instead of finalizing.

        Exclusions are sent in the ascending address order the contract checks (its cheap
        way of refusing duplicates), whatever order they are given in.
        """
        if seen is None:
            seen = len(included) + len(excluded)
        index_of = {member.address: member.index for member in self.members()}
        words = bitmap_words(index_of[to_checksum_address(address)] for address in included)
        exclusions = sorted(
            ((to_checksum_address(address), int(reason)) for address, reason in excluded),
            key=lambda exclusion: int(exclusion[0], 16),
        )
        call = self.contract.functions.finalize(round_number, global_model.digest, global_model.codec, words,
                                                exclusions, seen)
        return self._transact(aggregator, call)

    def attest(self, validator: LocalAccount, round_number: int, global_model: Cid) -> TxReceipt:
        call = self.contract.functions.attest(round_number, global_model.digest, global_model.codec)
        return self._transact(validator, call)

    def fail_round(self, caller: LocalAccount, round_number: int) -> TxReceipt:
        return self._transact(caller, self.contract.functions.failRound(round_number))

    # ------------------------------------------------------------ views

    def parameters(self) -> FederationParameters:
        return FederationParameters.from_abi(self.contract.functions.parameters().call())

    def admin(self) -> str:
        return self.contract.functions.admin().call()

    def aggregator(self, block: int | None = None) -> str:
        """The appointed aggregator (as of `block`, when given)."""
        return self.contract.functions.aggregator().call(block_identifier=block or "latest")

    def member(self, address: str) -> Member:
        address = to_checksum_address(address)
        return Member.from_abi(address, self.contract.functions.memberOf(address).call())

    def members(self, block: int | None = None) -> list[Member]:
        """Every member ever added, in index order (one call, however many members), as of
        `block` when given."""
        addresses, details = self.contract.functions.memberList().call(block_identifier=block or "latest")
        return [Member.from_abi(address, raw) for address, raw in zip(addresses, details)]

    def round(self, round_number: int) -> RoundState:
        raw = self.contract.functions.roundOf(round_number).call()
        (status, attempt, deadline, commitments, included, attestations, base_codec, global_codec,
         opened_block, dissents, base_digest, global_digest, log) = raw
        return RoundState(
            round=round_number,
            status=RoundStatus(status),
            attempt=attempt,
            deadline=deadline,
            commitments=commitments,
            included=included,
            attestations=attestations,
            base=_cid_or_none(bytes(base_digest), base_codec),
            global_model=_cid_or_none(bytes(global_digest), global_codec),
            commitment_log=bytes(log),
            opened_block=opened_block,
            dissents=dissents,
        )

    def latest_accepted(self) -> tuple[int, Cid]:
        round_number, digest, codec = self.contract.functions.latestAccepted().call()
        return round_number, Cid(codec, bytes(digest))

    def frozen_validators(self, round_number: int) -> list[str]:
        """The validators frozen when the current attempt of the round opened (the only ones
        that can be drawn to attest it, and so the recipients of its updates besides the aggregator)."""
        return self._members_in(self.contract.functions.eligibleWord, round_number)

    def committed(self, round_number: int) -> list[str]:
        return self._members_in(self.contract.functions.committedWord, round_number)

    def included(self, round_number: int) -> list[str]:
        return self._members_in(self.contract.functions.includedWord, round_number)

    def is_on_committee(self, round_number: int, validator: str) -> bool:
        """Whether `validator` may attest the current attempt of a finalized round."""
        return self.contract.functions.isOnCommittee(round_number, to_checksum_address(validator)).call()

    def has_attested(self, round_number: int, validator: str) -> bool:
        return self.contract.functions.hasAttested(round_number, to_checksum_address(validator)).call()

    # ------------------------------------------------------------ events

    def commitments(self, round_number: int) -> list[CommitmentRecord]:
        """The current attempt's commitments, in chain order, read from Committed events."""
        state = self.round(round_number)
        if state.status == RoundStatus.NONE:
            return []
        logs = self.contract.events.Committed().get_logs(
            from_block=state.opened_block, argument_filters={"round": round_number}
        )
        return [
            CommitmentRecord(
                participant=log["args"]["participant"],
                round=round_number,
                cid=Cid(log["args"]["codec"], bytes(log["args"]["digest"])),
                examples=log["args"]["examples"],
                block_number=log["blockNumber"],
                transaction="0x" + bytes(log["transactionHash"]).hex(),
            )
            for log in logs
        ]

    def exclusions(self, round_number: int) -> list[tuple[str, ExclusionReason]]:
        """The current attempt's exclusions (participant, reason), read from Excluded events."""
        state = self.round(round_number)
        if state.status == RoundStatus.NONE:
            return []
        logs = self.contract.events.Excluded().get_logs(
            from_block=state.opened_block, argument_filters={"round": round_number}
        )
        return [(log["args"]["participant"], ExclusionReason(log["args"]["reason"])) for log in logs]

    # ------------------------------------------------------------ internals

    def _members_in(self, word_of: Any, round_number: int) -> list[str]:
        addresses = [member.address for member in self.members()]
        words = [word_of(round_number, w).call() for w in range((len(addresses) + 255) // 256)]
        return [addresses[i] for i in bitmap_indices(words)]

    def _transact(self, sender: LocalAccount, call: Any) -> TxReceipt:
        return self.chain.transact(sender, call, explain=explain_revert)

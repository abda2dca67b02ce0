"""A simulated consortium: the admin, the aggregator and the participants one run plays.

Nothing public derives a secret. The X25519 keys that open sealed updates are fresh for
every run and live only in the run's `keys/` directory, so a published run without
`keys/` discloses no update. Ethereum accounts are derived from the seed only on a chain
the run starts itself (embedded, anvil): there they keep addresses, the contract address
and so every global-model CID reproducible, and nobody else can reach that chain. On any
other chain (`chain=rpc`) the accounts are fresh too, and seed-derived ones are refused:
anyone who read the seed could otherwise act as every role and take the balances.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from eth_account import Account

from fl_chain.chain.chain import Chain
from fl_chain.chain.federation import FederationParameters, Role
from fl_chain.chain.ledger import Ledger
from fl_chain.errors import UsageError
from fl_chain.identity import Identity
from fl_chain.jsonfiles import read_json, write_private_json
from fl_chain.keyfile import write_key_file
from fl_chain.storage.cid import Cid
from fl_chain.task import RunShape, Task

MEMBERS_PER_TRANSACTION = 500
KEYS_FORMAT = "fl-chain-consortium/1"
KEYS_FILE = "consortium.json"


ADMISSION_CAPS = ("own", "federation")


def admission_caps(task: Task, run: RunShape, config: Mapping[str, Any]) -> list[int]:
    """The example cap each simulated participant is admitted with (`config.admission_caps`):
    its own training set's size, or the federation's `max_examples` for everyone."""
    most = int(config["max_examples"])
    if config.get("admission_caps", "own") == "federation":
        return [most] * run.num_participants
    return [min(task.train_examples(task.participant_data(index, run)), most) for index in range(run.num_participants)]


def seeded_participant_address(seed: int, index: int) -> str:
    """The address participant `index` of a run with `seed` has on the run's own chain
    (what orders its update among the others wherever a rule sums in address order)."""
    return Identity.derive(_namespace(seed), f"participant-{index}").address


def _namespace(seed: int) -> str:
    return f"fl-chain simulation seed {seed}"


@dataclass(frozen=True)
class SimulatedConsortium:
    """The admin, the aggregator, and participants of which the first few also validate."""

    seed: int
    admin: Identity
    aggregator: Identity
    participants: tuple[Identity, ...]
    num_validators: int
    seed_accounts: bool  # accounts derived from the seed: only for a run's own development chain

    @classmethod
    def create(cls, seed: int, num_participants: int, num_validators: int, *,
               seed_accounts: bool) -> SimulatedConsortium:
        """Fresh X25519 keys; accounts from the seed when `seed_accounts`, else fresh."""
        def member(label: str) -> Identity:
            account = Identity.derive(_namespace(seed), label).account if seed_accounts else Account.create()
            return Identity(account, X25519PrivateKey.generate())

        return cls(seed, member("admin"), member("aggregator"),
                   tuple(member(f"participant-{i}") for i in range(num_participants)), num_validators, seed_accounts)

    @property
    def validators(self) -> tuple[Identity, ...]:
        return self.participants[: self.num_validators]

    def roles_of(self, index: int) -> Role:
        return Role.PARTICIPANT | Role.VALIDATOR if index < self.num_validators else Role.PARTICIPANT

    @property
    def transacting_addresses(self) -> list[str]:
        """Accounts that send their own transactions and so need a balance: participants
        too, which commit themselves when the aggregator does not relay them in time."""
        return [self.admin.address, self.aggregator.address, *(p.address for p in self.participants)]

    def found(self, chain: Chain, parameters: FederationParameters, genesis_model: Cid,
              example_caps: list[int] | None = None) -> Ledger:
        """Deploys the federation, registers every member, and appoints the aggregator.

        `example_caps[i]` is the most examples participant i may claim (its training set's
        size in a simulation); members are added `MEMBERS_PER_TRANSACTION` at a time (about
        75k gas each: a thousand in one transaction would exceed a 60M block gas limit).
        """
        if self.seed_accounts and not chain.development:
            raise UsageError(f"accounts derived from the seed may only act on a chain the run starts itself, not on "
                             f"the {chain.backend} chain {chain.chain_id}: anyone who reads the seed could act as them")
        caps = example_caps or [0] * len(self.participants)
        ledger = Ledger.deploy(chain, self.admin.account, parameters, genesis_model)
        members = [(self.aggregator.address, self.aggregator.x25519_public, Role.AGGREGATOR, 0)]
        members += [(p.address, p.x25519_public, self.roles_of(i), caps[i]) for i, p in enumerate(self.participants)]
        for start in range(0, len(members), MEMBERS_PER_TRANSACTION):
            ledger.add_members(self.admin.account, members[start : start + MEMBERS_PER_TRANSACTION])
        ledger.set_aggregator(self.admin.account, self.aggregator.address)
        return ledger

    # ------------------------------------------------------------ keys/

    def save(self, directory: Path) -> None:
        """The run's secrets: every account and X25519 key (keys/consortium.json), and the
        aggregator's and validators' opening keys on their own for `flchain verify --key`."""
        def entry(label: str, identity: Identity) -> dict[str, str]:
            return {"label": label, "account": bytes(identity.account.key).hex(),
                    "x25519": identity.x25519_private.private_bytes_raw().hex()}

        members = [entry("admin", self.admin), entry("aggregator", self.aggregator)]
        members += [entry(f"participant-{i}", p) for i, p in enumerate(self.participants)]
        write_private_json(directory / KEYS_FILE, {"format": KEYS_FORMAT, "seed": self.seed,
                                                   "num_validators": self.num_validators,
                                                   "seed_accounts": self.seed_accounts, "members": members})
        write_key_file(directory / "aggregator.json", self.aggregator, "aggregator")
        for index, validator in enumerate(self.validators):
            write_key_file(directory / f"validator-{index}.json", validator, "validator")

    @classmethod
    def load(cls, directory: Path) -> SimulatedConsortium:
        path = directory / KEYS_FILE
        document = read_json(path, "consortium key file")
        try:
            if document["format"] != KEYS_FORMAT:
                raise ValueError(f"format {document['format']!r}")
            identities = [Identity(Account.from_key(bytes.fromhex(m["account"])),
                                   X25519PrivateKey.from_private_bytes(bytes.fromhex(m["x25519"])))
                          for m in document["members"]]
            admin, aggregator, *participants = identities
            return cls(int(document["seed"]), admin, aggregator, tuple(participants), int(document["num_validators"]),
                       bool(document["seed_accounts"]))
        except (KeyError, TypeError, ValueError) as error:
            raise UsageError(f"{path} is not a consortium key file ({KEYS_FORMAT}): {error}") from None

"""A simulated consortium: every party's keys derived from the run's seed, never hard-coded.

In a simulation one process plays every organization, so each needs its own Ethereum
account and X25519 key; deriving them from (seed, role, index) makes a run reproducible
from its config alone. Real deployments load keys from keystores instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from fl_chain.chain.chain import Chain
from fl_chain.chain.federation import FederationParameters, Role
from fl_chain.chain.ledger import Ledger
from fl_chain.identity import Identity
from fl_chain.storage.cid import Cid

MEMBERS_PER_TRANSACTION = 500


@dataclass(frozen=True)
class SimulatedConsortium:
    """The admin, the aggregator, and participants of which the first few also validate."""

    seed: int
    admin: Identity
    aggregator: Identity
    participants: tuple[Identity, ...]
    num_validators: int

    @classmethod
    def derive(cls, seed: int, num_participants: int, num_validators: int) -> SimulatedConsortium:
        namespace = f"fl-chain simulation seed {seed}"
        return cls(
            seed=seed,
            admin=Identity.derive(namespace, "admin"),
            aggregator=Identity.derive(namespace, "aggregator"),
            participants=tuple(Identity.derive(namespace, f"participant-{i}") for i in range(num_participants)),
            num_validators=num_validators,
        )

    @property
    def validators(self) -> tuple[Identity, ...]:
        return self.participants[: self.num_validators]

    def roles_of(self, index: int) -> Role:
        return Role.PARTICIPANT | Role.VALIDATOR if index < self.num_validators else Role.PARTICIPANT

    @property
    def transacting_addresses(self) -> list[str]:
        """Accounts that send their own transactions and so need a balance."""
        return [self.admin.address, self.aggregator.address, *(v.address for v in self.validators)]

    def found(self, chain: Chain, parameters: FederationParameters, genesis_model: Cid) -> Ledger:
        """Deploys the federation, registers every member, and appoints the aggregator.

        Members are added `MEMBERS_PER_TRANSACTION` at a time: about 71k gas each, so a
        single transaction for a thousand would exceed a 60M block gas limit.
        """
        ledger = Ledger.deploy(chain, self.admin.account, parameters, genesis_model)
        members = [(self.aggregator.address, self.aggregator.x25519_public, Role.AGGREGATOR)]
        members += [(p.address, p.x25519_public, self.roles_of(i)) for i, p in enumerate(self.participants)]
        for start in range(0, len(members), MEMBERS_PER_TRANSACTION):
            ledger.add_members(self.admin.account, members[start : start + MEMBERS_PER_TRANSACTION])
        ledger.set_aggregator(self.admin.account, self.aggregator.address)
        return ledger

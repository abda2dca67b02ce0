"""`python -m clients.watch`: a deployed site's own commitment, sent if the aggregator sits on it.

A deployed ClientApp lives for one message, so after it replies with a receipt it starts
this detached process (clients/node.py): it waits until shortly before the federation's
commit grace ends for the commitment to appear on chain and, if it has not, sends it with
the site's own transaction
(fl_chain.participant.commit_unless_relayed). The signed receipt comes on standard input;
the keystore's password only from its file, never from the command line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fl_chain.chain.accounts import unlock_keystore
from fl_chain.chain.federation_file import FederationFile
from fl_chain.chain.opening import attach_federation
from fl_chain.errors import FlChainError
from fl_chain.jsonfiles import parse_json
from fl_chain.messages import Receipt, Ticket, read_int
from fl_chain.participant import commit_unless_relayed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clients.watch", description=__doc__.splitlines()[0])
    for option in ("--keystore", "--password-file", "--federation-file", "--chain-url"):
        parser.add_argument(option, required=True)
    args = parser.parse_args(argv)
    try:
        record = parse_json(sys.stdin.read())
        federation_file = FederationFile.read(Path(args.federation_file))
        ledger = attach_federation(federation_file, args.chain_url)
        account = unlock_keystore(Path(args.keystore), password_file=Path(args.password_file))
        ticket = Ticket(read_int(record, "round", "the receipt"), read_int(record, "attempt", "the receipt"),
                        federation_file.genesis_model, 0)  # only round and attempt are compared
        receipt = Receipt.from_record(record, ticket=ticket, sender=account.address, chain_id=ledger.chain.chain_id,
                                      federation=ledger.address)
        commit_unless_relayed(ledger, account, receipt.signed)
    except (FlChainError, ValueError) as error:
        print(f"clients.watch: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

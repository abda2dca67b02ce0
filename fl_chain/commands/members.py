"""`flchain members add|remove|set-aggregator|list`: the admin governs who belongs to a federation.

    flchain members list --federation FILE --url URL [--json]
    flchain members add --federation FILE --url URL --keystore FILE \\
        --address 0x... --x25519 HEX --roles participant,validator [--aggregator]
    flchain members remove --federation FILE --url URL --keystore FILE --address 0x...

Changes are signed with the admin's v3 keystore; its password comes from an environment
variable (--password-env, default FLCHAIN_PASSWORD) or a file (--password-file), never
from the command line. Every input, and that the keystore's account is the federation's
admin, is checked before a transaction is sent.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_utils import is_address, to_checksum_address

from fl_chain.chain.accounts import DEFAULT_PASSWORD_ENV, unlock_keystore
from fl_chain.chain.federation import Member, Role
from fl_chain.chain.federation_file import FederationFile
from fl_chain.chain.ledger import Ledger
from fl_chain.chain.opening import attach_federation
from fl_chain.envelope import is_usable_recipient
from fl_chain.errors import UsageError
from fl_chain.jsonfiles import read_json

ROLE_NAMES = {"participant": Role.PARTICIPANT, "aggregator": Role.AGGREGATOR, "validator": Role.VALIDATOR}
KEY_PREFIX = 8  # hex digits of the X25519 key shown in the table


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("members", help="list, add or remove a federation's members (admin)",
                                   description=__doc__.splitlines()[0] if __doc__ else None)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    federation = argparse.ArgumentParser(add_help=False)
    federation.add_argument("--federation", type=Path, required=True, metavar="FILE",
                            help="the federation file `flchain deploy` wrote")
    federation.add_argument("--url", required=True, metavar="URL", help="a JSON-RPC node of the federation's chain")
    admin = argparse.ArgumentParser(add_help=False)
    admin.add_argument("--keystore", type=Path, required=True, metavar="FILE", help="the admin's v3 keystore")
    password = admin.add_mutually_exclusive_group()
    password.add_argument("--password-env", metavar="VAR",
                          help=f"environment variable holding the keystore password (default {DEFAULT_PASSWORD_ENV})")
    password.add_argument("--password-file", type=Path, metavar="FILE", help="file holding the keystore password")

    listing = actions.add_parser("list", parents=[federation], help="print every member")
    listing.add_argument("--json", action="store_true", help="print the members as JSON")
    listing.set_defaults(handler=handle_list)

    add = actions.add_parser("add", parents=[federation, admin], help="add (or re-activate) a member")
    add.add_argument("--address", metavar="0x...", help="the member's Ethereum address")
    add.add_argument("--x25519", metavar="HEX", help="the member's X25519 public key (32 bytes in hex)")
    add.add_argument("--card", type=Path, metavar="FILE",
                     help='a member card (`flchain keys org` writes card.json; any JSON file with "address" and '
                          '"x25519") instead of --address and --x25519')
    add.add_argument("--roles", required=True, metavar="ROLES",
                     help=f"comma-separated, of: {', '.join(ROLE_NAMES)}")
    add.add_argument("--max-examples", type=int, default=0, metavar="N",
                     help="the most examples one of its updates may claim (default: the federation's maximum)")
    add.add_argument("--aggregator", action="store_true", help="also appoint the member as the aggregator")
    add.set_defaults(handler=handle_add)

    remove = actions.add_parser("remove", parents=[federation, admin], help="deactivate a member")
    remove.add_argument("--address", required=True, metavar="0x...", help="the member's Ethereum address")
    remove.set_defaults(handler=handle_remove)

    appoint = actions.add_parser("set-aggregator", parents=[federation, admin],
                                 help="appoint an active member with the aggregator role as the aggregator")
    appoint.add_argument("--address", required=True, metavar="0x...", help="the member's Ethereum address")
    appoint.set_defaults(handler=handle_set_aggregator)


# ---------------------------------------------------------------- handlers


def handle_list(args: argparse.Namespace) -> int:
    ledger = attach_federation(FederationFile.read(args.federation), args.url)
    members = ledger.members()
    if args.json:
        print(json.dumps([member_json(member) for member in members], indent=1))
    else:
        print(members_table(members))
    return 0


def handle_add(args: argparse.Namespace) -> int:
    address, x25519 = _identity(args)
    roles = parse_roles(args.roles)
    if args.aggregator and not roles & Role.AGGREGATOR:
        raise UsageError("--aggregator needs the aggregator role: add it to --roles")
    ledger, admin = _as_admin(args)
    if ledger.member(address).active:
        raise UsageError(f"{address} is already an active member of {ledger.address}")
    maximum = ledger.parameters().max_examples
    if not 0 <= args.max_examples <= maximum:
        raise UsageError(f"--max-examples must be between 1 and the federation's maximum of {maximum} "
                         f"(or 0 for that maximum), got {args.max_examples}")
    ledger.add_members(admin, [(address, x25519, roles, args.max_examples)])
    member = ledger.member(address)
    print(f"added {address} as member #{member.index} ({role_names(roles)}, at most {member.example_cap} examples "
          "per update)")
    if args.aggregator:
        ledger.set_aggregator(admin, address)
        print(f"appointed {address} as the aggregator")
    return 0


def handle_remove(args: argparse.Namespace) -> int:
    address = parse_address(args.address, "--address")
    ledger, admin = _as_admin(args)
    if not ledger.member(address).active:
        raise UsageError(f"{address} is not an active member of {ledger.address}")
    ledger.remove_member(admin, address)
    print(f"removed {address}")
    return 0


def handle_set_aggregator(args: argparse.Namespace) -> int:
    address = parse_address(args.address, "--address")
    ledger, admin = _as_admin(args)
    member = ledger.member(address)
    if not member.active or not member.roles & Role.AGGREGATOR:
        raise UsageError(f"{address} is not an active member with the aggregator role: add it with --roles aggregator")
    ledger.set_aggregator(admin, address)
    print(f"appointed {address} as the aggregator")
    return 0


# ---------------------------------------------------------------- inputs


def parse_address(text: str | None, option: str) -> str:
    if not text or not is_address(text):
        raise UsageError(f"{option} is not an Ethereum address (0x and 40 hex digits, checksum if mixed case): {text!r}")
    return to_checksum_address(text)


def parse_x25519(text: str | None, option: str) -> bytes:
    try:
        key = bytes.fromhex(str(text).removeprefix("0x"))
    except ValueError:
        key = b""
    if len(key) != 32:
        raise UsageError(f"{option} must be an X25519 public key, 32 bytes in hex (64 digits): {text!r}")
    if not is_usable_recipient(key):
        raise UsageError(f"{option} is a point of small order on Curve25519 ({key.hex()[:16]}…): nobody could seal "
                         "updates for it, and every participant's sealing would stop; ask the member for its real key")
    return key


def parse_roles(text: str) -> Role:
    roles = Role(0)
    for name in (part.strip().lower() for part in text.split(",")):
        if name not in ROLE_NAMES:
            raise UsageError(f"unknown role {name!r} in --roles; choose from {', '.join(ROLE_NAMES)}")
        roles |= ROLE_NAMES[name]
    return roles


def _identity(args: argparse.Namespace) -> tuple[str, bytes]:
    """The new member's address and X25519 key, from the options or from a card file."""
    if args.card is None:
        if args.address is None or args.x25519 is None:
            raise UsageError("name the member with --address and --x25519, or with --card FILE")
        return parse_address(args.address, "--address"), parse_x25519(args.x25519, "--x25519")
    if args.address is not None or args.x25519 is not None:
        raise UsageError("--card names the member already: leave out --address and --x25519")
    card = read_json(args.card, "member card")
    if not isinstance(card, dict):
        raise UsageError(f"member card {args.card} is not a JSON object with address and x25519")
    return (parse_address(card.get("address"), f"the address in {args.card}"),
            parse_x25519(card.get("x25519"), f"the x25519 key in {args.card}"))


def _as_admin(args: argparse.Namespace) -> tuple[Ledger, LocalAccount]:
    """The federation and the admin's account, after checking the keystore's account is the admin."""
    account = unlock_keystore(args.keystore, password_env=args.password_env or DEFAULT_PASSWORD_ENV,
                              password_file=args.password_file)
    ledger = attach_federation(FederationFile.read(args.federation), args.url)
    admin = ledger.admin()
    if account.address != admin:
        raise UsageError(f"the keystore {args.keystore} holds {account.address}, "
                         f"not the admin of {ledger.address} ({admin})")
    return ledger, account


# ---------------------------------------------------------------- output


def role_names(roles: Role) -> str:
    return ",".join(name for name, role in ROLE_NAMES.items() if roles & role) or "-"


def member_json(member: Member) -> dict[str, Any]:
    return {"index": member.index, "address": member.address, "roles": role_names(member.roles).split(","),
            "active": member.active, "x25519": member.x25519.hex(), "example_cap": member.example_cap,
            "since_block": member.since}


def members_table(members: Sequence[Member]) -> str:
    rows = [(str(m.index), m.address, role_names(m.roles), "yes" if m.active else "no",
             m.x25519.hex()[:KEY_PREFIX] + "…") for m in members]
    return table(("index", "address", "roles", "active", "x25519"), rows)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns, as wide as their widest cell."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip()
                     for line in (headers, *rows))

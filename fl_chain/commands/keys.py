"""`flchain keys org|superlink`: what each party of a deployment generates for itself.

    flchain keys org NAME --out DIR [--password-env VAR | --password-file FILE]
    flchain keys superlink --out DIR [--host NAME_OR_IP]...

`org` writes an organization's Ethereum keystore, X25519 key file, SuperNode
authentication key pair and its public member card (fl_chain/orgkeys.py); only the
card leaves the site. `superlink` writes the SuperLink's CA and server certificate;
only ca.crt is handed to the organizations.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fl_chain.chain.accounts import DEFAULT_PASSWORD_ENV, read_password
from fl_chain.orgkeys import OrgFiles, generate_org, superlink_tls

DEFAULT_HOSTS = ("127.0.0.1", "localhost")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("keys", help="generate a deployment party's keys and certificates",
                                   description=__doc__.splitlines()[0] if __doc__ else None)
    kinds = parser.add_subparsers(dest="kind", required=True, metavar="KIND")
    org = kinds.add_parser("org", help="an organization's keystore, X25519 key, SuperNode key and member card")
    org.add_argument("name", metavar="NAME", help="the organization's name (shown on its card)")
    org.add_argument("--out", type=Path, required=True, metavar="DIR", help="the directory to write the keys into")
    password = org.add_mutually_exclusive_group()
    password.add_argument("--password-env", metavar="VAR",
                          help=f"environment variable holding the keystore password (default {DEFAULT_PASSWORD_ENV})")
    password.add_argument("--password-file", type=Path, metavar="FILE", help="file holding the keystore password")
    org.set_defaults(handler=handle_org)
    superlink = kinds.add_parser("superlink", help="the SuperLink's CA and TLS server certificate")
    superlink.add_argument("--out", type=Path, required=True, metavar="DIR", help="the directory to write into")
    superlink.add_argument("--host", action="append", metavar="NAME_OR_IP",
                           help=f"a name or address SuperNodes reach the SuperLink at (default {', '.join(DEFAULT_HOSTS)})")
    superlink.set_defaults(handler=handle_superlink)


def handle_org(args: argparse.Namespace) -> int:
    if args.password_file:
        password = read_password(file=args.password_file)
    else:
        password = read_password(env=args.password_env or DEFAULT_PASSWORD_ENV)
    card = generate_org(args.name, args.out, password)
    files = OrgFiles(args.out)
    print(f"organization {card.name}: account {card.address}")
    print(f"  secret, stays on site: {files.keystore}, {files.x25519_key}, {files.node_auth_private}")
    print(f"  public, to the consortium admin: {files.card} (and {files.node_auth_public})")
    return 0


def handle_superlink(args: argparse.Namespace) -> int:
    files = superlink_tls(args.out, list(args.host or DEFAULT_HOSTS))
    print(f"SuperLink TLS for {', '.join(args.host or DEFAULT_HOSTS)}")
    print(f"  secret, stays on the SuperLink host: {files.server_key}, {files.ca_key}")
    print(f"  server certificate: {files.server_certificate}; CA certificate for every SuperNode: {files.ca_certificate}")
    return 0

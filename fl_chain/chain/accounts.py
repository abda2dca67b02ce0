"""Ethereum accounts for real chains: v3 keystore files.

Passwords come from an environment variable or a file, never from a command-line
argument (which other users of the machine can read in the process list).
"""

from __future__ import annotations

import os
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

from fl_chain.errors import UsageError
from fl_chain.jsonfiles import read_json, write_private_json


class KeystoreError(UsageError):
    """A keystore file is missing or unreadable, or its password is wrong."""


DEFAULT_PASSWORD_ENV = "FLCHAIN_PASSWORD"


def read_password(*, env: str | None = None, file: Path | None = None) -> str:
    if env:
        if env not in os.environ:
            raise KeystoreError(f"the keystore password variable {env} is not set")
        return os.environ[env]
    if file:
        try:
            return Path(file).read_text().rstrip("\r\n")
        except OSError as error:
            raise KeystoreError(f"cannot read the password file {file}: {error.strerror}") from None
    raise KeystoreError("no keystore password given: name an environment variable or a password file")


def unlock_keystore(
    path: Path, *, password_env: str | None = DEFAULT_PASSWORD_ENV, password_file: Path | None = None
) -> LocalAccount:
    """The keystore's account, with its password from `password_file` if one is named, else
    from the variable `password_env`; the file is read first, so a missing one is named first."""
    keystore = read_json(path, "keystore file", KeystoreError)
    password = read_password(file=password_file) if password_file else read_password(env=password_env)
    return _decrypt(path, keystore, password)


def _decrypt(path: Path, keystore: object, password: str) -> LocalAccount:
    try:
        key = Account.decrypt(keystore, password)
    except ValueError as error:
        if "MAC mismatch" in str(error):
            raise KeystoreError(f"wrong password for keystore {path}") from None
        raise KeystoreError(f"keystore {path} is not a v3 keystore: {error}") from None
    except KeyError as error:
        raise KeystoreError(f"keystore {path} is not a v3 keystore (it has no {error} field)") from None
    except TypeError:
        raise KeystoreError(f"keystore {path} is not a v3 keystore (not a JSON object)") from None
    return Account.from_key(key)


def write_keystore(account: LocalAccount, path: Path, password: str) -> None:
    """Writes `account` as a v3 keystore readable only by its owner."""
    write_private_json(path, Account.encrypt(account.key, password))

"""Decodes a contract's revert data (custom errors, Error(string), Panic) from its ABI."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi import decode
from eth_utils import function_signature_to_4byte_selector

_ERROR_STRING = function_signature_to_4byte_selector("Error(string)")
_PANIC = function_signature_to_4byte_selector("Panic(uint256)")


@dataclass(frozen=True)
class Revert:
    """A decoded revert: the error's name and its arguments by name."""

    name: str
    args: dict[str, Any]


def _abi_type(entry: dict[str, Any]) -> str:
    if entry["type"].startswith("tuple"):
        inner = ",".join(_abi_type(component) for component in entry["components"])
        return f"({inner}){entry['type'][5:]}"
    return entry["type"]


def decode_revert(abi: Sequence[dict[str, Any]], data: bytes) -> Revert | None:
    """Returns the revert named by `data`, or None when it matches nothing known."""
    selector, payload = data[:4], data[4:]
    if selector == _ERROR_STRING:
        return Revert("Error", {"message": decode(["string"], payload)[0]})
    if selector == _PANIC:
        return Revert("Panic", {"code": decode(["uint256"], payload)[0]})
    for entry in abi:
        if entry.get("type") != "error":
            continue
        types = [_abi_type(item) for item in entry["inputs"]]
        signature = f"{entry['name']}({','.join(types)})"
        if function_signature_to_4byte_selector(signature) == selector:
            values = decode(types, payload)
            return Revert(entry["name"], {item["name"]: value for item, value in zip(entry["inputs"], values)})
    return None

"""Small JSON files: read with an error that names the file, and written privately when
they hold secrets (keystores, key files). JSON from a stranger is parsed by `parse_json`,
which refuses deep nesting before Python's parser sees it: with the recursion limit the
EVM's libraries set, a few hundred kilobytes of brackets would otherwise crash the
process instead of raising."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from fl_chain.errors import UsageError

MAX_DEPTH = 64
_STRUCTURE = re.compile(r'[\[\]{}"\\]')


def parse_json(text: str | bytes) -> Any:
    """`json.loads`, after checking the text nests at most `MAX_DEPTH` levels (ValueError if deeper)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    depth = deepest = 0
    in_string, escaped_at = False, -1
    for match in _STRUCTURE.finditer(text):
        token, start = match.group(), match.start()
        if in_string:
            if start == escaped_at:
                continue  # the character after a backslash
            if token == "\\":
                escaped_at = start + 1
            elif token == '"':
                in_string = False
        elif token == '"':
            in_string = True
        elif token in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_DEPTH:
                raise ValueError(f"JSON nested deeper than {MAX_DEPTH} levels")
        elif token in "]}":
            depth -= 1
    return json.loads(text)


def read_json(path: Path, what: str, error: type[UsageError] = UsageError) -> Any:
    """The parsed file; a missing or unreadable one raises `error` naming `what` and the path."""
    try:
        return parse_json(Path(path).read_text())
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist") from None
    except (OSError, ValueError) as problem:
        raise error(f"{what} {path} is not readable JSON: {problem}") from None


def write_private_json(path: Path, document: Any) -> None:
    """Writes `document` readable only by its owner (mode 0600), creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(document, handle, indent=1)

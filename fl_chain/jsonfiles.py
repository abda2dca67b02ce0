"""Small JSON files: read with an error that names the file, and written privately when
they hold secrets (keystores, key files)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fl_chain.errors import UsageError


def read_json(path: Path, what: str, error: type[UsageError] = UsageError) -> Any:
    """The parsed file; a missing or unreadable one raises `error` naming `what` and the path."""
    try:
        return json.loads(Path(path).read_text())
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

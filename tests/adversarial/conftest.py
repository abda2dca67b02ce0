"""The adversarial suite's fixture: a fresh federation to attack (see cast.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from adversarial.cast import Cast, found_cast


@pytest.fixture
def cast(tmp_path: Path) -> Cast:
    return found_cast(tmp_path)

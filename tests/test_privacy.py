"""The privacy-mode seam: the protocol seals, opens and combines only through the mode.

`Recording` is a mode written for this test (sealed, with every call counted): what is
tested is that the protocol (commit, collect, aggregate, judge) goes through the mode it
is given and through nothing else, so a new mode needs no edit in fl_chain/protocol.py.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import pytest
from test_protocol import coordinator, found

from fl_chain.chain.federation import RoundStatus
from fl_chain.errors import UsageError
from fl_chain.privacy import MODES, SEALED, mode_named, mode_of
from fl_chain.privacy.sealed import Sealed


class Recording(Sealed):
    name = "recording"

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    def seal(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.calls["seal"] += 1
        return super().seal(*args, **kwargs)

    def open(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.calls["open"] += 1
        return super().open(*args, **kwargs)

    def combine(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.calls["combine"] += 1
        return super().combine(*args, **kwargs)


def test_a_round_seals_opens_and_combines_through_the_federations_mode(tmp_path: Path) -> None:
    federation, consortium = found(tmp_path)
    mode = Recording()
    federation = dataclasses.replace(federation, privacy=mode)
    coordinator(federation, consortium, tmp_path / "run", rounds=1).run()
    assert federation.ledger.round(1).status == RoundStatus.ACCEPTED
    participants, validators = len(consortium.participants), len(consortium.validators)
    # every update sealed once, opened by the aggregator and by each validator; combined once by each
    assert mode.calls == {"seal": participants, "open": participants * (1 + validators), "combine": 1 + validators}


def test_modes_are_chosen_by_the_experiments_name_and_an_unknown_one_is_refused() -> None:
    assert mode_of({"privacy": {"mode": "sealed"}}) is SEALED is MODES["sealed"]
    with pytest.raises(UsageError, match=r"unknown privacy mode 'secure'; choose one of \('sealed',\)"):
        mode_named("secure")
    with pytest.raises(UsageError, match=r"names no privacy mode \(privacy.mode"):
        mode_of({"task": {}})

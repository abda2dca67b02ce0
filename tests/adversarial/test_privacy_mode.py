"""The privacy mode `flchain verify` opens a published run's updates with.

fl_chain/commands/verify.py `_privacy_of` picks the mode from the run directory's
config.yaml before the audit checks that config against the chain's task hash; the
publisher controls that file. These pin that a garbled or unknown mode is one clear
error (never a traceback, never a silent fall-back to another mode) and that an
unreadable config falls back to `sealed` only for the audit to fail it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fl_chain.commands.verify import _privacy_of
from fl_chain.errors import UsageError
from fl_chain.privacy import SEALED, mode_of

BASE = "seed: 0\ntask:\n  name: digits\n"


def run_dir_with(tmp_path: Path, privacy: str) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(BASE + privacy)
    return run


@pytest.mark.parametrize("privacy", [
    "privacy:\n  mode: secure\n",  # a mode this fl-chain does not have
    "privacy:\n  mode: [sealed]\n",  # not a name
    "privacy:\n  mode: {sealed: 1}\n",
    "privacy:\n  mode: 1\n",
    "privacy:\n  mode: true\n",
    "privacy:\n  mode: 'sealed '\n",  # a near-miss is not the mode
    "privacy:\n  mode: \"\\e[31msealed\"\n",  # terminal escape in the name
    "privacy: sealed\n",  # not a group
    "privacy: null\n",
    "",  # no privacy group at all
])
def test_a_garbled_or_unknown_privacy_mode_is_one_usage_error(tmp_path: Path, privacy: str) -> None:
    """Holds: verify stops with one line (exit 2) instead of opening updates with a mode
    the config does not name; nothing reaches the audit with a guessed mode."""
    with pytest.raises(UsageError) as refused:
        _privacy_of(run_dir_with(tmp_path, privacy))
    assert "\x1b" not in str(refused.value)


def test_the_named_mode_is_the_one_used(tmp_path: Path) -> None:
    assert _privacy_of(run_dir_with(tmp_path, "privacy:\n  mode: sealed\n  extra: 1\n")) is SEALED


@pytest.mark.parametrize("config", ["- a list\n", "privacy: ${oc.env:HOME}\n", "a: &x [1]\nb: *x\n"])
def test_an_unreadable_config_falls_back_to_sealed_for_the_audit_to_fail(tmp_path: Path, config: str) -> None:
    """Holds: the fall-back is only for a config the audit itself reports as unreadable
    ("federation parameters are the run's" fails); there is one mode, so nothing opens
    differently. A second mode would make this fall-back choose for the publisher."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(config)
    assert _privacy_of(run) is SEALED


def test_a_config_that_is_a_link_is_not_followed(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (tmp_path / "elsewhere.yaml").write_text(BASE + "privacy:\n  mode: secure\n")
    (run / "config.yaml").symlink_to(tmp_path / "elsewhere.yaml")
    assert _privacy_of(run) is SEALED  # refused as a link, then failed by the audit


def test_mode_of_never_raises_anything_but_a_usage_error() -> None:
    for experiment in ({"privacy": []}, {"privacy": {"mode": None}}, {"privacy": {"mode": ["x"] * 10}}, {}):
        with pytest.raises(UsageError):
            mode_of(experiment)

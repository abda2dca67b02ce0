"""The shipped contract artifacts are what the pinned compiler makes of the sources."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from fl_chain.chain.artifacts import FEDERATION, NAIVE_REGISTRY, deployed_code_matches

REPO = Path(__file__).resolve().parent.parent


def test_artifacts_record_the_pinned_compiler_and_their_source() -> None:
    for artifact, source in ((FEDERATION, "Federation.sol"), (NAIVE_REGISTRY, "NaiveRegistry.sol")):
        assert artifact.compiler_version.startswith("0.8.37+")
        text = (REPO / "contracts" / source).read_text()
        assert "pragma solidity 0.8.37;" in text
        assert artifact.source_sha256 == hashlib.sha256(text.encode()).hexdigest(), (
            f"contracts/{source} changed since its artifact was built: run python contracts/build.py"
        )


def test_committed_artifacts_equal_a_fresh_build(node_modules: Path) -> None:
    completed = subprocess.run(
        [sys.executable, str(REPO / "contracts" / "build.py"), "--check"], capture_output=True, text=True
    )
    assert completed.returncode == 0, completed.stderr


def test_deployed_code_comparison_ignores_only_immutables() -> None:
    code = bytearray(FEDERATION.deployed_bytecode)
    start, length = FEDERATION.immutable_ranges[0]
    code[start : start + length] = b"\x11" * length
    assert deployed_code_matches(FEDERATION, bytes(code))
    code[0] ^= 0xFF
    assert not deployed_code_matches(FEDERATION, bytes(code))
    assert not deployed_code_matches(FEDERATION, FEDERATION.deployed_bytecode[:-1])

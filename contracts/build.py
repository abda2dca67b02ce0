"""Compiles contracts/*.sol with the pinned solc (npm `solc`) into the shipped artifacts.

Users never need a compiler: the artifacts in fl_chain/contracts/ are committed. This
script rebuilds them; `--check` rebuilds in memory and fails if the committed artifacts
differ, so a source change without a rebuild cannot go unnoticed.

Usage: python contracts/build.py [--check]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCES = REPO / "contracts"
ARTIFACTS = REPO / "fl_chain" / "contracts"
SOLCJS = REPO / "node_modules" / "solc" / "index.js"
CONTRACTS = ("Federation", "NaiveRegistry")
SETTINGS = {
    "optimizer": {"enabled": True, "runs": 200},
    "evmVersion": "cancun",
    "outputSelection": {
        "*": {
            "*": [
                "abi",
                "evm.bytecode.object",
                "evm.deployedBytecode.object",
                "evm.deployedBytecode.immutableReferences",
            ]
        }
    },
}


def compile_sources() -> dict[str, dict]:
    """Runs solc's standard-JSON interface and returns one artifact per contract."""
    if not SOLCJS.is_file():
        sys.exit(f"build: {SOLCJS} not found; run scripts/setup.sh to install the pinned solc")
    sources = {f"{name}.sol": (SOURCES / f"{name}.sol").read_text() for name in CONTRACTS}
    request = {
        "language": "Solidity",
        "sources": {path: {"content": text} for path, text in sources.items()},
        "settings": SETTINGS,
    }
    script = (
        "const solc = require(process.argv[1]);"
        "let input = '';"
        "process.stdin.on('data', d => input += d);"
        "process.stdin.on('end', () => process.stdout.write(JSON.stringify("
        "{version: solc.version(), output: JSON.parse(solc.compile(input))})));"
    )
    completed = subprocess.run(
        ["node", "-e", script, str(SOLCJS)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
    )
    if completed.returncode != 0:
        sys.exit(f"build: running solc failed:\n{completed.stderr}")
    result = json.loads(completed.stdout)
    errors = [e for e in result["output"].get("errors", []) if e["severity"] == "error"]
    if errors:
        sys.exit("build: solc failed:\n" + "\n".join(e["formattedMessage"] for e in errors))
    artifacts = {}
    for name in CONTRACTS:
        path = f"{name}.sol"
        compiled = result["output"]["contracts"][path][name]
        artifacts[name] = {
            "contractName": name,
            "sourceName": f"contracts/{path}",
            "sourceSha256": hashlib.sha256(sources[path].encode()).hexdigest(),
            "compiler": {"name": "solc", "version": result["version"], "settings": SETTINGS},
            "abi": compiled["abi"],
            "bytecode": "0x" + compiled["evm"]["bytecode"]["object"],
            "deployedBytecode": "0x" + compiled["evm"]["deployedBytecode"]["object"],
            "immutableReferences": compiled["evm"]["deployedBytecode"]["immutableReferences"],
        }
    return artifacts


def serialize(artifact: dict) -> str:
    return json.dumps(artifact, indent=1, sort_keys=True) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if committed artifacts are stale")
    args = parser.parse_args()
    stale = []
    for name, artifact in compile_sources().items():
        target = ARTIFACTS / f"{name}.json"
        text = serialize(artifact)
        if args.check:
            if not target.is_file() or target.read_text() != text:
                stale.append(str(target.relative_to(REPO)))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            print(f"wrote {target.relative_to(REPO)}")
    if stale:
        print("stale artifacts (run python contracts/build.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

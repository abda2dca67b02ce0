#!/usr/bin/env bash
# Sets up a fresh machine: a virtualenv in .venv with the pinned CPU PyTorch first
# (a bare `torch` would pull several GB of CUDA packages), the package itself, and the
# pinned Node tools (solc, anvil, ipfs-unixfs-importer) in node_modules.
# Usage: scripts/setup.sh [--dev]
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
if [[ "${1:-}" == "--dev" ]]; then extras="[dev]"; fi

if [[ ! -x .venv/bin/python ]]; then
  echo "[setup] creating .venv" >&2
  python3 -m venv .venv
fi
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
echo "[setup] installing torch==2.13.0 (CPU build)" >&2
pip install "torch==2.13.0"
echo "[setup] installing fl-chain${extras}" >&2
pip install --pre -c constraints.txt -e ".${extras}"

if command -v npm >/dev/null; then
  echo "[setup] installing pinned Node tools" >&2
  npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null
else
  echo "[setup] npm not found: anvil and the CID cross-check will be unavailable" >&2
fi
echo "[setup] done" >&2

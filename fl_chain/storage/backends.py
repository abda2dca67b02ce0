"""Opens the content store a config names (`configs/storage/*.yaml`): local or kubo."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fl_chain.errors import UsageError
from fl_chain.storage.blockstore import ContentStore, LocalStore
from fl_chain.storage.ipfs import DEFAULT_API, DEFAULT_TIMEOUT, IpfsStore

BACKENDS = ("local", "ipfs")


def open_store(spec: Mapping[str, Any], run_dir: Path | None) -> ContentStore:
    """The store of `spec`, e.g. `{"backend": "local"}` or `{"backend": "ipfs", "api": ..., "timeout": 30}`.

    A local store lives in `spec["dir"]` when given, else in `run_dir/store`. A kubo store
    connects at once, so an unreachable daemon fails here (`StoreUnreachable`), not mid-run.
    """
    backend = spec.get("backend")
    if backend == "local":
        directory = spec.get("dir")
        if directory is None:
            if run_dir is None:
                raise UsageError("the local content store needs storage.dir or a run directory")
            directory = Path(run_dir) / "store"
        return LocalStore(Path(directory))
    if backend == "ipfs":
        timeout = spec.get("timeout", DEFAULT_TIMEOUT)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise UsageError(f"storage.timeout must be a number of seconds, got {timeout!r}")
        return IpfsStore(str(spec.get("api") or DEFAULT_API), timeout=timeout)
    raise UsageError(f"unknown storage backend {backend!r}; choose one of {BACKENDS}")

"""SHA-256 of many buffers at once, on every core: hashlib releases the GIL on large
inputs, so a thread pool hashes a big blob's chunks in parallel (CIDs, sealing)."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from hashlib import sha256

Buffer = bytes | bytearray | memoryview

_PARALLEL_MIN_BYTES = 1 << 20  # below this, thread hand-off costs more than it saves
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _reset_pool_after_fork() -> None:
    # A forked child inherits the pool object but not its threads; start afresh.
    global _pool
    _pool = None


os.register_at_fork(after_in_child=_reset_pool_after_fork)


def _hash_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="flchain-sha256")
        return _pool


def _digest(chunk: Buffer) -> bytes:
    return sha256(chunk).digest()


def sha256_each(blocks: list[Buffer]) -> list[bytes]:
    """sha2-256 of each buffer, in order; in parallel when there is enough to hash."""
    if len(blocks) > 1 and sum(len(b) for b in blocks) >= _PARALLEL_MIN_BYTES:
        return list(_hash_pool().map(_digest, blocks))
    return [_digest(b) for b in blocks]

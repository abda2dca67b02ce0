"""Independent seeds for every (run, participant, round, purpose) from one run seed.

Adding small offsets to a seed makes neighbouring runs share streams; hashing the whole
tuple through NumPy's SeedSequence keeps them apart and stays stable across versions.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np


def derive_seed(seed: int, *labels: int) -> int:
    """A 32-bit seed determined by `seed` and the integer labels that follow it."""
    return int(np.random.SeedSequence([seed, *labels]).generate_state(1)[0])


@contextmanager
def seeded_globals(seed: int) -> Iterator[None]:
    """Python's, NumPy's and torch's global generators seeded with `seed` for the block and
    restored after it: a task drawing from them (dropout, a DataLoader's shuffle) repeats
    itself, and nothing outside the block sees a difference."""
    import torch  # here, not at import: the framework's lighter commands never need it

    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            random.seed(seed)
            np.random.seed(seed)
            torch.manual_seed(seed)
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)

"""Independent seeds for every (run, participant, round, purpose) from one run seed.

Adding small offsets to a seed makes neighbouring runs share streams; hashing the whole
tuple through NumPy's SeedSequence keeps them apart and stays stable across versions.
"""

from __future__ import annotations

import numpy as np


def derive_seed(seed: int, *labels: int) -> int:
    """A 32-bit seed determined by `seed` and the integer labels that follow it."""
    return int(np.random.SeedSequence([seed, *labels]).generate_state(1)[0])

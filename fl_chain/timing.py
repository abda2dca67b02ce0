"""Seconds per protocol stage, so a run can say where its time went."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class Stopwatch:
    """Accumulates wall-clock seconds per named stage: `with stopwatch("seal"): ...`."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start


def timed(stopwatch: Stopwatch | None, stage: str):  # type: ignore[no-untyped-def]
    """`with timed(maybe_stopwatch, "stage"):` times only when a stopwatch is given."""
    return stopwatch(stage) if stopwatch is not None else _untimed()


@contextmanager
def _untimed() -> Iterator[None]:
    yield

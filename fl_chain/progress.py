"""One line per round on the terminal: round, stage, and the figures as they arrive."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Prints `[round 3/10] stage ...` updates; on a terminal the line is rewritten in place."""

    def __init__(self, rounds: int, stream: TextIO = sys.stderr) -> None:
        self.rounds = rounds
        self.stream = stream
        self._live = stream.isatty()
        self._round = 0
        self._started = time.perf_counter()

    def stage(self, round_number: int, text: str) -> None:
        self._round = round_number
        if self._live:
            self.stream.write(f"\r\033[K[round {round_number}/{self.rounds}] {text}")
            self.stream.flush()

    def done(self, round_number: int, text: str) -> None:
        elapsed = time.perf_counter() - self._started
        prefix = "\r\033[K" if self._live else ""
        self.stream.write(f"{prefix}[round {round_number}/{self.rounds}] {text} ({elapsed:.1f} s elapsed)\n")
        self.stream.flush()

    def note(self, text: str) -> None:
        prefix = "\r\033[K" if self._live else ""
        self.stream.write(f"{prefix}{text}\n")
        self.stream.flush()

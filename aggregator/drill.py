"""A fault drill for the aggregator: kill its process at a protocol step.

Operators rehearse the worst case, an aggregator that dies mid-round, and check that
`flchain resume RUN_DIR` carries on from the chain's state with no round lost or done
twice. The drill is armed from the environment, not the run's config, so the resumed run
(which reads the same config.yaml) does not kill itself again:

    FLCHAIN_DRILL_KILL_AGGREGATOR=2:relayed flchain run ...

Points, in protocol order: `opened` (round open on chain), `relayed` (commitments
relayed), `stored` (global model stored, finalize not sent), `finalized` (finalized,
before the validators attest).
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

from fl_chain.errors import UsageError
from fl_chain.progress import Progress

ENVIRONMENT_VARIABLE = "FLCHAIN_DRILL_KILL_AGGREGATOR"
KILL_POINTS = ("opened", "relayed", "stored", "finalized")


@dataclass(frozen=True)
class KillDrill:
    round: int
    point: str

    @classmethod
    def from_environment(cls) -> KillDrill | None:
        value = os.environ.get(ENVIRONMENT_VARIABLE, "").strip()
        if not value:
            return None
        round_text, _, point = value.partition(":")
        if not round_text.isdigit() or int(round_text) < 1 or point not in KILL_POINTS:
            raise UsageError(f"{ENVIRONMENT_VARIABLE}={value!r} must be ROUND:POINT with POINT one of {KILL_POINTS}")
        return cls(int(round_text), point)

    def check(self, round_number: int, point: str, progress: Progress) -> None:
        """Kills this process (SIGKILL: no clean-up, as in a real crash) at the armed step."""
        if (round_number, point) == (self.round, self.point):
            progress.note(f"drill: killing the aggregator in round {round_number} after '{point}'")
            os.kill(os.getpid(), signal.SIGKILL)

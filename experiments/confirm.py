"""Asking before spending: nothing leaves a keystore on a command that read someone's files."""

from __future__ import annotations

import sys
from collections.abc import Callable


def confirmer(assume_yes: bool) -> Callable[[str], bool]:
    """`--yes` answers for the user; otherwise a terminal is asked, and without one the
    answer is no (the message says how to confirm)."""

    def confirm(plan: str) -> bool:
        if assume_yes:
            return True
        if not sys.stdin.isatty():
            print(f"flchain: about to {plan}; not a terminal, so not confirmed (pass --yes to confirm)",
                  file=sys.stderr)
            return False
        answer = input(f"flchain: {plan[0].upper()}{plan[1:]}? [y/N] ")
        return answer.strip().lower() in ("y", "yes")

    return confirm

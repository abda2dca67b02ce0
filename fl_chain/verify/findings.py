"""What an audit found: one finding per check, with the evidence when it failed."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum

from fl_chain.errors import printable

DETAIL_LIMIT = 600


class Status(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    UNCHECKED = "unchecked"  # could not be checked (e.g. no key to open updates)


@dataclass(frozen=True)
class Finding:
    check: str
    status: Status
    round: int | None = None
    participant: str | None = None
    expected: str | None = None
    found: str | None = None
    detail: str = ""

    def describe(self) -> str:
        where = " ".join(part for part in (
            f"round {self.round}" if self.round is not None else "",
            f"participant {self.participant}" if self.participant else "",
        ) if part)
        evidence = f" (expected {self.expected}, found {self.found})" if self.expected is not None else ""
        return f"{where + ': ' if where else ''}{self.check}: {self.detail}{evidence}"


@dataclass
class Findings:
    """Every text a finding carries passes through `printable`: it may quote a file or a
    store, and a report must not let them write to the reader's terminal."""

    items: list[Finding] = field(default_factory=list)

    def passed(self, check: str, detail: str = "", **where: object) -> None:
        self._add(check, Status.PASSED, detail, **where)

    def failed(self, check: str, detail: str, **where: object) -> None:
        """`where` names the round and participant, and may carry `expected` and `found`."""
        self._add(check, Status.FAILED, detail, **where)

    def unchecked(self, check: str, detail: str, **where: object) -> None:
        self._add(check, Status.UNCHECKED, detail, **where)

    def expect(self, check: str, expected: object, found: object, detail: str, **where: object) -> bool:
        """Records a pass when `found == expected`, else a failure with both as evidence."""
        if expected == found:
            self.passed(check, **where)
            return True
        self._add(check, Status.FAILED, detail, expected=expected, found=found, **where)
        return False

    def _add(self, check: str, status: Status, detail: str, **where: object) -> None:
        for key in ("expected", "found", "participant"):
            if where.get(key) is not None:
                where[key] = printable(where[key], DETAIL_LIMIT)
        self.items.append(Finding(check, status, detail=printable(detail, DETAIL_LIMIT), **where))  # type: ignore[arg-type]

    @property
    def failures(self) -> list[Finding]:
        return [f for f in self.items if f.status == Status.FAILED]

    @property
    def ok(self) -> bool:
        return not self.failures

    def for_round(self, round_number: int | None) -> list[Finding]:
        return [f for f in self.items if f.round == round_number]

    def to_json(self) -> list[dict[str, object]]:
        return [{**asdict(f), "status": f.status.value} for f in self.items]

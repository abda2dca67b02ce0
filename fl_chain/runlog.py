"""A run's record: metrics.csv, rounds.jsonl and evaluations.jsonl as the run goes, summary.json at its end.

metrics.csv has one row per participant per round (scope "participant") and one per
round (scope "round"); empty cells are figures that do not apply to that scope. Its
figure columns are the task's own (`Task.metrics`: loss and accuracy, or loss, mse and
r2, ...): a participant's row holds its signed evaluation, a round's row their
example-weighted mean; `train_loss` is what a participant says its training loss was; `drills`
names the drills (fl_chain/drills.py) active in the row's round (and, on a participant's row,
its own), and summary.json lists them all under `drills`. Rows are
appended and flushed as they happen, so an interrupted run keeps what it measured, and
rounds.jsonl keeps each finished round's summary so a resumed run can write the same
summary.json an uninterrupted one would. evaluations.jsonl keeps every participant's
signed evaluation of each accepted model: the evidence the round's accuracy and loss
rest on (`flchain verify` recomputes them from it; timings and gas are the aggregator's
own measurements and are reported as such).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fl_chain.errors import UsageError, printable
from fl_chain.jsonfiles import parse_json
from fl_chain.messages import Evaluation

EVALUATIONS_FILE = "evaluations.jsonl"

STAGES = (
    "fetch", "train", "encode", "encrypt", "store", "sign", "open_round", "relay", "collect", "fetch_updates",
    "open_updates", "aggregate", "finalize", "attest", "evaluate", "attest_evaluate", "total",
)
LEADING = ("round", "scope", "participant", "train_loss")
TRAILING = ("examples", "bytes", "gas", "excluded", "centre_distance", "centre_cosine", "step_norm", "drills",
            *(f"seconds_{stage}" for stage in STAGES))
CLASSIFICATION_METRICS = ("loss", "accuracy")
SUMMARY_FIELDS = ("round", "global_cid", "centralized")  # summary.json's `final`, besides the signed figures


def columns(metrics: Sequence[str]) -> tuple[str, ...]:
    """metrics.csv's header for a task reporting `metrics`."""
    return (*LEADING, *(name for name in metrics if name not in LEADING + TRAILING), *TRAILING)


@dataclass
class RoundSummary:
    round: int
    global_cid: str
    accepted: bool
    commitments: int
    included: int
    metrics: dict[str, float]  # the example-weighted mean of the participants' signed evaluations
    gas_used: int
    seconds: float
    exclusions: list[dict[str, str]] = field(default_factory=list)
    attempt: int = 1
    resumed: bool = False
    outliers: list[str] = field(default_factory=list)  # excluded by the outlier test (fl_chain/outliers.py)


ROUND_FIELDS = frozenset(RoundSummary.__dataclass_fields__)
TYPES: dict[str, type | tuple[type, ...]] = {
    "round": int, "global_cid": str, "accepted": bool, "commitments": int, "included": int,
    "metrics": dict, "gas_used": int, "seconds": (float, int),
    "exclusions": list, "attempt": int, "resumed": bool, "outliers": list,
}


class RunLog:
    """Writes metrics.csv, rounds.jsonl and summary.json into a run directory.

    `metrics` names the task's figures (its metrics.csv columns); `resume=True` keeps what
    an interrupted run already wrote and carries on after it; `drills` are the run's drills
    as summary.json lists them (fl_chain.drills.records).
    """

    def __init__(self, run_dir: Path, *, metrics: Sequence[str] = CLASSIFICATION_METRICS, resume: bool = False,
                 drills: Sequence[dict[str, Any]] = ()) -> None:
        self.run_dir = Path(run_dir)
        self.drills = list(drills)
        self._metrics = self.run_dir / "metrics.csv"
        self._rounds = self.run_dir / "rounds.jsonl"
        self._evaluations = self.run_dir / EVALUATIONS_FILE
        self.columns = columns(metrics)
        if resume and self._metrics.is_file():
            self.rounds = [self._summary(number, line) for number, line in enumerate(self._read_rounds(), start=1)]
            self._adopt_columns()
            return
        self.rounds = []
        self._rounds.write_text("")
        self._evaluations.write_text("")
        with open(self._metrics, "w", newline="") as handle:
            csv.writer(handle).writerow(self.columns)

    def _adopt_columns(self) -> None:
        """A run resumed by a newer fl-chain may have fewer columns: its rows are rewritten
        under this version's header (new cells empty), so appended rows line up."""
        with open(self._metrics, newline="") as handle:
            reader = csv.DictReader(handle)
            if tuple(reader.fieldnames or ()) == self.columns:
                return
            rows = list(reader)
        unknown = set(reader.fieldnames or ()) - set(self.columns)
        if unknown:
            raise UsageError(f"{self._metrics} has columns this fl-chain does not write ({', '.join(sorted(unknown))}): "
                             "resume it with the version that started it")
        with open(self._metrics, "w", newline="") as handle:
            writer = csv.DictWriter(handle, self.columns, restval="")
            writer.writeheader()
            writer.writerows(rows)

    def participant(self, round_number: int, participant: str, seconds: dict[str, float], signed: dict[str, float],
                    **figures: Any) -> None:
        """A participant's row: its signed evaluation's figures and its own (unverified) ones."""
        self._append({"round": round_number, "scope": "participant", "participant": participant,
                      **self._figures(signed), **figures, "drills": self._drills_in(round_number, participant)}, seconds)

    def round(self, summary: RoundSummary, seconds: dict[str, float]) -> None:
        self.rounds.append(summary)
        self._append({"round": summary.round, "scope": "round", "participant": "", "gas": summary.gas_used,
                      **self._figures(summary.metrics), "drills": self._drills_in(summary.round)}, seconds)
        with open(self._rounds, "a") as handle:
            handle.write(json.dumps(asdict(summary)) + "\n")

    def _summary(self, number: int, line: str) -> RoundSummary:
        try:
            summary = RoundSummary(**parse_json(line))
        except (TypeError, ValueError) as error:
            raise UsageError(f"{self._rounds} line {number} is not a round summary: {printable(error)}") from None
        for name, kind in TYPES.items():
            value = getattr(summary, name)
            if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
                raise UsageError(f"{self._rounds} line {number}: {name} is {printable(repr(value), 60)}")
        return summary

    def evaluations(self, evaluations: Sequence[Evaluation]) -> None:
        """Appends a round's signed evaluations, in participant address order."""
        with open(self._evaluations, "a") as handle:
            for evaluation in sorted(evaluations, key=lambda e: int(e.participant, 16)):
                handle.write(json.dumps(evaluation.to_json(), sort_keys=True) + "\n")

    def _read_rounds(self) -> list[str]:
        """Finished rounds' summaries; a line cut short by a crash is the unfinished round."""
        if not self._rounds.is_file():
            return []
        lines = self._rounds.read_text().splitlines()
        complete = []
        for line in lines:
            try:
                parse_json(line)
            except ValueError:
                break
            complete.append(line)
        return complete

    def write_final(self, chain: dict[str, Any], final_round: int, final_model: str,
                    centralized: dict[str, float] | None = None) -> dict[str, Any]:
        """summary.json once every round is accepted: `final` holds the last round's signed
        figures by name (and the centralized baseline's, when there is one)."""
        final = {"round": final_round, "global_cid": final_model, **self.rounds[-1].metrics}
        if centralized is not None:
            final["centralized"] = centralized
        return self.write_summary(chain, final)

    def write_summary(self, chain: dict[str, Any], final: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
        commitments = sum(r.commitments for r in self.rounds)
        total_gas = sum(r.gas_used for r in self.rounds)
        summary = {
            "chain": chain,
            "rounds": [asdict(r) for r in self.rounds],
            "final": final,
            "gas": {"total": total_gas, "per_commitment": round(total_gas / commitments, 1) if commitments else None},
            "outliers": flagged_participants(self.rounds),
            "drills": self.drills,
            **(extra or {}),
        }
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        return summary

    def _drills_in(self, round_number: int, participant: str | None = None) -> str | None:
        """The labels of the drills active in a round (of `participant`'s, if given)."""
        labels = [d["label"] for d in self.drills if round_number in d["rounds"]
                  and (participant is None or participant.lower() in (a.lower() for a in d["addresses"]))]
        return "; ".join(labels) or None

    def _figures(self, signed: dict[str, float]) -> dict[str, float]:
        """The signed figures metrics.csv has a column for (a task may report more)."""
        return {name: value for name, value in signed.items() if name in self.columns and name not in LEADING + TRAILING}

    def _append(self, row: dict[str, Any], seconds: dict[str, float]) -> None:
        row |= {f"seconds_{stage}": round(value, 4) for stage, value in seconds.items() if stage in STAGES}
        unknown = set(row) - set(self.columns)
        if unknown:
            raise ValueError(f"metrics.csv has no columns {sorted(unknown)}")
        with open(self._metrics, "a", newline="") as handle:
            csv.DictWriter(handle, self.columns).writerow({key: "" if value is None else value
                                                           for key, value in row.items()})


def flagged_participants(rounds: Sequence[RoundSummary]) -> dict[str, list[int]]:
    """Each participant the outlier test excluded, with the rounds it was excluded in."""
    flagged: dict[str, list[int]] = {}
    for summary in rounds:
        for participant in summary.outliers:
            flagged.setdefault(participant, []).append(summary.round)
    return dict(sorted(flagged.items(), key=lambda item: (-len(item[1]), int(item[0], 16))))


def outlier_lines(flagged: dict[str, list[int]], rounds: int) -> list[str]:
    """The summary's outliers in words: who the test excluded, in how many rounds and which."""
    return [f"{participant} was excluded as an outlier in {len(numbers)} of {rounds} rounds "
            f"({', '.join(map(str, numbers))})" for participant, numbers in flagged.items()]


def shown_figures(metrics: dict[str, float]) -> str:
    """A line's worth of figures: every one but loss (loss alone if it is all there is)."""
    shown = {name: value for name, value in metrics.items() if name != "loss"} or metrics
    return ", ".join(f"{name} {value:.4f}" for name, value in shown.items()) or "not evaluated"

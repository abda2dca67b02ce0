"""One protocol round with many simulated participants: time and gas, and their growth."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from experiments.suites.report import write_results
from fl_chain.bench.scale import measure_scale, progress_to_stderr
from fl_chain.plots import plot_growth


def run(config: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    figures = measure_scale(tuple(config["participant_counts"]), int(config["validators"]), progress_to_stderr)
    print(figures.table())
    write_results(out_dir, "Scale", [
        "One full round on the embedded chain per participant count, driven by the round coordinator a Flower "
        "run drives, over the in-process transport: the aggregator opens it; every participant fetches the "
        "model by CID, seals a (seeded, untrained) update of a small model, stores it and signs its commitment; "
        "the aggregator relays all commitments in one transaction, collects and opens the updates by their "
        "on-chain CIDs, aggregates and finalizes; every validator re-judges and attests while every participant "
        "signs its evaluation of the model (the validate stage). Participants run one after another in this "
        "process, so per-participant time is what each hospital would spend, and the round time is an upper "
        "bound of a real, parallel round. Training is left out: it does not depend on the number of participants.",
        figures.target_line(),
    ], figures.table(), figures.as_json())
    rounds = figures.as_json()["rounds"]
    plot_growth(out_dir / "scale.png", "One round against the number of participants", [r["participants"] for r in rounds],
                {"round time": ("seconds", [r["round_seconds"] for r in rounds]),
                 "round gas": ("gas", [r["round_gas"] for r in rounds])})
    return figures.as_json()

"""Overhead against plain Flower: the same training with and without the chain, measured
side by side in one invocation, with fl-chain's time per round broken down by stage.

Each mode runs the same experiment (model, data, seeds, rounds, training code) through
Flower's simulation engine; a round's time is its wall-clock time seen by the server
(train and federated evaluation for plain Flower; open, train, relay, collect, aggregate,
finalize, attest and evaluate for fl-chain). The first rounds are excluded from the
means: they include starting Flower's actors and importing the training stack.
"""

from __future__ import annotations

import csv
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from aggregator.config import compose_experiment
from experiments.harness import run_experiment
from experiments.plain_flower import run_plain
from experiments.simulation import simulate
from experiments.suites.environment import markdown as environment_markdown
from fl_chain.chain.federation import experiment_of
from fl_chain.plots import plot_stacked_bars
from fl_chain.settings import RunSettings

TARGETS = {"embedded": 1.25, "anvil": 1.10}
PARTICIPANT_STAGES = ("fetch", "train", "encode", "encrypt", "store", "sign")
AGGREGATOR_STAGES = ("open_round", "relay", "fetch_updates", "open_updates", "aggregate", "finalize",
                     "attest_evaluate")


def _stage_means(run_dir: Path, warmup: int) -> dict[str, float]:
    """Mean seconds per round of each stage; participants' stages averaged over participants."""
    per_round: dict[str, list[float]] = {}
    with open(run_dir / "metrics.csv") as handle:
        rows = [row for row in csv.DictReader(handle) if int(row["round"]) > warmup]
    rounds = {row["round"] for row in rows}
    for stage in (*PARTICIPANT_STAGES, *AGGREGATOR_STAGES):
        scope = "participant" if stage in PARTICIPANT_STAGES else "round"
        values = [float(row[f"seconds_{stage}"]) for row in rows if row["scope"] == scope and row[f"seconds_{stage}"]]
        if values:
            per_round[stage] = values
    return {stage: sum(values) / (len(values) if stage in PARTICIPANT_STAGES else len(rounds))
            for stage, values in per_round.items()}


def run(config: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    warmup = int(config["warmup_rounds"])
    rounds = int(config["rounds"])
    experiment = compose_experiment([*config["experiment"], f"rounds={rounds}"])
    out_dir.mkdir(parents=True, exist_ok=True)
    plain = run_plain(RunSettings(experiment=experiment_of(experiment), chain_url="", contract="", store={}), rounds)
    results: dict[str, Any] = {"rounds": rounds, "warmup_rounds": warmup,
                               "plain": {"seconds_per_round": plain, "mean": statistics.mean(plain[warmup:])}}
    with tempfile.TemporaryDirectory(prefix="fl-chain-overhead-") as scratch:
        for backend in config["backends"]:
            run_dir = Path(scratch) / backend
            summary = run_experiment({**experiment, "chain": {**experiment["chain"], **_chain(backend)}}, run_dir, simulate)
            seconds = [r["seconds"] for r in summary["rounds"]]
            mean = statistics.mean(seconds[warmup:])
            results[backend] = {
                "seconds_per_round": seconds,
                "mean": mean,
                "ratio": mean / results["plain"]["mean"],
                "target": TARGETS.get(backend),
                "stages": _stage_means(run_dir, warmup),
                "final_accuracy": summary["final"].get("accuracy"),
            }
    _write(results, out_dir, experiment)
    return results


def _chain(backend: str) -> dict[str, Any]:
    return {"embedded": {"backend": "embedded", "chain_id": 1337}, "anvil": {"backend": "anvil", "chain_id": 31337}}[backend]


def verdict(ratio: float, target: float | None) -> str:
    if target is None:
        return ""
    return "met" if ratio <= target else f"missed by {100 * (ratio / target - 1):.0f}%"


def _explanation(results: dict[str, Any], backends: list[str]) -> str:
    """Why a target is missed: the fixed per-round cost of the protocol, next to the work."""
    parts = []
    for backend in backends:
        figures, stages = results[backend], results[backend]["stages"]
        chain = sum(stages.get(s, 0.0) for s in ("open_round", "relay", "finalize"))
        validation = stages.get("attest_evaluate", 0.0)
        added = figures["mean"] - results["plain"]["mean"]
        parts.append(
            f"On the {backend} chain fl-chain adds {added:.2f} s per round: {chain:.2f} s of the aggregator's "
            f"transactions (open, relay, finalize), {validation:.2f} s for the message round in which validators "
            f"re-compute and attest while participants evaluate, and the rest in participants' chain reads, "
            f"sealing and storing. These costs are fixed per round, while plain Flower's round here is "
            f"{results['plain']['mean']:.2f} s of training a small model: the ratio falls as local training grows."
        )
    return "\n\n".join(parts)


def _write(results: dict[str, Any], out_dir: Path, experiment: dict[str, Any]) -> None:
    backends = [key for key in results if key not in ("rounds", "warmup_rounds", "plain")]
    lines = [
        "# Overhead against plain Flower",
        "",
        f"Experiment: {experiment['task']['name']}, {experiment['num_participants']} participants, "
        f"{results['rounds']} rounds, partition {experiment['partition']['scheme']}, seed {experiment['seed']}. "
        f"Means exclude the first {results['warmup_rounds']} round(s) (actor start-up).",
        "",
        "| mode | seconds per round | ratio to plain Flower | target | |",
        "|---|---|---|---|---|",
        f"| plain Flower | {results['plain']['mean']:.3f} | 1.00 | | |",
    ]
    for backend in backends:
        figures = results[backend]
        lines.append(f"| fl-chain, {backend} chain | {figures['mean']:.3f} | {figures['ratio']:.2f} | "
                     f"<= {figures['target']} | {verdict(figures['ratio'], figures['target'])} |")
    lines += ["", _explanation(results, backends)]
    lines += ["", "## Where fl-chain's time goes (seconds per round)", "",
              "| stage | " + " | ".join(backends) + " |", "|---|" + "---|" * len(backends)]
    stages = [s for s in (*PARTICIPANT_STAGES, *AGGREGATOR_STAGES) if any(s in results[b]["stages"] for b in backends)]
    for stage in stages:
        who = "participant" if stage in PARTICIPANT_STAGES else "aggregator"
        lines.append(f"| {stage} ({who}) | " + " | ".join(f"{results[b]['stages'].get(stage, 0):.3f}" for b in backends) + " |")
    lines += ["", "Participants' stages are per participant (they run in parallel on the two cores); "
              "`attest_evaluate` is one message round in which validators re-compute and attest (their "
              "transactions included) while every participant evaluates the model.", "",
              "## Environment", "", environment_markdown()]
    (out_dir / "results.md").write_text("\n".join(lines) + "\n")
    (out_dir / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    bars = {}
    for backend in backends:
        stages = {s: v for s, v in results[backend]["stages"].items() if s in AGGREGATOR_STAGES}
        bars[backend] = {"train round trip (participants)": results[backend]["mean"] - sum(stages.values()), **stages}
    plot_stacked_bars(out_dir / "overhead.png", "fl-chain time per round by stage", "seconds", bars,
                      reference=("plain Flower round", results["plain"]["mean"]))

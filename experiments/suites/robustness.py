"""The robustness suite: which aggregation rule survives which attack, and who gets caught.

For every federation x seed x rule x attack x attacker share of configs/bench/robustness.yaml
it composes the experiment `flchain run` would run (configs/config.yaml, the rule, the
attack as a drill on a seeded `fraction` of the participants) and replays it in-process
(fl_chain/bench/robustness.py). Each cell reports the final test accuracy (mean and sample
standard deviation over seeds), the detection rate (attacker updates left out of the
aggregate: refused by the contract or excluded by the aggregator, over attacker updates
offered) and the false-positive rate (honest updates left out, over honest updates).

The cells listed under `on_chain` also run as real fl-chain runs (experiments.harness on
the embedded chain); their accuracy, model and outliers are reported next to the replay's.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from omegaconf import OmegaConf

from aggregator.config import compose_experiment, validate
from experiments.harness import run_experiment
from experiments.simulation import simulate
from experiments.suites import environment
from experiments.suites.accuracy import runs_directory
from fl_chain.bench.robustness import rate, replay
from fl_chain.errors import FlChainError

TARGET_POINTS = 0.02  # the target: the best rule within 2 points of clean FedAvg at 20 percent
CLEAN = "none"


@dataclass(frozen=True)
class Cell:
    federation: str
    seed: int
    rule: str
    attack: str
    share: float

    @property
    def label(self) -> str:
        return f"{self.federation} seed {self.seed} {self.rule} {self.attack}@{self.share:g}"


@dataclass(frozen=True)
class Measurement:
    federation: str
    seed: int
    rule: str
    attack: str
    share: float
    accuracy: float | None
    detection: float | None
    false_positive: float | None
    rounds: int
    seconds: float
    outliers: dict[str, list[int]]
    reason: str | None = None


def cells(config: dict[str, Any]) -> Iterator[Cell]:
    attacks = [(CLEAN, 0.0)] * (CLEAN in config["attacks"]) + [
        (attack, share) for attack in config["attacks"] if attack != CLEAN for share in config["shares"]]
    for federation in config["federations"]:
        for seed in config["seeds"]:
            for rule in config["rules"]:
                for attack, share in attacks:
                    yield Cell(federation, seed, rule, attack, share)


def experiment_of(config: dict[str, Any], cell: Cell) -> dict[str, Any]:
    """The config `flchain run` would be given for `cell` (validated as it would be)."""
    federation = config["federations"][cell.federation]
    strategy = config["rules"][cell.rule]
    overrides = [f"{key}={value}" for key, value in federation.items()]
    overrides += [f"seed={cell.seed}", f"strategy={cell.rule}", *(f"strategy.{k}={v}" for k, v in strategy.items())]
    experiment = compose_experiment([*overrides, *config["overrides"]])
    if config["quorum"] == "auto" and "f" in experiment["strategy"]:
        experiment["quorum"] = max(experiment["quorum"], 2 * int(experiment["strategy"]["f"]) + 3)
    if cell.attack != CLEAN:
        experiment["drills"] = [{"fraction": cell.share, "kind": cell.attack, **config["attacks"][cell.attack]}]
    validate(experiment)
    return experiment


def measure(config: dict[str, Any], cell: Cell) -> Measurement:
    started = time.perf_counter()
    try:
        result = replay(experiment_of(config, cell))
    except FlChainError as error:
        return Measurement(**dataclasses.asdict(cell), accuracy=None, detection=None, false_positive=None, rounds=0,
                           seconds=round(time.perf_counter() - started, 2), outliers={}, reason=str(error))
    return Measurement(
        **dataclasses.asdict(cell),
        accuracy=None if result.stopped else result.metrics["accuracy"],
        detection=_finite(rate(result.attackers_excluded, result.attacker_updates)),
        false_positive=_finite(rate(result.honest_excluded, result.honest_updates)),
        rounds=result.rounds, seconds=round(time.perf_counter() - started, 2),
        outliers={str(index): numbers for index, numbers in result.outliers.items()}, reason=result.stopped)


def run(config: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Measures every cell and writes results.md, results.json and robustness.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = list(cells(config))
    started = time.perf_counter()
    measurements = []
    for number, cell in enumerate(todo, start=1):
        measurement = measure(config, cell)
        measurements.append(measurement)
        outcome = (f"accuracy {measurement.accuracy:.4f}" if measurement.accuracy is not None
                   else f"n/a ({measurement.reason})")
        detection = "" if measurement.detection is None else f", detection {measurement.detection:.0%}"
        print(f"[robustness {number}/{len(todo)}] {cell.label}: {outcome}{detection} in {measurement.seconds:.1f} s "
              f"({time.perf_counter() - started:.0f} s elapsed)", file=sys.stderr, flush=True)
    with runs_directory(config.get("runs_dir")) as runs_dir:
        on_chain = [on_chain_run(config, Cell(**spec), runs_dir) for spec in config["on_chain"]]
    results = {
        "suite": "robustness",
        "config": {key: value for key, value in config.items() if key != "runs_dir"},  # a path of this machine
        "seconds": round(time.perf_counter() - started, 1),
        "measurements": [dataclasses.asdict(m) for m in measurements],
        "on_chain": on_chain,
        "aggregates": aggregate(measurements),
        "environment": environment.describe(),
    }
    results["targets"] = targets(results["aggregates"], config)
    (out_dir / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (out_dir / "results.md").write_text(markdown(results))
    plot(results, out_dir / "robustness.png")
    return results


def on_chain_run(config: dict[str, Any], cell: Cell, runs_dir: Path) -> dict[str, Any]:
    """`cell` as a real fl-chain run, next to its replay: the same final model is expected."""
    experiment = experiment_of(config, cell)
    run_dir = runs_dir / cell.label.replace(" ", "_").replace("@", "_")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(experiment)))
    started = time.perf_counter()
    replayed = replay(experiment)
    try:
        summary = run_experiment(experiment, run_dir, simulate)
    except FlChainError as error:
        return {**dataclasses.asdict(cell), "accuracy": None, "reason": str(error),
                "replay_accuracy": None if replayed.stopped else replayed.metrics["accuracy"]}
    seconds = round(time.perf_counter() - started, 1)
    print(f"[robustness on chain] {cell.label}: accuracy {summary['final']['accuracy']:.4f} in {seconds:.0f} s",
          file=sys.stderr, flush=True)
    return {**dataclasses.asdict(cell), "accuracy": summary["final"]["accuracy"], "seconds": seconds,
            "global_cid": summary["final"]["global_cid"], "rounds_accepted": len(summary["rounds"]),
            "outliers": summary["outliers"], "replay_accuracy": replayed.metrics["accuracy"],
            "replay_outlier_rounds": sum(len(rounds) for rounds in replayed.outliers.values())}


# ---------------------------------------------------------------- figures


def aggregate(measurements: list[Measurement]) -> list[dict[str, Any]]:
    """Per federation, rule, attack and share: accuracy mean and spread, detection and
    false-positive rates, over the seeds measured."""
    groups: dict[tuple[str, str, str, float], list[Measurement]] = {}
    for m in measurements:
        groups.setdefault((m.federation, m.rule, m.attack, m.share), []).append(m)
    rows = []
    for (federation, rule, attack, share), group in groups.items():
        accuracies = [m.accuracy for m in group if m.accuracy is not None]
        rows.append({
            "federation": federation, "rule": rule, "attack": attack, "share": share,
            "seeds": len(accuracies), "of": len(group),
            "mean": statistics.fmean(accuracies) if accuracies else None,
            "std": statistics.stdev(accuracies) if len(accuracies) > 1 else None,
            "detection": _mean([m.detection for m in group]),
            "false_positive": _mean([m.false_positive for m in group]),
        })
    return rows


def targets(rows: list[dict[str, Any]], config: dict[str, Any]) -> list[dict[str, Any]]:
    """For each federation and attack at the smallest share measured: the best rule's
    accuracy against clean FedAvg's, and whether it is within the target's 2 points."""
    share = min(config["shares"])
    found = []
    for federation in dict.fromkeys(row["federation"] for row in rows):
        clean = _row(rows, federation, "fedavg", CLEAN, 0.0)
        for attack in config["attacks"]:
            if attack == CLEAN or clean is None or clean["mean"] is None:
                continue
            measured = [row for row in rows if (row["federation"], row["attack"], row["share"]) == (federation, attack, share)
                        and row["mean"] is not None]
            if not measured:
                continue
            best = max(measured, key=lambda row: row["mean"])
            fedavg = _row(rows, federation, "fedavg", attack, share)
            found.append({"federation": federation, "attack": attack, "share": share, "clean_fedavg": clean["mean"],
                          "fedavg": fedavg["mean"] if fedavg else None, "best_rule": best["rule"],
                          "best": best["mean"], "within_target": clean["mean"] - best["mean"] <= TARGET_POINTS})
    return found


def _row(rows: list[dict[str, Any]], federation: str, rule: str, attack: str, share: float) -> dict[str, Any] | None:
    return next((row for row in rows if (row["federation"], row["rule"], row["attack"], row["share"])
                 == (federation, rule, attack, share)), None)


def _mean(values: list[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return statistics.fmean(known) if known else None


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else value


# ---------------------------------------------------------------- reporting


def _attack_label(attack: str, share: float) -> str:
    return "clean" if attack == CLEAN else f"{attack} {share:.0%}"


def _cell_text(row: dict[str, Any] | None) -> str:
    if row is None or row["mean"] is None:
        return "n/a"
    spread = f" ± {row['std']:.3f}" if row["std"] is not None else ""
    caught = "" if row["detection"] is None else f" (det {row['detection']:.0%}"
    caught += "" if row["false_positive"] is None else f"{', ' if caught else ' ('}fp {row['false_positive']:.0%})"
    return f"{row['mean']:.3f}{spread}{caught}"


def markdown(results: dict[str, Any]) -> str:
    config = results["config"]
    rules = list(config["rules"])
    rows = results["aggregates"]
    lines = ["# Robustness: attacks x aggregation rules x attacker share", "",
             "Final test accuracy, mean ± sample standard deviation over seeds "
             f"{', '.join(map(str, config['seeds']))}; *det* is the detection rate (attacker updates left out of "
             "the aggregate, refused by the contract's example cap or excluded by the aggregator), *fp* the "
             "false-positive rate (honest updates left out). n/a: the run stopped (a round fell below the quorum) "
             "or could not be configured; the reasons are in results.json.", ""]
    for federation, settings in config["federations"].items():
        lines += [f"## {federation}: {settings['task']}, {settings['num_participants']} participants, "
                  f"{settings['rounds']} rounds", "",
                  "| attack | " + " | ".join(rules) + " |", "|---|" + "---:|" * len(rules)]
        for attack, share in dict.fromkeys((row["attack"], row["share"]) for row in rows
                                           if row["federation"] == federation):
            lines.append(f"| {_attack_label(attack, share)} | "
                         + " | ".join(_cell_text(_row(rows, federation, rule, attack, share)) for rule in rules) + " |")
        lines.append("")
    lines += ["## Targets", "", f"With {min(config['shares']):.0%} attackers, the best rule against each attack, "
              f"against clean FedAvg (target: within {TARGET_POINTS * 100:.0f} points).", "",
              "| federation | attack | clean FedAvg | FedAvg attacked | best rule | best | within |",
              "|---|---|---:|---:|---|---:|---|"]
    for target in results["targets"]:
        fedavg = "n/a" if target["fedavg"] is None else f"{target['fedavg']:.3f}"
        lines.append(f"| {target['federation']} | {target['attack']} | {target['clean_fedavg']:.3f} | {fedavg} | "
                     f"{target['best_rule']} | {target['best']:.3f} | {'yes' if target['within_target'] else 'NO'} |")
    if results["on_chain"]:
        lines += ["", "## On chain", "", "The acceptance cells as real fl-chain runs (embedded chain; updates sealed, "
                  "committed, excluded and attested on chain), next to their in-process replay.", "",
                  "| cell | accuracy on chain | replayed | outlier exclusions on chain (rounds) | rounds accepted |",
                  "|---|---:|---:|---|---:|"]
        for run in results["on_chain"]:
            if run["accuracy"] is None:
                lines.append(f"| {run['rule']} {_attack_label(run['attack'], run['share'])} | n/a ({run['reason']}) | "
                             f"{run['replay_accuracy'] or 'n/a'} | | |")
                continue
            excluded = "; ".join(f"{who[:10]}…: {len(rounds)} of {run['rounds_accepted']}"
                                 for who, rounds in run["outliers"].items()) or "none"
            lines.append(f"| {run['rule']} {_attack_label(run['attack'], run['share'])} | {run['accuracy']:.4f} | "
                         f"{run['replay_accuracy']:.4f} | {excluded} | {run['rounds_accepted']} |")
    lines += ["", "## Against FLPoison", "", *FLPOISON]
    lines += ["", "## Settings", "", *_notes(results), "", "## Environment", "", environment.markdown()]
    return "\n".join(lines) + "\n"


FLPOISON = [
    "FLPoison (Zhang, Liu, He, Wu, Cong, Huang 2025, \"SoK: Benchmarking Poisoning Attacks and Defenses in "
    "Federated Learning\", arXiv 2502.03801; github.com/vio1etus/FLPoison) is the published reference: 15 attacks "
    "x 17 defences in PyTorch. Its repository publishes no result tables and its paper's tables could not be read "
    "from this machine, so no figure is compared one to one; what differs is set out instead, read from its "
    "configs and code:",
    "",
    "- Scale of the task: MNIST (LeNet, 50 clients), CIFAR-10 (ResNet-18, 20 clients) and others, 100-300 rounds; "
    "ours are scikit-learn's breast_cancer (5 and 10 participants) and 8x8 digits (10), 10-20 rounds, Dirichlet "
    "0.5 splits, small models: the figures above are not comparable in level, only in which rule survives what.",
    "- Attacker share: its MNIST configs use 48 percent attackers, the others 20; ours 20 and 40.",
    "- Weights: its server averages updates unweighted, so it has no inflated-count attack; ours weigh FedAvg by "
    "claimed examples, capped on chain per member, which is why `inflate` is here (and why a member's own-size cap "
    "refuses it outright: `admission_caps=own`, the default).",
    "- Attacks that share a name: its Gaussian attack replaces the update by N(0, 1) noise, ours adds noise of "
    "`sigma` to the honest update; its label flipping is targeted (3 -> 7), ours flips every class (y -> C-1-y); its "
    "ALIE takes z from (n-f-s)/(n-f), ours from the paper's (n-s)/n; both ALIE attackers are omniscient.",
    "- Defences that share a name: its trimmed mean trims 10 percent (ours 20), its Multi-Krum averages the best "
    "20 percent (ours m = 3), its norm clipping adds noise (ours does not). No FLPoison defence records its "
    "verdict on chain; here every exclusion is an on-chain event that validators and `flchain verify` re-check.",
]


def _notes(results: dict[str, Any]) -> list[str]:
    config = results["config"]
    rules = ", ".join(f"{name} ({', '.join(f'{k} {v}' for k, v in values.items()) or 'defaults'})"
                      for name, values in config["rules"].items())
    attacks = ", ".join(f"{name} ({', '.join(f'{k} {v}' for k, v in values.items()) or 'defaults'})"
                        for name, values in config["attacks"].items() if name != CLEAN)
    return [f"- Rules: {rules}; the robust rules' outlier test as configs/strategy sets it; krum and multikrum "
            "with quorum 2f + 3, the others with the default quorum 3.",
            f"- Attacks (fl_chain/attacks.py), on a seeded share of the participants in every round: {attacks}.",
            "- Each cell replays the run in-process (fl_chain/bench/robustness.py): the same seeded training, drills, "
            "example caps, norm bound, outlier test and rule as the on-chain run of the same config, without the "
            "chain and store, which change no number (tests/test_robustness_bench.py compares a replay with a real "
            "run's model bytes).",
            f"- Whole suite: {results['seconds'] / 60:.1f} min on the machine below."]


def plot(results: dict[str, Any], path: Path) -> None:
    """A heat-map per federation: attacks (rows) x rules (columns), coloured by mean final
    accuracy, each square labelled with it and the detection rate."""
    config, rows = results["config"], results["aggregates"]
    rules = list(config["rules"])
    federations = list(config["federations"])
    figure = Figure(figsize=(1.3 * len(rules) * len(federations) + 2, 0.5 * 16 + 2), layout="constrained")
    panels = figure.subplots(1, len(federations), squeeze=False)[0]
    image = None
    for axes, federation in zip(panels, federations):
        attacks = list(dict.fromkeys((row["attack"], row["share"]) for row in rows if row["federation"] == federation))
        grid = np.full((len(attacks), len(rules)), np.nan)
        for i, (attack, share) in enumerate(attacks):
            for j, rule in enumerate(rules):
                row = _row(rows, federation, rule, attack, share)
                if row is not None and row["mean"] is not None:
                    grid[i, j] = row["mean"]
                    detected = "" if row["detection"] is None else f"\ndet {row['detection']:.0%}"
                    axes.text(j, i, f"{row['mean']:.2f}{detected}", ha="center", va="center", fontsize="x-small")
                else:
                    axes.text(j, i, "n/a", ha="center", va="center", fontsize="x-small")
        image = axes.imshow(grid, vmin=0.0, vmax=1.0, cmap="RdYlGn", aspect="auto")
        axes.set_xticks(range(len(rules)), rules, rotation=30, ha="right", fontsize="small")
        axes.set_yticks(range(len(attacks)), [_attack_label(a, s) for a, s in attacks], fontsize="small")
        axes.set_title(federation, fontsize="medium")
    if image is not None:
        figure.colorbar(image, ax=list(panels), label="final test accuracy", shrink=0.6)
    figure.savefig(path, format="png", dpi=110)

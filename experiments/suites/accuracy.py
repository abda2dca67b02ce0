"""The accuracy suite: how close training on chain gets to pooling the data, and how much
it gains over each participant training alone.

For every task x partition x seed it trains the centralized and local-only baselines
(fl_chain.tasks.baseline: as many rounds of the task's local training as the federated run
has rounds, on the pooled data or each participant's own) and runs each strategy as
a real fl-chain run (experiments.harness.run_experiment on configs/config.yaml plus the
suite's overrides). configs/bench/accuracy.yaml describes the suite. A partition that
cannot be drawn (a Dirichlet split leaving a participant too few rows even after
flwr-datasets' redraws) is recorded as n/a with the reason, not a crash of the suite.
"""

from __future__ import annotations

import dataclasses
import json
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from omegaconf import OmegaConf

from aggregator.config import compose_experiment
from experiments.harness import run_experiment
from experiments.simulation import simulate
from experiments.suites import environment
from fl_chain.errors import DataError, FlChainError
from fl_chain.tasks.baseline import centralized, local_only
from fl_chain.tasks.catalog import open_task, run_shape

BASELINES = {"centralized": centralized, "local_only": local_only}
METHOD_NAMES = {"centralized": "centralized", "local_only": "local-only", "fedavg": "FedAvg", "fedprox": "FedProx"}
SHAPE_KEYS = ("alpha", "classes_per_participant")  # what tells partitions of a scheme apart


@dataclass(frozen=True)
class Measurement:
    """One method's test accuracy on one task, partition and seed; `accuracy` is None when
    it could not be measured, and `reason` says why. `run` names the fl-chain run."""

    task: str
    partition: str
    seed: int
    method: str
    accuracy: float | None
    seconds: float
    reason: str | None = None
    run: str | None = None
    global_cid: str | None = None
    rounds_accepted: int | None = None


class Progress:
    """One stderr line per measured step, with its time and the suite's elapsed time."""

    def __init__(self, steps: int) -> None:
        self.steps, self.done, self.started = steps, 0, time.perf_counter()

    def report(self, text: str, seconds: float, steps: int = 1) -> None:
        self.done += steps
        elapsed = time.perf_counter() - self.started
        print(f"[accuracy {self.done}/{self.steps}] {text} in {seconds:.1f} s ({elapsed:.0f} s elapsed)",
              file=sys.stderr, flush=True)


def run(config: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Measures every task x partition x seed x method of `config` and writes results.md,
    results.json and accuracy.png into `out_dir`; returns what results.json holds."""
    out_dir.mkdir(parents=True, exist_ok=True)
    methods = [*BASELINES, *config["strategies"]]
    composed = [_experiment(_partition_overrides(p))["partition"] for p in config["partitions"]]
    partitions = {_partition_label(partition): partition for partition in composed}
    progress = Progress(len(config["tasks"]) * len(partitions) * len(config["seeds"]) * (1 + len(config["strategies"])))
    with runs_directory(config["runs_dir"]) as runs_dir:
        measurements = [m for task in config["tasks"] for label, partition in partitions.items()
                        for seed in config["seeds"]
                        for m in _measure(config, task, label, partition, seed, runs_dir, progress)]
    results = {
        "suite": "accuracy",
        # where the runs were kept belongs to this machine, not to the result
        "config": {key: value for key, value in config.items() if key != "runs_dir"},
        "settings": {
            "tasks": {task: _task_settings(_experiment(_task_overrides(config, task))) for task in config["tasks"]},
            "partitions": partitions,
            "strategies": {name: _experiment(_strategy_overrides(config, name))["strategy"]
                           for name in config["strategies"]},
        },
        "seconds": round(time.perf_counter() - progress.started, 1),
        "measurements": [dataclasses.asdict(m) for m in measurements],
        "aggregates": _aggregate(measurements, methods),
        "environment": environment.describe(),
    }
    (out_dir / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (out_dir / "results.md").write_text(_markdown(results, methods))
    _plot(results, methods, out_dir / "accuracy.png")
    return results


@contextmanager
def runs_directory(runs_dir: str | None) -> Iterator[Path]:
    if runs_dir is not None:
        yield Path(runs_dir)
        return
    with tempfile.TemporaryDirectory(prefix="flchain-accuracy-") as temporary:
        yield Path(temporary)


# ---------------------------------------------------------------- run configs


def _task_overrides(config: dict[str, Any], task: str) -> list[str]:
    return [f"task={task}", *_assignments("", config["tasks"][task]), *config["overrides"]]


def _partition_overrides(partition: dict[str, Any]) -> list[str]:
    return [f"partition={partition['scheme']}",
            *_assignments("partition.", {k: v for k, v in partition.items() if k != "scheme"})]


def _strategy_overrides(config: dict[str, Any], strategy: str) -> list[str]:
    return [f"strategy={strategy}", *_assignments("strategy.", config["strategies"][strategy])]


def _assignments(prefix: str, values: dict[str, Any]) -> list[str]:
    return [f"{prefix}{key}={value}" for key, value in values.items()]


def _experiment(overrides: list[str]) -> dict[str, Any]:
    """configs/config.yaml with `overrides`, its committee shrunk to fit a small federation:
    the default quorum, validators and attestation threshold suit 3 participants or more."""
    experiment = compose_experiment(overrides)
    participants = experiment["num_participants"]
    validators = min(experiment["num_validators"], participants)
    return {**experiment, "quorum": min(experiment["quorum"], participants), "num_validators": validators,
            "attestation_threshold": min(experiment["attestation_threshold"], validators)}


def _partition_label(partition: dict[str, Any]) -> str:
    return " ".join([partition["scheme"], *(f"{key}={partition[key]}" for key in SHAPE_KEYS if key in partition)])


# ---------------------------------------------------------------- measuring


def _measure(config: dict[str, Any], task: str, label: str, partition: dict[str, Any], seed: int, runs_dir: Path,
             progress: Progress) -> list[Measurement]:
    """Both baselines and every strategy on one task, partition and seed."""
    cell = f"{task} {label} seed {seed}"
    overrides = [*_task_overrides(config, task), *_partition_overrides(partition), f"seed={seed}"]
    started = time.perf_counter()
    try:
        baselines = _baselines(_experiment(overrides), task, label)
    except DataError as error:
        progress.report(f"{cell}: n/a ({error})", time.perf_counter() - started, steps=1 + len(config["strategies"]))
        return [Measurement(task, label, seed, method, None, 0.0, reason=str(error))
                for method in [*BASELINES, *config["strategies"]]]
    progress.report(f"{cell}: " + ", ".join(f"{m.method} {m.accuracy:.4f}" for m in baselines),
                    time.perf_counter() - started)
    federated = []
    for strategy in config["strategies"]:
        run_dir = runs_dir / re.sub(r"[^A-Za-z0-9._]+", "-", f"{cell} {strategy}")
        measurement = _federated(_experiment([*overrides, *_strategy_overrides(config, strategy)]), run_dir,
                                 task, label, strategy)
        outcome = f"{measurement.accuracy:.4f}" if measurement.accuracy is not None else f"n/a ({measurement.reason})"
        progress.report(f"{cell} {strategy}: {outcome}", measurement.seconds)
        federated.append(measurement)
    return [*baselines, *federated]


def _baselines(experiment: dict[str, Any], task: str, label: str) -> list[Measurement]:
    """Centralized and local-only, trained for as many rounds of local training as the federated run."""
    opened, run = open_task(experiment), run_shape(experiment)
    measurements = []
    for method, baseline in BASELINES.items():
        started = time.perf_counter()
        accuracy = baseline(opened, run).metrics["accuracy"]
        measurements.append(Measurement(task, label, experiment["seed"], method, accuracy,
                                        round(time.perf_counter() - started, 1)))
    return measurements


def _federated(experiment: dict[str, Any], run_dir: Path, task: str, label: str, strategy: str) -> Measurement:
    """One fl-chain run (its directory keeps config.yaml, as `flchain run` writes it, for
    `flchain verify` and `flchain reproduce`); the last accepted model's accuracy."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(experiment)))
    started = time.perf_counter()
    measured = dict(task=task, partition=label, seed=experiment["seed"], method=strategy, run=run_dir.name)
    try:
        summary = run_experiment(experiment, run_dir, simulate)
    except FlChainError as error:
        return Measurement(**measured, accuracy=None, seconds=round(time.perf_counter() - started, 1),
                           reason=str(error))
    return Measurement(**measured, accuracy=summary["final"]["accuracy"],
                       seconds=round(time.perf_counter() - started, 1), global_cid=summary["final"]["global_cid"],
                       rounds_accepted=sum(bool(r["accepted"]) for r in summary["rounds"]))


def _task_settings(experiment: dict[str, Any]) -> dict[str, Any]:
    """What a reader needs to know of a task's runs: federation, rounds, local training."""
    keys = ("num_participants", "rounds", "quorum", "num_validators", "attestation_threshold", "fraction_train")
    training = {key: experiment["task"][key]
                for key in ("epochs", "batch_size", "learning_rate", "optimizer", "momentum")}
    return {**{key: experiment[key] for key in keys}, "chain": experiment["chain"]["backend"],
            "privacy": experiment["privacy"]["mode"], "local_training": training,
            "baseline_epochs": training["epochs"] * experiment["rounds"]}


def _aggregate(measurements: list[Measurement], methods: list[str]) -> list[dict[str, Any]]:
    """Mean and sample standard deviation over seeds, per task, partition and method."""
    aggregates = []
    for task, partition in dict.fromkeys((m.task, m.partition) for m in measurements):
        for method in methods:
            values = [m.accuracy for m in measurements
                      if (m.task, m.partition, m.method) == (task, partition, method) and m.accuracy is not None]
            aggregates.append({
                "task": task, "partition": partition, "method": method, "seeds": len(values),
                "mean": statistics.fmean(values) if values else None,
                "std": statistics.stdev(values) if len(values) > 1 else None,
            })
    return aggregates


# ---------------------------------------------------------------- reporting


def _name(method: str) -> str:
    return METHOD_NAMES.get(method, method)


def _cell(aggregate: dict[str, Any]) -> str:
    if aggregate["mean"] is None:
        return "n/a"
    spread = f" ± {aggregate['std']:.3f}" if aggregate["std"] is not None else ""
    return f"{aggregate['mean']:.3f}{spread}"


def _markdown(results: dict[str, Any], methods: list[str]) -> str:
    seeds = results["config"]["seeds"]
    lines = ["# Accuracy: centralized vs local-only vs federated on chain", "",
             f"Test accuracy, mean ± sample standard deviation over seeds {', '.join(map(str, seeds))}; "
             "*seeds* counts the seeds measured.", ""]
    for task, settings in results["settings"]["tasks"].items():
        lines += [f"## {task}: {settings['num_participants']} participants, {settings['rounds']} rounds", "",
                  "| partition | " + " | ".join(map(_name, methods)) + " | seeds |",
                  "|---|" + "---:|" * (len(methods) + 1)]
        rows = [a for a in results["aggregates"] if a["task"] == task]
        for partition in dict.fromkeys(a["partition"] for a in rows):
            cells = [a for a in rows if a["partition"] == partition]
            lines.append(f"| {partition} | " + " | ".join(map(_cell, cells))
                         + f" | {max(a['seeds'] for a in cells)} of {len(seeds)} |")
        missing = _missing(results["measurements"], task, methods)
        if missing:
            lines += ["", "Not measured (n/a):", "", *missing]
        lines.append("")
    lines += ["## Settings", "", *_settings_notes(results), "", "## Environment", "", environment.markdown()]
    return "\n".join(lines)


def _missing(measurements: list[dict[str, Any]], task: str, methods: list[str]) -> list[str]:
    """One line per seed and reason; the methods are named unless all of them are missing."""
    missing: dict[tuple[str, int, str], list[str]] = {}
    for m in measurements:
        if m["task"] == task and m["accuracy"] is None:
            missing.setdefault((m["partition"], m["seed"], m["reason"]), []).append(_name(m["method"]))
    return [f"- {partition}, seed {seed}" + ("" if len(names) == len(methods) else f" ({', '.join(names)})")
            + f": {reason}" for (partition, seed, reason), names in missing.items()]


def _settings_notes(results: dict[str, Any]) -> list[str]:
    settings = results["settings"]
    notes = []
    for task, run in settings["tasks"].items():
        training = run["local_training"]
        notes.append(
            f"- {task}: {run['num_participants']} participants, {run['rounds']} rounds of {training['epochs']} "
            f"local epochs ({training['optimizer']}, learning rate {training['learning_rate']}, momentum "
            f"{training['momentum']}, batch {training['batch_size']}); the baselines train {run['baseline_epochs']} "
            f"epochs (the rounds' local training, one after another); quorum {run['quorum']}, {run['num_validators']} validators, {run['attestation_threshold']} "
            f"equal attestations accept a round; {run['chain']} chain, {run['privacy']} updates."
        )
    notes += [
        "- Federated: " + ", ".join(_described(_name(name), strategy, "name")
                                    for name, strategy in settings["strategies"].items())
        + ". Each figure is the last accepted global model of a real fl-chain run (updates sealed, committed "
        "and attested on chain), scored by every participant on its own test split, example-weighted.",
        "- Centralized: one model on the pooled train splits, scored on the pooled test splits. Local-only: each "
        "participant's own model on its own test split, example-weighted; under strong label skew a "
        "participant's test split holds mostly its own classes, which flatters it.",
        "- Partitions: " + "; ".join(_described(label, partition, "scheme", *SHAPE_KEYS)
                                     for label, partition in settings["partitions"].items())
        + ". A Dirichlet split is redrawn (up to 10 times) until every participant holds min_partition_size rows.",
        f"- Whole suite: {results['seconds'] / 60:.1f} min on the machine below.",
    ]
    return notes


def _described(label: str, values: dict[str, Any], *skip: str) -> str:
    """`label (key value, ...)` with the settings not already in the label."""
    details = ", ".join(f"{key} {value}" for key, value in values.items() if key not in skip)
    return f"{label} ({details})" if details else label


def _plot(results: dict[str, Any], methods: list[str], path: Path) -> None:
    """Grouped bars (one group per partition, one bar per method) with std error bars,
    one panel per task; drawn on a bare Agg `Figure`, no pyplot state."""
    tasks = results["settings"]["tasks"]
    figure = Figure(figsize=(6.5 * len(tasks), 4.5), layout="constrained")
    panels = figure.subplots(1, len(tasks), squeeze=False)[0]
    width = 0.8 / len(methods)
    for axes, (task, settings) in zip(panels, tasks.items()):
        rows = [a for a in results["aggregates"] if a["task"] == task]
        partitions = list(dict.fromkeys(a["partition"] for a in rows))
        for index, method in enumerate(methods):
            cells = [next(a for a in rows if (a["partition"], a["method"]) == (p, method)) for p in partitions]
            positions = np.arange(len(partitions)) + (index - (len(methods) - 1) / 2) * width
            means = [np.nan if a["mean"] is None else a["mean"] for a in cells]
            spreads = [np.nan if a["std"] is None else a["std"] for a in cells]
            axes.bar(positions, means, width, yerr=spreads, capsize=3, label=_name(method))
            for position, mean in zip(positions, means):
                if np.isnan(mean):
                    axes.text(position, 0.02, "n/a", rotation=90, ha="center", va="bottom", fontsize="small")
        axes.set_title(f"{task}: {settings['num_participants']} participants, {settings['rounds']} rounds")
        axes.set_xticks(np.arange(len(partitions)), partitions, fontsize="small")
        axes.set_ylabel("test accuracy")
        axes.set_ylim(0.0, 1.05)
        axes.grid(axis="y", alpha=0.3)
    figure.legend(*panels[0].get_legend_handles_labels(), loc="outside lower center", ncols=len(methods))
    figure.savefig(path, format="png", dpi=120)

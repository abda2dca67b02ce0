"""PNG plots of a run's figures per round (matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_per_round(
    path: Path, title: str, ylabel: str, series: dict[str, Sequence[float | None]],
    reference: tuple[str, float] | None = None,
) -> Path:
    """One line per series over rounds 1..n, optionally a dashed horizontal reference."""
    figure, axes = plt.subplots(figsize=(6, 4), dpi=100)
    for label, values in series.items():
        points = [(i + 1, v) for i, v in enumerate(values) if v is not None]
        axes.plot([r for r, _ in points], [v for _, v in points], marker="o", label=label)
    if reference is not None:
        axes.axhline(reference[1], linestyle="--", color="grey", label=reference[0])
    axes.set_xlabel("round")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def plot_stacked_bars(
    path: Path, title: str, ylabel: str, bars: dict[str, dict[str, float]],
    reference: tuple[str, float] | None = None,
) -> Path:
    """One stacked bar per entry of `bars` (segment per key), optionally a reference line."""
    segments = list(dict.fromkeys(key for parts in bars.values() for key in parts))
    figure, axes = plt.subplots(figsize=(6, 4.5), dpi=100)
    bottoms = [0.0] * len(bars)
    for segment in segments:
        heights = [parts.get(segment, 0.0) for parts in bars.values()]
        axes.bar(list(bars), heights, bottom=bottoms, label=segment)
        bottoms = [b + h for b, h in zip(bottoms, heights)]
    if reference is not None:
        axes.axhline(reference[1], linestyle="--", color="black", label=reference[0])
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def plot_grouped_bars(
    path: Path, title: str, ylabel: str, groups: dict[str, dict[str, float]], log_scale: bool = False,
) -> Path:
    """Bars grouped by the outer key (x axis), one colour per inner key."""
    names = list(groups)
    series = list(dict.fromkeys(key for values in groups.values() for key in values))
    width = 0.8 / max(1, len(series))
    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=100)
    for offset, label in enumerate(series):
        positions = [i + (offset - (len(series) - 1) / 2) * width for i in range(len(names))]
        axes.bar(positions, [groups[name].get(label, 0.0) for name in names], width=width, label=label)
    axes.set_xticks(range(len(names)), names)
    if log_scale:
        axes.set_yscale("log")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(axis="y", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def plot_growth(path: Path, title: str, x: Sequence[float], series: dict[str, tuple[str, Sequence[float]]]) -> Path:
    """Log-log lines against `x`, one panel per series (label -> (ylabel, values))."""
    figure, panels = plt.subplots(1, len(series), figsize=(5 * len(series), 4), dpi=100, squeeze=False)
    for axes, (label, (ylabel, values)) in zip(panels[0], series.items()):
        axes.loglog(x, values, marker="o", label=label)
        axes.loglog(x, [values[0] * value / x[0] for value in x], linestyle="--", color="grey", label="linear")
        axes.set_xlabel("participants")
        axes.set_ylabel(ylabel)
        axes.grid(alpha=0.3, which="both")
        axes.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path

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

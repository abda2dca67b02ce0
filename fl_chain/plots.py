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

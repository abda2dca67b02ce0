"""A picture of how skewed the partitioning is: labels per participant, stacked.

Drawn on a bare Agg-backed `Figure`, so no pyplot state or GUI backend is touched.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from fl_chain.data.dataset import FederatedDataset


def plot_label_distribution(dataset: FederatedDataset, path: str | Path) -> Path:
    """Write a PNG stacked bar chart of examples per class for each participant."""
    counts = dataset.label_counts()
    positions = np.arange(len(dataset.participants))
    figure = Figure(figsize=(max(4.0, 0.5 * len(positions) + 2.0), 3.5), layout="constrained")
    axes = figure.add_subplot()
    bottom = np.zeros(len(positions))
    for label, class_name in enumerate(dataset.class_names):
        axes.bar(positions, counts[:, label], bottom=bottom, label=class_name)
        bottom += counts[:, label]
    axes.set_xticks(positions)
    axes.set_xlabel("participant")
    axes.set_ylabel("examples")
    axes.set_title(f"{dataset.task}: labels per participant")
    axes.legend(title="class", fontsize="small", loc="center left", bbox_to_anchor=(1.0, 0.5))
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, format="png", dpi=120)
    return target

"""Envelope and aggregation throughput against a memory copy, written as a result."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from experiments.suites.report import write_results
from fl_chain.bench.throughput import measure_throughput
from fl_chain.plots import plot_grouped_bars


def run(config: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    figures = measure_throughput(tuple(config["sizes_mb"]), int(config["repeats"]), int(config["updates"]))
    print(figures.table())
    write_results(out_dir, "Throughput", [
        "Each figure is MB/s of update data (MB = 10**6 bytes), the median of the repeats, measured in one "
        "process next to a plain memory copy of the same size. The envelope is what a participant runs: "
        "encode (safetensors), encrypt (AES-256-GCM, key wrapped for two recipients) and the CID of the "
        "sealed blob. Aggregation is FedAvg of several updates with float64 accumulation.",
    ], figures.table(), figures.as_json())
    detail = figures.as_json()["sizes"]
    plot_grouped_bars(out_dir / "throughput.png", "Throughput by update size (MB/s, log scale)", "MB/s",
                      {f"{size['size_mb']} MB": size["mb_s"] for size in detail}, log_scale=True)
    return figures.as_json()

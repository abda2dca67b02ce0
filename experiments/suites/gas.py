"""Gas per commitment and per round against the naive design, written as a result."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from experiments.suites.report import write_results
from fl_chain.bench.gas import measure_gas
from fl_chain.plots import plot_grouped_bars

TARGET_AT_100 = 15_000


def run(config: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    figures = measure_gas(tuple(config["batch_sizes"]))
    print(figures.table())
    result: dict[str, Any] = {
        f"gas_per_commitment_{size}": round(gas, 1) for size, gas in figures.relayed_per_commitment.items()
    }
    result |= {"gas_direct_commitment": figures.direct_per_commitment,
               "gas_naive_commitment": figures.naive_per_commitment}
    largest = max(figures.batch_sizes)
    at_largest = figures.relayed_per_commitment[largest]
    met = "met" if at_largest <= TARGET_AT_100 else f"missed by {at_largest - TARGET_AT_100:,.0f} gas"
    write_results(out_dir, "Gas", [
        "Exact gas on the embedded EVM (the same on anvil: gas does not depend on the node). A round's gas "
        "is opening it, the relayed batch, finalizing with every participant included and one attestation; "
        "the naive design sends one transaction per participant that stores the CID as a string.",
        f"Target: at most {TARGET_AT_100:,} gas per relayed commitment at 100 participants: "
        f"{at_largest:,.0f} at {largest}, {met}.",
    ], figures.table(), result)
    plot_grouped_bars(out_dir / "gas.png", "Gas per round: fl-chain vs the naive design", "gas (log scale)",
                      {f"{size} participants": {"fl-chain round": figures.per_round[size],
                                                "naive round": size * figures.naive_per_commitment}
                       for size in figures.batch_sizes}, log_scale=True)
    return result

"""The throughput and scale suites run at small sizes and report consistent figures.

Timings are only checked for being positive: the targets are reported, never asserted.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from fl_chain.bench.scale import TARGET_PARTICIPANTS, ScaleFigures, measure_scale
from fl_chain.bench.throughput import OPERATIONS, measure_throughput, target_verdict
from fl_chain.errors import UsageError


@pytest.fixture(scope="module")
def scale() -> ScaleFigures:
    lines: list[str] = []
    figures = measure_scale((8, 4), validators=3, progress=lines.append)
    assert any("8 participants: round accepted" in line for line in lines)
    return figures


def test_throughput_at_one_megabyte_reports_every_operation() -> None:
    figures = measure_throughput((1,), repeats=1, updates=3)
    (size,) = figures.sizes
    assert size.size_mb == 1 and set(size.mb_s) == set(OPERATIONS)
    assert all(rate > 0 for rate in size.mb_s.values())
    assert size.ratio_to_memcpy("memcpy") == pytest.approx(1.0)

    result = json.loads(json.dumps(figures.as_json()))
    assert {"envelope_mb_s", "aggregate_mb_s", "memcpy_mb_s", "sizes"} <= result.keys()
    assert result["envelope_mb_s"] == pytest.approx(size.mb_s["envelope"], abs=0.1)
    assert result["sizes"][0]["size_mb"] == 1

    table = figures.table()
    assert "aggregate: FedAvg of 3" in table
    assert ">= 300 MB/s: " in table and ">= 1,000 MB/s: " in table


def test_a_target_says_by_how_much_it_is_missed() -> None:
    assert target_verdict(300.0, 300.0) == "met"
    assert target_verdict(225.0, 300.0) == "missed by 25%"
    assert target_verdict(299.9, 300.0) == "missed by 1%"
    assert target_verdict(279.0, 300.0) == "missed by 7%"


def test_scale_rounds_are_accepted_and_cost_grows_with_participants(scale: ScaleFigures) -> None:
    small, large = scale.rounds
    assert (small.participants, large.participants) == (4, 8)
    assert small.accepted and large.accepted
    assert (small.included, large.included) == (4, 8)
    assert large.round_gas > small.round_gas
    assert large.relay_gas_per_commitment < small.relay_gas_per_commitment
    assert all(cost.seconds > 0 and cost.stage_seconds.keys() >= {"commit", "relay", "validate"}
               for cost in scale.rounds)
    (growth,) = scale.growth
    assert growth.participant_ratio == 2
    assert growth.gas_ratio == pytest.approx(large.round_gas / small.round_gas)


def test_scale_reports_its_target_and_growth(scale: ScaleFigures) -> None:
    table = scale.table()
    assert f"target: a {TARGET_PARTICIPANTS}-participant round completes and is accepted: not measured" in table
    assert "4 -> 8" in table
    result = json.loads(json.dumps(scale.as_json()))
    assert result["participants"] == 8 and result["accepted"] is True and result["target_met"] is False
    assert [entry["participants"] for entry in result["rounds"]] == [4, 8]
    assert result["growth"][0]["gas_ratio"] > 1


def test_scale_refuses_fewer_validators_than_attestations_need() -> None:
    with pytest.raises(UsageError, match="attestation threshold"):
        measure_scale((4,), validators=1)


def test_a_target_sized_round_that_is_not_accepted_misses_the_target(scale: ScaleFigures) -> None:
    failed = replace(scale.rounds[-1], participants=TARGET_PARTICIPANTS, accepted=False)
    assert scale.target_line().endswith("not measured (largest round: 8 participants)")
    assert ScaleFigures((failed,)).target_line().endswith(": missed: the round was not accepted")
    assert ScaleFigures((replace(failed, accepted=True),)).target_line().endswith(": met")

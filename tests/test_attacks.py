"""Attack drills: each attack's maths on small arrays, the attackers a fraction picks, every
bad drill config refused in one line by the config check `flchain run` makes, attacks
installed around a real task's training, and two real runs (a scaling attacker named in
summary.json and metrics.csv; an inflated example count refused while the run goes on)."""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

import numpy as np
import pytest
from test_tasks import OWN_TASK

from aggregator.config import compose_experiment, validate
from fl_chain.attacks import Attack, alie_z, attack_seed, attackers_of, flip_labels
from fl_chain.data.dataset import ParticipantData
from fl_chain.drills import LocalTraining, drilled, parse_drills
from fl_chain.errors import UsageError
from fl_chain.messages import Ticket
from fl_chain.storage.cid import Cid
from fl_chain.task import Trained, train_as
from fl_chain.tasks.catalog import open_task, run_shape
from fl_chain.tasks.supervised import ArrayData

from conftest import SMALL_RUN, flchain, summary_of

BASE = {"w": np.array([1.0, 2.0, -1.0], dtype=np.float32), "b": np.array([[0.5]], dtype=np.float32)}
HONEST = Trained({"w": np.array([2.0, 0.0, -1.5], dtype=np.float32), "b": np.array([[1.5]], dtype=np.float32)}, 40,
                 {"loss": 0.3})


def attack(kind: str, **given: object) -> Attack:
    return Attack.parse(kind, given, participants=5, attackers=1)


def same_bytes(one: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> bool:
    return one.keys() == other.keys() and all(one[k].dtype == other[k].dtype and one[k].tobytes() == other[k].tobytes()
                                              for k in one)


# ---------------------------------------------------------------- the transformations


def test_sign_flip_reverses_the_update() -> None:
    flipped = attack("sign_flip").apply(HONEST, BASE)
    assert np.array_equal(flipped.tensors["w"], [0.0, 4.0, -0.5]) and np.array_equal(flipped.tensors["b"], [[-0.5]])
    assert flipped.tensors["w"].dtype == np.float32 and (flipped.examples, flipped.metrics) == (40, {"loss": 0.3})


def test_scale_moves_the_base_by_factor_times_the_update() -> None:
    scaled = attack("scale", factor=3).apply(HONEST, BASE)
    assert np.array_equal(scaled.tensors["w"], [4.0, -4.0, -2.5]) and np.array_equal(scaled.tensors["b"], [[3.5]])
    default = attack("scale")
    assert default.factor == 50 and np.array_equal(default.apply(HONEST, BASE).tensors["w"], [51.0, -98.0, -26.0])


def test_noise_is_the_same_bytes_for_the_same_seed_and_new_bytes_each_round() -> None:
    noise = attack("noise", sigma=0.5)
    first = noise.apply(HONEST, BASE, seed=attack_seed(0, index=1, round_number=1)).tensors
    again = noise.apply(HONEST, BASE, seed=attack_seed(0, index=1, round_number=1)).tensors
    next_round = noise.apply(HONEST, BASE, seed=attack_seed(0, index=1, round_number=2)).tensors
    other_participant = noise.apply(HONEST, BASE, seed=attack_seed(0, index=2, round_number=1)).tensors
    assert same_bytes(first, again)
    assert not same_bytes(first, next_round) and not same_bytes(first, other_participant)
    assert not same_bytes(first, HONEST.tensors) and first["w"].dtype == np.float32
    big = Trained({"w": np.zeros(20_000, dtype=np.float32)}, 1)
    drawn = Attack("noise", sigma=0.5).apply(big, {"w": big.tensors["w"]}, seed=7).tensors["w"]
    assert abs(float(drawn.std()) - 0.5) < 0.02 and abs(float(drawn.mean())) < 0.02


def test_label_flip_flips_exactly_a_rate_share_of_the_labels_the_same_way_every_time() -> None:
    labels = np.arange(100, dtype=np.int64) % 4
    split = ParticipantData("p0", np.zeros((100, 2), np.float32), labels, np.zeros((10, 2), np.float32),
                            np.zeros(10, np.int64))
    data = ArrayData(split, (2,), 4)
    flipped = attack("label_flip", rate=0.3).poison(data, seed=11)
    changed = np.flatnonzero(flipped.split.train_y != labels)
    assert len(changed) == 30  # 4 classes: no label maps to itself
    assert np.array_equal(flipped.split.train_y[changed], 3 - labels[changed])
    assert np.array_equal(flip_labels(data, 0.3, seed=11).split.train_y, flipped.split.train_y)
    assert not np.array_equal(flip_labels(data, 0.3, seed=12).split.train_y, flipped.split.train_y)
    assert np.array_equal(split.train_y, np.arange(100) % 4)  # the shared data set is untouched
    assert np.array_equal(attack("label_flip").poison(data, seed=0).split.train_y, 3 - labels)  # rate 1 by default
    assert attack("label_flip").apply(HONEST, BASE) == HONEST  # the update is honest training on that data


@pytest.mark.parametrize(("participants", "attackers"), [(5, 1), (10, 2)])
def test_alie_default_z_is_the_papers(participants: int, attackers: int) -> None:
    needed = math.floor(participants / 2 + 1) - attackers
    expected = statistics.NormalDist().inv_cdf((participants - needed) / participants)
    assert alie_z(participants, attackers) == pytest.approx(expected, abs=1e-12)
    assert Attack.parse("alie", {}, participants=participants, attackers=attackers).z == alie_z(participants, attackers)
    assert alie_z(5, 1) == pytest.approx(0.2533471, abs=1e-6)  # s = 2, Phi^-1(0.6)


def test_alie_colluders_send_the_same_vector_mean_minus_z_std() -> None:
    rng = np.random.default_rng(3)
    honest = [Trained({"w": rng.normal(size=4).astype(np.float32)}, 10 + i) for i in range(5)]
    alie = Attack("alie", z=1.5)
    first, second = alie.apply(honest[1], BASE, honest=honest), alie.apply(honest[3], BASE, honest=honest)
    assert same_bytes(first.tensors, second.tensors)
    stacked = np.stack([h.tensors["w"].astype(np.float64) for h in honest])
    assert np.allclose(first.tensors["w"], stacked.mean(axis=0) - 1.5 * stacked.std(axis=0), atol=1e-6)
    assert (first.examples, second.examples) == (11, 13)  # each claims its own count
    with pytest.raises(ValueError, match="honest updates"):
        alie.apply(honest[1], BASE)


def test_free_ride_sends_the_base_back_and_inflate_only_claims_more() -> None:
    free = attack("free_ride").apply(HONEST, BASE)
    assert same_bytes(free.tensors, BASE) and free.examples == 40
    inflated = attack("inflate").apply(HONEST, BASE)
    assert same_bytes(inflated.tensors, HONEST.tensors) and inflated.examples == 10**9
    assert attack("inflate", examples=77).apply(HONEST, BASE).examples == 77


def test_attackers_of_a_fraction_are_seeded_bounded_and_nested() -> None:
    for seed in range(5):
        chosen = {fraction: attackers_of({"fraction": fraction}, 10, seed) for fraction in (0.01, 0.2, 0.5, 1.0)}
        assert chosen[0.2] == attackers_of({"fraction": 0.2}, 10, seed)
        assert [len(chosen[f]) for f in (0.01, 0.2, 0.5, 1.0)] == [1, 2, 5, 10]
        assert chosen[1.0] == tuple(range(10)) and list(chosen[0.5]) == sorted(chosen[0.5])
        assert set(chosen[0.01]) <= set(chosen[0.2]) <= set(chosen[0.5])
    assert len({attackers_of({"fraction": 0.3}, 10, seed) for seed in range(10)}) > 1
    assert attackers_of({"participant": [3, 1]}, 5, 0) == (1, 3) and attackers_of({"participant": 2}, 5, 0) == (2,)


# ---------------------------------------------------------------- bad drill configs


BAD_DRILLS = [
    ("{participant:1,kind:scale,sigma:2}", "scale takes factor, not sigma"),
    ("{participant:1,round:1,kind:crash,factor:2}", "crash takes attempt, not factor"),
    ("{participant:1,kind:free_ride,attempt:2}", "free_ride takes no parameters, not attempt"),
    ("{participant:1,kind:scale,foo:1}", "has unknown keys ['foo']"),
    ("{participant:1,kind:smash}", "drill kind 'smash' is not one of"),
    ("{participant:1}", "needs a kind"),
    ("{kind:sign_flip}", "needs either participant (an index or a list of them) or fraction"),
    ("{participant:1,fraction:0.5,kind:sign_flip}", "needs either participant"),
    ("{participant:5,kind:sign_flip}", "names participant 5, not one of this run's 0..4"),
    ("{participant:[0,9],kind:sign_flip}", "names participant 9, not one of this run's 0..4"),
    ("{participant:[],kind:sign_flip}", "participant must be an index or a non-empty list"),
    ("{participant:[1,1],kind:sign_flip}", "names a participant twice"),
    ("{participant:true,kind:sign_flip}", "participant must be an index"),
    ("{fraction:0,kind:sign_flip}", "fraction must be a share of the participants in (0, 1], got 0"),
    ("{fraction:1.5,kind:sign_flip}", "fraction must be a share of the participants in (0, 1], got 1.5"),
    ("{participant:1,round:0,kind:scale}", "names round 0, not one of this run's 1..10"),
    ("{participant:1,round:11,kind:scale}", "names round 11, not one of this run's 1..10"),
    ("{participant:1,kind:crash}", "a crash drill needs the round it happens in"),
    ("{participant:1,round:2,kind:crash,attempt:4}", "names attempt 4, not one of this run's 1..3"),
    ("{participant:1,round:2,kind:hang}", "a hang drill needs seconds in (0, 3600.0]"),
    ("{participant:1,kind:scale,factor:inf}", "the scale attack's factor must be a finite number, got inf"),
    ("{participant:1,kind:scale,factor:big}", "the scale attack's factor must be a finite number, got 'big'"),
    ("{participant:1,kind:noise}", "the noise attack needs sigma"),
    ("{participant:1,kind:noise,sigma:0}", "the noise attack's sigma must be a positive finite number, got 0.0"),
    ("{participant:1,kind:label_flip,rate:0}", "the label_flip attack's rate must be in (0, 1], got 0.0"),
    ("{participant:1,kind:label_flip,rate:1.5}", "the label_flip attack's rate must be in (0, 1], got 1.5"),
    ("{participant:1,kind:alie,z:nan}", "the alie attack's z must be a finite number"),
    ("{participant:[0,1,2],kind:alie}", "alie's default z needs the attackers to be at most half of the participants"),
    ("{participant:1,kind:inflate,examples:1.5}", "the inflate attack's examples must be an integer, got 1.5"),
    ("{participant:1,kind:inflate,examples:0}", "the inflate attack's examples must be from 1 to"),
    ("{participant:1,kind:scale},{participant:[1,2],round:2,kind:crash}", "participant 1 has two drills at once"),
]


@pytest.mark.parametrize(("drills", "phrase"), BAD_DRILLS, ids=[phrase[:40] for _, phrase in BAD_DRILLS])
def test_a_bad_drill_is_one_line_naming_the_problem(drills: str, phrase: str) -> None:
    config = compose_experiment([f"drills=[{drills}]"])
    with pytest.raises(UsageError) as refused:
        validate(config)
    assert phrase in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.parametrize(("task", "named"), [("task=diabetes", "diabetes"), ("task._target_=outside_tasks.MeanTask",
                                                                             "outside_tasks.MeanTask")])
def test_label_flip_on_a_task_without_class_labels_is_refused_by_the_config_check(
        task: str, named: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "outside_tasks.py").write_text(OWN_TASK)
    monkeypatch.syspath_prepend(str(tmp_path))
    config = compose_experiment([task, "drills=[{participant:1,kind:label_flip}]"])
    with pytest.raises(UsageError) as refused:
        validate(config)
    assert str(refused.value) == (f"a label_flip drill flips class labels, so it needs a built-in classification "
                                  f"task; {named} is not one (its data is not class indices fl-chain can flip)")
    validate(compose_experiment(["task=digits", "drills=[{participant:1,kind:label_flip}]"]))  # a classifier


def test_alie_is_refused_for_a_deployment() -> None:
    config = compose_experiment(["drills=[{participant:1,kind:alie}]"])
    validate(config)
    with pytest.raises(UsageError, match="only a simulation can"):
        validate(config, deployment=True)


def test_existing_fault_configs_still_parse_and_attacks_default_to_every_round() -> None:
    config = compose_experiment(["rounds=3", "drills=[{participant:2,round:2,kind:crash},{participant:0,round:3,"
                                 "kind:hang,seconds:40},{participant:[0,2],kind:sign_flip,round:1},"
                                 "{participant:1,kind:scale}]"])
    crash, hang, flip, scale = parse_drills(config)
    assert (crash.participants, crash.round, crash.attempt, crash.label) == ((2,), 2, 1, "crash@p2")
    assert hang.label == "hang(seconds=40)@p0" and flip.label == "sign_flip@p0+p2"
    assert scale.round is None and all(scale.hits(r, a) for r in (1, 2, 3) for a in (1, 2))
    assert crash.hits(2, 1) and not crash.hits(2, 2)
    assert scale.record({0: "0xa", 1: "0xb"}, 3) == {
        "kind": "scale", "parameters": {"factor": 50.0}, "participants": [1], "addresses": ["0xb"],
        "rounds": [1, 2, 3], "label": "scale(factor=50)@p1"}


# ---------------------------------------------------------------- installed around a real task's training


def test_drilled_attacks_train_as_the_honest_participants_do() -> None:
    config = compose_experiment(["num_participants=4", "rounds=1", "task.epochs=1",
                                 "drills=[{participant:[1,2],kind:alie},{participant:3,kind:label_flip}]"])
    task, shape = open_task(config), run_shape(config)
    base = task.initial_weights(shape)
    ticket = Ticket(1, 1, Cid.parse("bafkreiaae7oe5lsoti3jjci6covgfbenmtxguj4ocnx7nwoopqw7ynzyie"), 0)
    drills = parse_drills(config)

    def data_of(index: int) -> ArrayData:
        return task.participant_data(index, shape)

    def drilled_fn(index: int, everyone: bool = True):  # type: ignore[no-untyped-def]
        training = LocalTraining(task, config["seed"], index, 4, lambda: data_of(index), data_of if everyone else None)

        def honest(weights, ticket):  # type: ignore[no-untyped-def]
            return train_as(task, weights, data_of(index), run_seed=config["seed"], round_number=ticket.round,
                            index=index)

        return drilled(honest, [d for d in drills if index in d.participants], training)

    honest = [train_as(task, base, data_of(i), run_seed=config["seed"], round_number=1, index=i) for i in range(4)]
    first, second = drilled_fn(1)(base, ticket), drilled_fn(2)(base, ticket)
    assert same_bytes(first.tensors, second.tensors)
    assert same_bytes(first.tensors, Attack("alie", z=drills[0].attack.z).apply(honest[1], base,  # type: ignore[union-attr]
                                                                                honest=honest).tensors)
    poisoned = drilled_fn(3)(base, ticket)
    assert not same_bytes(poisoned.tensors, honest[3].tensors) and poisoned.examples == honest[3].examples
    with pytest.raises(UsageError, match="only a simulation can"):
        drilled_fn(1, everyone=False)


# ---------------------------------------------------------------- real runs


@pytest.mark.slow
def test_a_scaling_attacker_is_named_in_the_summary_and_in_metrics(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    completed = flchain("run", *SMALL_RUN, "drills=[{participant:1,kind:scale,factor:50}]", f"hydra.run.dir={run_dir}")
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "drills: scale(factor=50)@p1" in completed.stderr
    summary = summary_of(run_dir)
    (drill,) = summary["drills"]
    members = json.loads((run_dir / "federation.json").read_text())["members"]
    attacker = [m["address"] for m in members if "PARTICIPANT" in m["roles"]][1]
    assert drill == {"kind": "scale", "parameters": {"factor": 50.0}, "participants": [1], "addresses": [attacker],
                     "rounds": [1, 2], "label": "scale(factor=50)@p1"}
    with open(run_dir / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["drills"] for row in rows if row["scope"] == "round"} == {"scale(factor=50)@p1"}
    assert {row["participant"] for row in rows if row["drills"] and row["scope"] == "participant"} == {attacker}


@pytest.mark.slow
def test_an_inflated_example_count_is_refused_and_the_run_goes_on(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    completed = flchain("run", *SMALL_RUN, "drills=[{participant:1,kind:inflate}]", f"hydra.run.dir={run_dir}")
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "Traceback" not in completed.stderr
    rounds = summary_of(run_dir)["rounds"]
    assert [(r["accepted"], r["commitments"], r["included"]) for r in rounds] == [(True, 2, 2)] * 2
    for summary in rounds:
        (exclusion,) = summary["exclusions"]
        assert "claims 1000000000 examples, above its cap of" in exclusion["reason"]
        assert f"excluded {exclusion['participant']}: attempt 1: the receipt from" in completed.stderr

"""The learning benchmark's statistics and bookkeeping (``benchmarks/learning.py``), on hand-made runs: the paired
comparison must pair by seed, the curve mean must leave out the shared start, and the work folder must change with
every option that changes a run (or a rerun would silently reuse results of other settings)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "learning.py"


@pytest.fixture(scope="module")
def learning():
    spec = importlib.util.spec_from_file_location("learning_benchmark", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(seed: int, base: str, arm: str, curve: list[float]) -> dict:
    return {
        "seed": seed,
        "base": base,
        "arm": arm,
        "held_out_success": [(10 * i, value) for i, value in enumerate(curve)],
        "train_success": [],
        "response_entropy": [],
    }


def test_paired_differences_pair_by_seed_for_both_metrics(learning):
    runs = [
        run(0, "grpo", "base", [0.2, 0.4, 0.6]),
        run(0, "grpo", "aem", [0.2, 0.6, 0.7]),
        run(1, "grpo", "base", [0.3, 0.5, 0.9]),
        run(1, "grpo", "aem", [0.3, 0.5, 0.8]),
        run(2, "grpo", "aem", [0.1, 1.0, 1.0]),  # no base run on seed 2: left out of the pairing
    ]
    final = learning.paired(runs, ("grpo", "aem"), ("grpo", "base"), "final")
    assert final["seeds"] == 2 and final["differences"] == pytest.approx([0.1, -0.1])
    assert final["mean_difference"] == pytest.approx(0.0) and (final["wins"], final["losses"]) == (1, 1)
    curve = learning.paired(runs, ("grpo", "aem"), ("grpo", "base"), "curve_mean")
    # the shared start (step 0) is not part of the curve mean: (0.6 + 0.7) / 2 - (0.4 + 0.6) / 2 and 0.65 - 0.7
    assert curve["differences"] == pytest.approx([0.15, -0.05])
    assert learning.paired(runs, ("dapo", "aem"), ("dapo", "base")) is None


def test_bootstrap_interval_brackets_the_mean_and_needs_two_values(learning):
    values = [0.1, 0.2, 0.0, 0.15, 0.05, 0.1, 0.12, 0.08]
    low, high = learning.bootstrap_interval(values)
    assert low < sum(values) / len(values) < high and low >= 0.0 and high <= 0.2
    assert all(v != v for v in learning.bootstrap_interval([0.3]))  # nan: one seed has no interval


def test_work_folder_changes_with_run_options_not_with_the_arms_to_run(learning):
    base = dict(env="vault", seeds=8, losses=["grpo"], ablation_seeds=3, steps=40, sft_noise=0.3, work_dir="a",
                jobs=2, threads=1, fresh=False, results_dir="r", env_kwargs={"elimination": 0.0})  # fmt: skip
    key = learning.options_key(argparse.Namespace(**base))
    assert key == learning.options_key(argparse.Namespace(**{**base, "seeds": 2, "losses": ["dapo"], "jobs": 4}))
    assert key != learning.options_key(argparse.Namespace(**{**base, "sft_noise": 0.1}))
    assert key != learning.options_key(argparse.Namespace(**{**base, "env_kwargs": {}}))


def test_eval_seed_counts_in_the_work_folder_only_when_set(learning):
    base = dict(env="vault", seeds=8, steps=40, work_dir="a", env_kwargs={})
    key = learning.options_key(argparse.Namespace(**base))
    # runs made before --eval-seed existed keep their folder; a set seed (0 included) is another folder
    assert key == learning.options_key(argparse.Namespace(**base, eval_seed=None))
    assert key != learning.options_key(argparse.Namespace(**base, eval_seed=0))


def test_paired_final_counts_discordant_episodes_when_recorded(learning):
    runs = [run(s, "grpo", arm, [0.2, 0.5]) for s in (0, 1) for arm in ("base", "aem")]
    for r, bits in zip(runs, ["0110", "0111", "1100", "1000"], strict=True):
        r["held_out_episodes"] = [(0, "0000"), (10, bits)]
    final = learning.paired(runs, ("grpo", "aem"), ("grpo", "base"), "final")
    assert (final["paired_episodes"], final["treated_only"], final["control_only"]) == (8, 1, 1)
    assert "paired_episodes" not in learning.paired(runs, ("grpo", "aem"), ("grpo", "base"), "curve_mean")
    del runs[0]["held_out_episodes"]
    assert "paired_episodes" not in learning.paired(runs, ("grpo", "aem"), ("grpo", "base"), "final")


def test_regime_pilot_reads_rooms_back_from_observations():
    spec = importlib.util.spec_from_file_location("regime_pilot", PATH.parent / "regime_pilot.py")
    pilot = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pilot)
    assert pilot.room_of("Room 2 of 9. Doors: 1 red, 2 blue, 3 gray. Sign: take the gray door.") == (
        ["red", "blue", "gray"], 2, False,
    )  # fmt: skip
    assert pilot.room_of("Nothing happens. Room 2 of 9. Doors: 1 red, 2 blue, 3 gray. Sign: the red door and the "
                         "gray door are locked.") == (["red", "blue", "gray"], 1, True)  # fmt: skip
    assert pilot.room_of("You open the vault. It is full of gold.") is None
    assert pilot.parse_config("96x4/1e-3/2400/0.25/0.3/1024")["num_train_tasks"] == 1024
    assert pilot.mdd(0.0, 0.5, 512, 16) == pytest.approx(
        (2.1314 + 0.8662) * (2 * 0.25 / 512) ** 0.5 / 4, rel=1e-3
    )  # t quantiles of 15 degrees of freedom


def test_next_task_finishes_seeds_in_order_and_keeps_workers_busy(learning):
    todo = [(0, "grpo", "base"), (0, "grpo", "aem"), (1, "grpo", "base"), (1, "grpo", "aem"), (2, "grpo", "base")]
    # nothing warm yet: warm starts of the first seeds, one per seed, then wait
    assert learning.next_task(todo, ready=set(), warming=set()) == ("warm", 0)
    assert learning.next_task(todo, ready=set(), warming={0}) == ("warm", 1)
    assert learning.next_task(todo, ready=set(), warming={0, 1, 2}) is None
    # a ready seed's runs come before any new warm start, in todo's order
    assert learning.next_task(todo, ready={1}, warming={0}) == ("run", (1, "grpo", "base"))
    assert learning.next_task(todo[2:], ready={0, 1}, warming=set()) == ("run", (1, "grpo", "base"))
    assert learning.next_task([(2, "grpo", "base")], ready={0, 1}, warming=set()) == ("warm", 2)
    assert learning.next_task([], ready=set(), warming=set()) is None


def test_drift_pattern_splits_aem_runs_by_their_training_success(learning):
    aem = {
        "seed": 0, "base": "grpo", "arm": "aem",
        "train_success": [(1, 0.25), (2, 0.75), (3, 0.5)],
        "drift": [(1, 0.2), (2, -0.3), (3, float("nan"))],
        "drift_base": [(1, 0.1), (2, -0.1), (3, 0.0)],
    }  # fmt: skip
    base = {
        "seed": 0,
        "base": "grpo",
        "arm": "base",
        "train_success": [(1, 0.0)],
        "drift": [(1, 5.0)],
        "drift_base": [],
    }
    pattern = learning.drift_pattern([aem, base], "grpo")
    assert pattern["failures_dominate"] == {"steps": 1, "drift_aem": 0.2, "drift_base": 0.1, "aem_above_base": 1.0}
    # step 3's NaN drift is skipped; step 2 (success 0.75) counts as successes dominating
    assert pattern["successes_dominate"] == {"steps": 1, "drift_aem": -0.3, "drift_base": -0.1, "aem_above_base": 0.0}
    assert learning.drift_pattern([base], "grpo") is None
    assert learning.drift_pattern([{**aem, "drift_base": []}], "grpo") is None  # runs from before drift_base was kept


def test_summary_counts_seeds_rl_raised_or_lowered_and_the_training_trend(learning):
    runs = [
        {
            **run(0, "grpo", "base", [0.3, 0.2, 0.1]),
            "train_success": [(i, 0.5 if i <= 2 else 0.0) for i in range(1, 9)],
        },
        {**run(1, "grpo", "base", [0.3, 0.4, 0.5]), "train_success": [(i, 0.25) for i in range(1, 9)]},
        run(2, "grpo", "base", [0.3, 0.3, 0.3]),  # unchanged: neither raised nor lowered; no training record
    ]
    row = learning.summarise(runs)["grpo/base"]
    assert (row["raised"], row["lowered"]) == (1, 1)
    # 8 steps: the window is 4 (at most half the run); seed 0 falls 0.25 -> 0.0, seed 1 stays at 0.25
    assert learning.training_success(runs[0]) == pytest.approx((0.25, 0.0))
    assert learning.training_success(runs[0], window=2) == pytest.approx((0.5, 0.0))
    assert (row["train_first"], row["train_last"]) == pytest.approx((0.25, 0.125))


def test_resume_from_takes_recorded_runs_of_the_same_options_only(learning, tmp_path):
    parser = learning.build_parser()
    argv = ["--env", "vault", "--seeds", "2", "--steps", "30", "--tiny-size", "96x4", "--work-dir", str(tmp_path)]
    args = learning.parse_options(parser, argv)
    assert args.env_kwargs == learning.DEFAULT_ENV_KWARGS["vault"]  # the environment's defaults are filled in
    runs = [run(0, "grpo", "base", [0.2, 0.3]), run(0, "grpo", "aem", [0.2, 0.4])]
    results = tmp_path / "learning_vault.json"
    results.write_text(json.dumps({"benchmark": "learning", "command": learning.command_line(args), "runs": runs}))
    # the seeds, arms and logistics to run may differ; the recorded runs come back as written
    resumed = learning.parse_options(parser, [*argv[:-2], "--seeds", "8", "--jobs", "1", "--work-dir", "elsewhere"])
    assert (
        learning.recorded_runs(str(results), learning.options_key(resumed)) == json.loads(results.read_text())["runs"]
    )
    other = learning.parse_options(parser, [*argv, "--steps", "60"])  # a run option differs: refused, not reused
    with pytest.raises(SystemExit, match="other run options"):
        learning.recorded_runs(str(results), learning.options_key(other))
    (tmp_path / "proxy.json").write_text(json.dumps({"benchmark": "proxy"}))
    with pytest.raises(SystemExit, match="not a results file"):
        learning.recorded_runs(str(tmp_path / "proxy.json"), learning.options_key(args))


def test_detectable_difference_uses_students_t_at_the_observed_spread(learning):
    # exact quantiles: t_{0.975, 15} = 2.1314, t_{0.8, 15} = 0.8662
    assert learning.detectable_difference(0.1, 16) == pytest.approx((2.1314 + 0.8662) * 0.1 / 4, rel=2e-3)
    pairs = [(0.3, 0.2), (0.5, 0.3), (0.2, 0.3), (0.4, 0.4), (0.6, 0.5)]  # differences 0.1, 0.2, -0.1, 0, 0.1
    runs = [run(s, "grpo", arm, [0.2, value]) for s, pair in enumerate(pairs)
            for arm, value in zip(("aem", "base"), pair, strict=True)]  # fmt: skip
    compared = learning.paired(runs, ("grpo", "aem"), ("grpo", "base"))
    assert compared["sd_difference"] == pytest.approx(0.114018, rel=1e-4)
    # exact quantiles: t_{0.975, 4} = 2.7764, t_{0.8, 4} = 0.9410; the expansion is within 2% at 4 degrees of freedom
    expected = (2.7764 + 0.9410) * 0.114018 / 5**0.5
    assert compared["detectable_difference"] == pytest.approx(expected, rel=0.02)
    four_seeds = learning.paired(runs[:8], ("grpo", "aem"), ("grpo", "base"))  # too few seeds for the expansion
    assert math.isnan(four_seeds["sd_difference"]) and math.isnan(four_seeds["detectable_difference"])

"""Base advantages: TRL's group advantage by hand (with an unscorable episode), the table of step-mode estimators
and AEMConfig's choices, and GRPO's per-turn advantage."""

from __future__ import annotations

import dataclasses
import math
import statistics

import pytest
import torch

from trl_aem import AEMConfig
from trl_aem.advantages import (
    ESTIMATORS,
    EstimatorSettings,
    TurnEstimate,
    TurnRow,
    group_advantages,
    grpo_turn_advantages,
)
from trl_aem.config import ADVANTAGE_ESTIMATORS
from trl_aem.gigpo import default_state_key, turn_advantages
from trl_aem.rollout import Episode, Turn

REWARDS = [1.0, 2.0, math.nan, 4.0, 0.5, 0.5, 3.0, 1.0]  # two groups of 4; episode 2 unscorable (faulted)


def _by_hand(rewards: list[float], num_generations: int, scale_rewards: str) -> tuple[list, list, list]:
    """TRL 1.16's advantage (grpo_trainer.py L2761-2788, L2810) in plain Python: mean over the group's scorable
    rewards, unbiased std per group or over the batch, ``(R - mean) / (std + 1e-4)``; unscorable rewards get 0."""
    scorable = [r for r in rewards if not math.isnan(r)]
    advantages, stds, means = [], [], []
    for g in range(0, len(rewards), num_generations):
        group = rewards[g : g + num_generations]
        values = [r for r in group if not math.isnan(r)]
        mean = statistics.fmean(values)
        std = statistics.stdev(scorable) if scale_rewards == "batch" else statistics.stdev(values)
        for r in group:
            a = r - mean if scale_rewards == "none" else (r - mean) / (std + 1e-4)
            advantages.append(0.0 if math.isnan(a) else a)
            stds.append(std)
            means.append(mean)
    return advantages, stds, means


@pytest.mark.parametrize("scale_rewards", ["group", "batch", "none"])
def test_group_advantages_match_trls_formula_by_hand(scale_rewards):
    advantages, std, mean, _ = group_advantages(torch.tensor(REWARDS, dtype=torch.float64), 4, scale_rewards)
    expected_advantages, expected_std, expected_mean = _by_hand(REWARDS, 4, scale_rewards)
    assert advantages.tolist() == pytest.approx(expected_advantages)
    assert std.tolist() == pytest.approx(expected_std)
    assert mean.tolist() == pytest.approx(expected_mean)
    assert advantages[2] == 0.0  # unscorable: no advantage, and left out of its group's mean and std
    assert mean[0] == pytest.approx(7 / 3)
    if scale_rewards == "group":
        assert std[0] == pytest.approx(math.sqrt(7 / 3)) and std[4] == pytest.approx(math.sqrt(4.25 / 3))


def test_group_advantages_edge_cases():
    single, std, _, _ = group_advantages(torch.tensor([3.0, math.nan]), 1, "group")  # one generation per task
    assert single.tolist() == [0.0, 0.0] and std.tolist() == [0.0, 0.0]
    equal, _, _, no_spread = group_advantages(torch.tensor([0.9, 0.9, 0.9, 0.9]), 4, "group")  # no signal
    assert equal.tolist() == [0.0] * 4 and no_spread.all()
    with pytest.raises(ValueError, match="Invalid value for scale_rewards: mean"):
        group_advantages(torch.ones(4), 2, "mean")


@pytest.mark.parametrize("scale_rewards", ["group", "batch", "none"])
def test_returns_equal_up_to_float_rounding_get_zero_advantage(scale_rewards):
    # float32 9.9 and its neighbour one ulp up: std about 5e-7, which (R - mean) / (std + 1e-4) turns into +-5e-3
    rounded = torch.tensor([9.9, 9.9 + 1e-6, 9.9, 9.9 + 1e-6, 1.0, 0.0, 1.0, 0.0], dtype=torch.float32)
    assert rounded[0] != rounded[1]
    advantages, std, _, no_spread = group_advantages(rounded, 4, scale_rewards)
    assert advantages[:4].tolist() == [0.0] * 4 and advantages[4:].abs().min() > 0.05
    if scale_rewards == "batch":
        assert not no_spread.any()  # the batch has spread, as TRL's frac_reward_zero_std counts it there
    else:
        assert no_spread.tolist() == [True] * 4 + [False] * 4 and 0 < std[0] < 1e-5
    # a real spread, however small against the returns' size, is kept
    small = torch.tensor([9.9, 9.9 + 1e-3, 9.9, 9.9 + 1e-3])
    assert group_advantages(small, 4, scale_rewards)[0].abs().min() > 0


def test_the_estimators_are_aemconfigs_choices():
    assert set(ESTIMATORS) == {"grpo", "gigpo"}
    assert tuple(ESTIMATORS) == ADVANTAGE_ESTIMATORS
    field = next(f for f in dataclasses.fields(AEMConfig) if f.name == "advantage_estimator")
    assert field.metadata["choices"] == list(ESTIMATORS) and field.default == "grpo"
    with pytest.raises(ValueError, match="advantage_estimator"):
        AEMConfig(output_dir="unused", use_cpu=True, report_to=[], advantage_estimator="ppo")


def _episode(group: int, index: int, rewards: list[float], observations: list[str]) -> Episode:
    turns = [
        Turn([1], [5, 6], torch.zeros(2), torch.zeros(2), f"r{k}", observation=obs, reward=reward)
        for k, (reward, obs) in enumerate(zip(rewards, observations, strict=True))
    ]
    return Episode({"task": group}, group, index, first_observation="start", turns=turns)


def _rows() -> list[TurnRow]:
    first = _episode(0, 0, [0.0, 1.0], ["room", "end"])
    second = _episode(0, 1, [0.0, 0.0, 0.5], ["room", "hall", "end"])
    return [TurnRow(first, t, 0.5) for t in range(2)] + [TurnRow(second, t, -0.5) for t in range(3)]


SETTINGS = EstimatorSettings(
    scale_rewards="group", invalid_action_penalty=0.1, gigpo_gamma=0.9, gigpo_omega=1.0, state_key=default_state_key
)


def test_grpo_turn_advantages_are_the_episode_advantages():
    def no_gather(local):
        raise AssertionError("GRPO's turn advantages need no other process's turns")

    rows = _rows()
    estimate = grpo_turn_advantages(rows, SETTINGS, no_gather)
    assert isinstance(estimate, TurnEstimate)
    assert estimate.advantages == [0.5, 0.5, -0.5, -0.5, -0.5] and estimate.metrics == {}
    assert ESTIMATORS["grpo"](rows, SETTINGS, no_gather) == estimate
    assert rows[3].turn is rows[3].episode.turns[1]


def test_the_gigpo_entry_is_gigpos_turn_advantages():
    def alone(local):
        return local, 0  # one process: every row is this process's

    rows = _rows()
    via_table = ESTIMATORS["gigpo"](rows, SETTINGS, alone)
    direct = turn_advantages(rows, SETTINGS, alone)
    assert via_table.advantages == pytest.approx(direct.advantages)
    assert via_table.metrics == pytest.approx(direct.metrics)
    # the first turns share the anchor state "start": they differ from A_E by their step advantages
    assert via_table.advantages != pytest.approx([0.5, 0.5, -0.5, -0.5, -0.5])

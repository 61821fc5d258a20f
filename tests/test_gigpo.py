"""GiGPO's two-level advantage: the pure math on hand-computed cases, the trainer's turns, and training runs."""

from __future__ import annotations

import math

import pytest
import torch

from trl_aem import AEMConfig, AEMTrainer
from trl_aem.advantages import TurnRow
from trl_aem.envs import StepResult
from trl_aem.envs.keyword import KeywordEnv
from trl_aem.gigpo import anchor_key, default_state_key, discounted_returns, step_advantages
from trl_aem.rollout import Episode, Turn


def test_discounted_returns():
    assert discounted_returns([0.0, 0.0, 1.0], 0.5) == [0.25, 0.5, 1.0]
    assert discounted_returns([1.0, -0.1, 2.0], 1.0) == pytest.approx([2.9, 1.9, 2.0])
    assert discounted_returns([], 0.95) == []


def test_step_advantages_by_hand():
    # task 0: states A (returns 1, 3, 5), B (return 2, alone); task 1: state A again (returns 4, 6) - another task,
    # so another anchor group even with the same observation
    a, b = anchor_key("A"), anchor_key("B")
    task = torch.tensor([0, 0, 0, 0, 1, 1])
    state = torch.tensor([a, a, b, a, a, a])
    returns = torch.tensor([1.0, 3.0, 2.0, 5.0, 4.0, 6.0], dtype=torch.float64)

    centred = step_advantages(task, state, returns, scale=False)
    assert centred.advantage.tolist() == pytest.approx([-2.0, 0.0, 0.0, 2.0, -1.0, 1.0])  # B alone: 0
    assert centred.group_size.tolist() == [3, 3, 1, 3, 2, 2]

    scaled = step_advantages(task, state, returns, scale=True)
    std_a, std_task1 = 2.0, math.sqrt(2.0)  # unbiased std of (1, 3, 5) and of (4, 6)
    expected = [-2 / (std_a + 1e-4), 0.0, 0.0, 2 / (std_a + 1e-4), -1 / (std_task1 + 1e-4), 1 / (std_task1 + 1e-4)]
    assert scaled.advantage.tolist() == pytest.approx(expected)
    # equal returns in a group: zero advantage, no division by a zero std blowing up
    flat = step_advantages(torch.zeros(2, dtype=torch.long), torch.tensor([a, a]), torch.ones(2), scale=True)
    assert flat.advantage.tolist() == [0.0, 0.0]


def test_state_keys():
    assert default_state_key("You see  a mug.\n") == default_state_key("You see a mug.")
    assert anchor_key(("x", ("a", "b"))) == anchor_key(("x", ("a", "b"))) < 2**48
    assert anchor_key("x") != anchor_key("y")


def _turn(response: str, observation: str, reward: float = 0.0, invalid: bool = False) -> Turn:
    return Turn([1], [5, 6], torch.zeros(2), torch.zeros(2), response, observation=observation, reward=reward,
                invalid=invalid)  # fmt: skip


def test_trainer_turn_advantages_by_hand(make_model, tokenizer, config_params):
    """Three episodes of one task, built by hand: turns that acted on the same observation are compared by their
    discounted returns; a faulted episode contributes nothing."""
    config = AEMConfig(**config_params(rollout_mode="step", advantage_estimator="gigpo", gigpo_gamma=0.5,
                                       gigpo_omega=2.0, scale_rewards="none", invalid_action_penalty=0.25))  # fmt: skip
    trainer = AEMTrainer(make_model(), KeywordEnv, config, processing_class=tokenizer)
    start = "Say the word apple."
    # e0: start -> X (reward 0) -> done (reward 1): returns 0.5, 1
    e0 = Episode({}, group=0, index=0, first_observation=start, turns=[_turn("a", "X"), _turn("b", "done", 1.0)])
    # e1: start -> X (invalid, 0) -> Y (0) -> done (1): rewards -0.25, 0, 1: returns -0.25 + 0.5*0 + 0.25*1 = 0,
    # 0.5, 1
    e1 = Episode(
        {}, group=0, index=1, first_observation=start,
        turns=[_turn("a", "X", invalid=True), _turn("c", "Y"), _turn("d", "done", 1.0)],
    )  # fmt: skip
    # e2 never reaches X: start -> Z (0): return 0
    e2 = Episode({}, group=0, index=2, first_observation=start, turns=[_turn("z", "Z")])
    rows = [TurnRow(e, t, adv) for e, adv in ((e0, 1.0), (e1, 0.5), (e2, -1.5)) for t in range(len(e.turns))]
    out = trainer._turn_advantages(rows, "train")
    # anchor "start": returns e0 0.5, e1 0, e2 0 -> mean 1/6; anchor "X": e0 1.0, e1 0.5 -> mean 0.75;
    # anchor "Y": e1 alone -> 0
    step = [0.5 - 1 / 6, 1.0 - 0.75, 0.0 - 1 / 6, 0.5 - 0.75, 0.0, 0.0 - 1 / 6]
    episode_adv = [1.0, 1.0, 0.5, 0.5, 0.5, -1.5]
    assert out == pytest.approx([e + 2.0 * s for e, s in zip(episode_adv, step, strict=True)])
    metrics = trainer._metrics["train"]
    assert metrics["gigpo/shared_frac"][-1] == pytest.approx(5 / 6)
    assert metrics["gigpo/anchor_group_size"][-1] == pytest.approx(6 / 3)  # groups: start (3), X (2), Y (1)


class DoorsEnv(KeywordEnv):
    """Two turns whose first observation is shared by the group: a state GiGPO's anchors group."""

    def tasks(self, split):
        return [{"words": ["apple", "mug"]} for _ in range(8)]

    def step(self, action: str) -> StepResult:
        result = super().step(action)
        return StepResult(result.observation, float(len(action) % 3), result.done, result.info)


@pytest.mark.parametrize("use_aem", [False, True])
def test_gigpo_trains_in_step_mode(make_model, tokenizer, config_params, use_aem):
    config = AEMConfig(
        **config_params(rollout_mode="step", advantage_estimator="gigpo", max_turns=2, max_turn_tokens=8,
                        use_aem=use_aem, max_steps=2)
    )  # fmt: skip
    trainer = AEMTrainer(make_model(), DoorsEnv, config, processing_class=tokenizer)
    before = {n: p.clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    log = trainer.state.log_history[0]
    assert log["gigpo/shared_frac"] > 0 and log["gigpo/anchor_group_size"] > 1 and math.isfinite(log["loss"])
    assert "gigpo/step_adv_std" in log and (("aem/alpha_std" in log) == use_aem)
    assert any(not torch.equal(p, trainer.model.get_parameter(n)) for n, p in before.items())


def test_gigpo_needs_step_mode(config_params):
    with pytest.raises(ValueError, match="gigpo.*rollout_mode='step'"):
        AEMConfig(**config_params(advantage_estimator="gigpo"))
    with pytest.raises(ValueError, match="advantage_estimator must be one of"):
        AEMConfig(**config_params(advantage_estimator="ppo", rollout_mode="step"))

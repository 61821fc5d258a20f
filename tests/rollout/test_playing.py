"""Playing episodes with the trainer's policy, in both rollout modes: tasks from the environment, env/* metrics,
faulty and contract-breaking environments, reward functions that see the episodes, evaluation episodes."""

import pytest
import torch
from datasets import Dataset

from trl_aem import AEMTrainer
from trl_aem.envs import EnvContractError, StepResult
from trl_aem.envs.keyword import KeywordEnv

from ..fake_envs import FixedTurnsEnv, SpreadEnv, make_faulty_tasks
from .conftest import Recording, assert_every_logged_value_is_a_finite_number, logged


@pytest.mark.parametrize("mode", ["trajectory", "step"])
def test_trains_with_tasks_from_the_env(make_model, tokenizer, env_config, mode):
    trainer = Recording(make_model(), SpreadEnv, env_config(rollout_mode=mode), processing_class=tokenizer)
    trainer.train()
    for key in (
        "env/success_rate",
        "env/return",
        "env/turns",
        "env/invalid_rate",
        "env/errors",
        "env/timeouts",
        "aem/alpha_mean",
        "aem/alpha_std",
        "aem/drift",
    ):
        assert logged(trainer, key), key
    assert max(logged(trainer, "aem/alpha_std")) > 0
    assert all(e.ending in ("done", "max_turns", "truncated") for e in trainer.episodes[0])
    assert len(trainer.episodes[0]) == 8 and max(logged(trainer, "env/turns")) > 1


@pytest.mark.parametrize("mode", ["trajectory", "step"])
@pytest.mark.parametrize("fault,worker_type", [("raise", "thread"), ("hang", "thread"), ("crash", "process")])
def test_faulty_environment_ends_the_episode_not_the_run(make_model, tokenizer, env_config, fault, worker_type, mode):
    # two tasks, so every batch of 2 tasks x 4 generations holds the faulty one
    dataset = Dataset.from_list(make_faulty_tasks(fault, fault_turn=0, count=2, faulty=1))
    config = env_config(rollout_mode=mode, env_worker_type=worker_type, env_step_timeout=2.0, max_steps=1)
    trainer = Recording(make_model(), SpreadEnv, config, train_dataset=dataset, processing_class=tokenizer)
    trainer.train()
    counted = "env/timeouts" if fault == "hang" else "env/errors"
    assert logged(trainer, counted)[0] >= 1
    episodes = trainer.episodes[0]
    faulted = [e for e in episodes if e.faulted]
    assert faulted and all(e.task.get("fault") == fault for e in faulted)
    output = trainer.outputs[0]
    if mode == "trajectory":  # the faulted episode's row carries no loss and no advantage
        for row, episode in enumerate(episodes):
            if episode.faulted:
                assert not (output["completion_mask"] * output["tool_mask"])[row].any()
                assert torch.all(output["advantages"][row] == 0)
    else:  # no rows at all from faulted episodes
        assert output["completion_ids"].shape[0] == sum(len(e.turns) for e in episodes if not e.faulted)
    assert torch.isfinite(torch.tensor(logged(trainer, "loss"))).all()


def test_evaluate_runs_eval_episodes(make_model, tokenizer, env_config):
    config = env_config(eval_strategy="steps", eval_steps=1, per_device_eval_batch_size=8, num_generations_eval=4)
    trainer = AEMTrainer(make_model(), SpreadEnv, config, processing_class=tokenizer)
    assert trainer.eval_dataset is not None and len(trainer.eval_dataset) == 8
    metrics = trainer.evaluate()
    for key in ("eval_env/success_rate", "eval_env/return", "eval_env/turns", "eval_aem/alpha_mean"):
        assert key in metrics, key


@pytest.mark.parametrize("mode", ["trajectory", "step"])
def test_training_steps_after_an_evaluation_are_logged_as_training(make_model, tokenizer, env_config, mode):
    # regression: step mode once generated the step after an evaluation with the model in eval mode, so that
    # step's episodes were logged (and sized) as an eval batch and the train curve lost a point
    config = env_config(
        rollout_mode=mode, max_steps=3, logging_steps=1, eval_strategy="steps", eval_steps=1, num_generations_eval=2
    )
    trainer = AEMTrainer(make_model(), SpreadEnv, config, processing_class=tokenizer)
    trainer.train()
    train_steps = [log["step"] for log in trainer.state.log_history if "env/success_rate" in log]
    eval_steps = [log["step"] for log in trainer.state.log_history if "eval_env/success_rate" in log]
    assert train_steps == [1, 2, 3] and eval_steps == [1, 2, 3]
    assert_every_logged_value_is_a_finite_number(trainer)


def test_env_errors_are_clear(make_model, tokenizer, env_config):
    with pytest.raises(TypeError, match="zero-argument callable"):
        AEMTrainer(make_model(), env="alfworld", args=env_config(), processing_class=tokenizer)

    class NoTasks:
        def reset(self, task):
            return ""

        def step(self, action):
            return StepResult("", 0.0, True)

    with pytest.raises(ValueError, match="tasks"):
        AEMTrainer(make_model(), NoTasks, env_config(), processing_class=tokenizer)


@pytest.mark.parametrize("mode", ["trajectory", "step"])
def test_user_reward_functions_see_finished_episodes(make_model, tokenizer, env_config, mode):
    seen = []

    def turn_bonus(completions, episode, env_return, **kwargs):
        seen.extend(episode)
        assert len(episode) == len(completions) == len(env_return)
        return [0.5 * len(e.turns) for e in episode]

    trainer = AEMTrainer(
        make_model(),
        FixedTurnsEnv,
        env_config(rollout_mode=mode, max_steps=1),
        processing_class=tokenizer,
        reward_funcs=turn_bonus,
    )
    trainer.train()
    assert seen and all(e.finished for e in seen)
    log = trainer.state.log_history[0]
    assert log["rewards/turn_bonus/mean"] == pytest.approx(0.5 * log["env/turns"])
    assert log["reward"] == pytest.approx(log["rewards/env_return/mean"] + log["rewards/turn_bonus/mean"], abs=1e-5)


@pytest.mark.parametrize("mode", ["trajectory", "step"])
def test_a_batch_where_every_episode_faults_still_trains(make_model, tokenizer, env_config, mode):
    tasks = [{"words": ["apple"], "fault": "raise", "fault_turn": 0} for _ in range(2)]
    config = env_config(rollout_mode=mode, max_steps=2, gradient_accumulation_steps=2, per_device_train_batch_size=4)
    trainer = Recording(
        make_model(), SpreadEnv, config, train_dataset=Dataset.from_list(tasks), processing_class=tokenizer
    )
    trainer.train()
    assert logged(trainer, "env/errors")[0] == 8  # 2 generation batches x 4 episodes, all faulted
    assert all(loss == 0.0 for loss in logged(trainer, "loss"))
    assert all(e.faulted for e in trainer.episodes[0])
    assert_every_logged_value_is_a_finite_number(trainer)


def test_a_run_whose_episodes_all_fault_stops_with_the_cause(make_model, tokenizer, env_config):
    tasks = [{"words": ["apple"], "fault": "raise", "fault_turn": 0} for _ in range(2)]
    config = env_config(rollout_mode="step", max_steps=5, per_device_train_batch_size=4)
    trainer = AEMTrainer(make_model(), SpreadEnv, config, train_dataset=Dataset.from_list(tasks),
                         processing_class=tokenizer)  # fmt: skip
    with pytest.raises(RuntimeError, match=r"last 3 generation batches .* RuntimeError: the environment broke"):
        trainer.train()
    assert trainer.state.global_step == 2  # two steps on fully faulted batches, the third batch stopped the run


class FiveTuple(KeywordEnv):
    def step(self, action):
        result = super().step(action)
        return result.observation, result.reward, result.done, False, result.info  # gymnasium's step


class TextStep(KeywordEnv):
    def step(self, action):
        return "an observation"


class NoneReset(KeywordEnv):
    def reset(self, task):
        super().reset(task)


@pytest.mark.parametrize(
    "env, message",
    [
        (FiveTuple, r"env.step returned a 5-tuple, gymnasium's .*return trl_aem.envs.StepResult"),
        (TextStep, r"env.step must return trl_aem.envs.StepResult\(observation, reward, done, info\), got str"),
        (NoneReset, r"env.reset must return the first observation as str, got NoneType"),
    ],
)
def test_an_environment_that_breaks_the_contract_fails_fast_with_one_line(make_model, tokenizer, env_config, env,
                                                                          message):  # fmt: skip
    trainer = AEMTrainer(make_model(), env, env_config(rollout_mode="step", max_steps=3), processing_class=tokenizer)
    with pytest.raises(EnvContractError, match=message) as raised:
        trainer.train()
    assert "\n" not in str(raised.value) and trainer.state.global_step == 0


class SameReturnEnv(KeywordEnv):
    """Every episode returns about 3 x 0.3 = 0.9 whatever the policy does: every other episode 1e-6 more, a float32
    ulp or so (as sums of rewards in another order give), so the groups' std is float rounding, about 5e-7."""

    episodes = 0

    def tasks(self, split):
        return [{"words": ["apple", "mug", "lamp"]} for _ in range(8)]

    def reset(self, task):
        SameReturnEnv.episodes += 1
        self.jitter = 1e-6 * (SameReturnEnv.episodes % 2)
        return super().reset(task)

    def step(self, action):
        result = super().step(action)
        reward = 0.3 + (self.jitter if result.done else 0.0)
        return StepResult(result.observation, reward, result.done, {**result.info, "invalid": False})


@pytest.mark.parametrize("mode", ["trajectory", "step"])
def test_returns_equal_up_to_rounding_give_zero_advantage_and_a_batch_without_signal_is_reported(
    make_model, tokenizer, env_config, mode, caplog
):
    config = env_config(rollout_mode=mode, max_steps=3, max_turns=3, logging_steps=1)
    trainer = AEMTrainer(make_model(), SameReturnEnv, config, processing_class=tokenizer)
    with caplog.at_level("WARNING", logger="trl_aem.trainer"):
        trainer.train()
    for log in trainer.state.log_history[:3]:
        assert 0 < log["reward_std"] < 1e-5  # the returns do differ, by rounding
        assert log["frac_reward_zero_std"] == 1.0  # ... which is no spread (TRL's isclose said it was)
        # TRL's (R - mean) / (std + 1e-4) would give advantages of about 5e-3 here, and a gradient from rounding
        assert log["grad_norm"] == 0.0
    assert "the last 3 generation batches (up to step 2) carried no learning signal" in caplog.text


def test_one_batch_without_signal_is_no_alarm_three_in_a_row_are(caplog):
    """A policy that solved (or failed) every task of one batch alike is normal; a streak is not."""
    import types

    trainer = types.SimpleNamespace(
        _batches_without_signal=0,
        accelerator=types.SimpleNamespace(gather=lambda t: t),
        state=types.SimpleNamespace(global_step=0),
    )
    mask = torch.ones(4, 3)
    flat = {"completion_mask": mask, "advantages": torch.zeros(4)}
    spread = {"completion_mask": mask, "advantages": torch.tensor([0.5, -0.5, 0.0, 0.0])}
    with caplog.at_level("WARNING", logger="trl_aem.trainer"):
        for batch in (flat, flat, spread, flat, flat):
            AEMTrainer._warn_without_signal(trainer, batch)
            trainer.state.global_step += 1
        assert "no learning signal" not in caplog.text
        AEMTrainer._warn_without_signal(trainer, flat)
    assert "the last 3 generation batches (up to step 5) carried no learning signal" in caplog.text

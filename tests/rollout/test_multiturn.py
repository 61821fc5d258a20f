"""AEMTrainer with an environment: trajectory and step rollouts, loss masks, per-turn alpha, faults, eval."""

import math

import pytest
import torch
from datasets import Dataset

from trl_aem import AEMTrainer
from trl_aem.envs import EnvContractError, StepResult
from trl_aem.envs.keyword import KeywordEnv
from trl_aem.modulation import response_spans

from ..fake_envs import FixedTurnsEnv, OneTurnEnv, SpreadEnv, make_faulty_tasks


class Recording(AEMTrainer):
    """Keeps every generation batch's output (what TRL's loss consumes)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.outputs, self.episodes = [], []

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        self.outputs.append({k: v.detach().clone() if isinstance(v, torch.Tensor) else v for k, v in output.items()})
        self.episodes.append(self.last_episodes)
        return output


@pytest.fixture
def env_config(make_config):
    def _config(**overrides):
        params = dict(
            max_completion_length=120,
            max_turn_tokens=12,
            max_turns=4,
            max_steps=2,
            env_step_timeout=5.0,
            per_device_train_batch_size=8,
            num_generations=4,
        )
        params.update(overrides)
        return make_config(**params)

    return _config


def logged(trainer, key):
    return [log[key] for log in trainer.state.log_history if key in log]


def assert_every_logged_value_is_a_finite_number(trainer):
    """What reaches loggers (W&B, TensorBoard, the card's curves) is a number: no None, NaN or inf."""
    bad = {
        (log.get("step"), key): value
        for log in trainer.state.log_history
        for key, value in log.items()
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
    }
    assert not bad, bad


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


def test_trajectory_rows_mask_observation_tokens(make_model, tokenizer, env_config):
    trainer = Recording(make_model(), FixedTurnsEnv, env_config(max_steps=1), processing_class=tokenizer)
    trainer.train()
    output, episodes = trainer.outputs[0], trainer.episodes[0]
    loss_mask = output["completion_mask"] * output["tool_mask"]
    for row, episode in enumerate(episodes):
        position = 0
        for turn in episode.turns:
            n, m = len(turn.completion_ids), len(turn.observation_ids)
            ids = output["completion_ids"][row]
            assert ids[position : position + n].tolist() == turn.completion_ids
            assert loss_mask[row, position : position + n].all()  # the response is trained on
            assert not loss_mask[row, position + n : position + n + m].any()  # the observation never is
            position += n + m
        assert not loss_mask[row, position:].any()
        # one AEM span per turn
        spans = response_spans(loss_mask[row : row + 1])
        assert spans.num_spans == len(episode.turns)


def test_alpha_differs_between_turns_of_one_episode(make_model, tokenizer, env_config):
    trainer = Recording(
        make_model(), FixedTurnsEnv, env_config(max_steps=2, aem_lambda=2.0), processing_class=tokenizer
    )
    trainer.train()
    differs = 0
    for output in trainer.outputs:
        mask = (output["completion_mask"] * output["tool_mask"]).bool()
        spans = response_spans(mask.long())
        per_span = torch.stack([output["advantages"][r, s] for r, s in zip(spans.row, spans.start, strict=True)])
        for row in range(mask.size(0)):
            values = per_span[spans.row == row]
            if values.numel() > 1 and values.abs().max() > 0:
                differs += int(values.max() - values.min() > 1e-6)
    assert differs > 0


def test_step_and_trajectory_agree_on_one_turn_episodes(make_model, tokenizer, env_config):
    results = {}
    for mode in ("trajectory", "step"):
        trainer = Recording(
            make_model(seed=3), OneTurnEnv, env_config(rollout_mode=mode, max_steps=1), processing_class=tokenizer
        )
        trainer.train()
        results[mode] = trainer
    traj, step = results["trajectory"].outputs[0], results["step"].outputs[0]
    assert traj["completion_ids"].shape[0] == step["completion_ids"].shape[0] == 8
    for key in ("prompt_ids", "completion_ids"):
        width = min(traj[key].shape[1], step[key].shape[1])
        side = slice(-width, None) if key == "prompt_ids" else slice(0, width)
        assert torch.equal(traj[key][:, side], step[key][:, side])
    mask = traj["completion_mask"] * traj["tool_mask"]
    width = step["advantages"].shape[1]
    assert torch.allclose(
        (traj["advantages"] * mask)[:, :width], step["advantages"] * step["completion_mask"], atol=1e-6
    )
    assert logged(results["trajectory"], "loss") == pytest.approx(logged(results["step"], "loss"), abs=1e-6)


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


def test_truncated_trajectories_are_masked_and_counted(make_model, tokenizer, env_config):
    trainer = Recording(
        make_model(),
        FixedTurnsEnv,
        env_config(max_completion_length=30, max_turn_tokens=12, max_steps=1),
        processing_class=tokenizer,
    )
    trainer.train()
    truncated = [row for row, e in enumerate(trainer.episodes[0]) if e.ending == "truncated"]
    assert truncated and logged(trainer, "env/truncated")[0] == len(truncated)
    output = trainer.outputs[0]
    assert output["completion_ids"].shape[1] <= 30
    for row in truncated:
        assert not (output["completion_mask"] * output["tool_mask"])[row].any()


def test_step_mode_micro_batches_match_one_batch_gradient(make_model, tokenizer, env_config):
    grads = {}
    for size in (2, 64):
        config = env_config(
            rollout_mode="step", max_steps=1, per_device_train_batch_size=8, learning_rate=0.0, loss_type="grpo"
        )
        trainer = Recording(make_model(seed=5), FixedTurnsEnv, config, processing_class=tokenizer)
        trainer.args.per_device_train_batch_size = size  # micro-batch size only (the generation batch is fixed)
        trainer.train()
        grads[size] = logged(trainer, "grad_norm")[0]
    assert grads[2] == pytest.approx(grads[64], rel=1e-4)


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
    """Every episode returns 3 x 0.3 = 0.9 whatever the policy does: no spread in any group."""

    def tasks(self, split):
        return [{"words": ["apple", "mug", "lamp"]} for _ in range(8)]

    def step(self, action):
        result = super().step(action)
        return StepResult(result.observation, 0.3, result.done, {**result.info, "invalid": False})


@pytest.mark.parametrize("mode", ["trajectory", "step"])
def test_equal_returns_count_as_zero_spread_and_a_batch_without_signal_is_reported(
    make_model, tokenizer, env_config, mode, caplog
):
    trainer = AEMTrainer(make_model(), SameReturnEnv, env_config(rollout_mode=mode, max_steps=1, max_turns=3),
                         processing_class=tokenizer)  # fmt: skip
    with caplog.at_level("WARNING", logger="trl_aem.trainer"):
        trainer.train()
    log = trainer.state.log_history[0]
    assert log["frac_reward_zero_std"] == 1.0  # float32 0.9s are not spread (TRL's isclose said they were)
    assert "carries no learning signal" in caplog.text

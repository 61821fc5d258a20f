"""Step rows: one row per turn; on one-turn episodes the same rows, advantages and loss as trajectory rows, and a
step's rows in micro-batches give the gradient of one batch."""

import pytest
import torch

from ..fake_envs import FixedTurnsEnv, OneTurnEnv
from .conftest import Recording, logged


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

"""Trajectory rows: one row per episode, observation tokens masked out of the loss, one alpha per turn's span,
episodes cut by the context limit masked and counted."""

import torch

from trl_aem.modulation import response_spans

from ..fake_envs import FixedTurnsEnv
from .conftest import Recording, logged


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

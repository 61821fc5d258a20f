"""Trajectory mode: one training row per episode, through TRL's own ``rollout_func`` path.

``AEMTrainer._generate_and_score_completions`` hands TRL the batch's rows with the task inside the prompt
(:func:`trajectory_inputs`); TRL calls :meth:`TrajectoryRowsMixin._trajectory_rollout` (registered as
``rollout_func`` at construction) with those prompts, which plays the episodes and returns one row per episode: the
turns' responses and observations as the completion, ``env_mask`` 1 on response tokens only. Old and reference
log-probs, vLLM importance sampling, rewards and advantages are then TRL's own code. The rollout's extra fields
(``env_return``, ``episode``) reach the reward functions, and TRL writes them into the batch's row dicts
(trl 1.16 ``grpo_trainer.py`` L2741-2747), so the trainer reads the episodes, and with them each response's token
statistics (:func:`trajectory_token_statistics`), back from the rows it passed in.

Faulted episodes are masked out of the loss and unscorable (see :mod:`.playing`); episodes truncated by the context
limit keep their reward in the baseline but are masked, as DAPO's overlong filtering does (``env/truncated``).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .episode import Episode
from .playing import task_of
from .rows import pad_statistics

__all__ = ["TrajectoryRowsMixin", "trajectory_inputs", "trajectory_rows", "trajectory_token_statistics"]


def trajectory_inputs(inputs: list[dict]) -> list[dict]:
    """The batch's rows for TRL's ``rollout_func`` path: each row's task rides in its prompt (one user message with
    empty content and the task under ``"task"``), where :meth:`TrajectoryRowsMixin._trajectory_rollout` reads it."""
    return [{**row, "prompt": [{"role": "user", "content": "", "task": task_of(row)}]} for row in inputs]


def trajectory_rows(episodes: list[Episode], eos_token_id: int, keep_sampling_logps: bool) -> dict[str, list]:
    """TRL's ``rollout_func`` output for finished episodes: per episode, the initial prompt ids, the completion
    (responses and observation tokens), ``env_mask`` (1 = response token; all 0 for a faulted or truncated episode),
    the sampling log-probs (vLLM's, for importance sampling; ``None`` unless ``keep_sampling_logps``), and the extra
    fields ``env_return`` (``None`` when faulted) and ``episode``."""
    out: dict[str, Any] = {"prompt_ids": [], "completion_ids": [], "logprobs": [], "env_mask": []}
    out["env_return"], out["episode"] = [], list(episodes)
    for episode in episodes:
        completion, mask, sampled = [], [], []
        for turn in episode.turns:
            n, m = len(turn.completion_ids), len(turn.observation_ids)
            completion += turn.completion_ids + turn.observation_ids
            mask += [1] * n + [0] * m
            sampled += list(turn.sampling_logps or [0.0] * n) + [0.0] * m
        if episode.faulted or episode.ending == "truncated" or not completion:
            mask = [0] * len(completion)  # no gradient: see the module docstring
        if not completion:  # reset failed: one masked token keeps the row well formed
            completion, mask, sampled = [eos_token_id], [0], [0.0]
        out["prompt_ids"].append(episode.initial_prompt_ids or [eos_token_id])
        out["completion_ids"].append(completion)
        out["env_mask"].append(mask)
        out["logprobs"].append(sampled)
        out["env_return"].append(None if episode.faulted else episode.env_return)
    if not keep_sampling_logps:
        out["logprobs"] = None  # sampling log-probs only matter to vLLM's importance-sampling correction
    return out


def trajectory_token_statistics(episodes: list[Episode], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, width)`` token entropies and log-probs of trajectory rows, from the turns that recorded them while
    sampling: each response's values at its tokens, NaN on observation tokens and padding."""
    rows = {"entropies": [], "logps": []}
    for episode in episodes:
        for name, values in rows.items():
            pieces = []
            for turn in episode.turns:
                pieces += [getattr(turn, name).float(), torch.full((len(turn.observation_ids),), math.nan)]
            values.append(torch.cat(pieces) if pieces else torch.full((1,), math.nan))
    return pad_statistics(rows["entropies"], width), pad_statistics(rows["logps"], width)


class TrajectoryRowsMixin:
    """The trajectory-mode method of :class:`~trl_aem.AEMTrainer`: TRL's ``rollout_func``."""

    def _trajectory_rollout(self, prompts: list, trainer: Any) -> dict[str, list]:
        """TRL's ``rollout_func`` (called from ``GRPOTrainer._generate``, trl 1.16 L2200-2226): plays one episode per
        prompt's task (:func:`trajectory_inputs`) and returns its rows (:func:`trajectory_rows`)."""
        mode = "train" if self.model.training else "eval"
        episodes = self.play_episodes([prompt[-1]["task"] for prompt in prompts], mode)
        return trajectory_rows(episodes, self._tokenizer.eos_token_id, keep_sampling_logps=self.use_vllm)

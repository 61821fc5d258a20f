"""Data of finished episodes: turns (response spans) and how an episode ended."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["Turn", "Episode", "FAULTS"]

# How an episode ends (`Episode.ending`): "done" (the env said so), "max_turns" (turn budget spent), "truncated"
# (trajectory mode: the conversation outgrew the context), or a fault, "error" / "timeout" (see
# trl_aem.rollout.playing and .trajectory_rows for how each is scored).
FAULTS = ("error", "timeout")


@dataclass
class Turn:
    """One response span ``a_{i,t}`` and what the environment answered."""

    prompt_ids: list[int]  # what the model was conditioned on for this turn
    completion_ids: list[int]  # the sampled response tokens (EOS included when generated)
    entropies: torch.Tensor  # (n,) full-vocabulary token entropies while sampling
    logps: torch.Tensor  # (n,) sampled-token log-probs while sampling
    response: str
    sampling_logps: list[float] | None = None  # from vLLM, for TRL's importance-sampling correction
    observation: str = ""
    observation_ids: list[int] = field(default_factory=list)  # trajectory mode: env tokens after the response
    reward: float = 0.0
    invalid: bool = False
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Episode:
    task: dict
    group: int  # global task-group id (the G episodes of one task share it)
    index: int  # global episode id
    system_prompt: str | None = None
    first_observation: str = ""
    initial_prompt_ids: list[int] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    ending: str | None = None
    success: bool = False
    error: str | None = None
    env_return: float = 0.0

    @property
    def finished(self) -> bool:
        return self.ending is not None

    @property
    def faulted(self) -> bool:
        return self.ending in FAULTS

    @property
    def num_invalid(self) -> int:
        return sum(t.invalid for t in self.turns)

    def messages(self) -> list[dict[str, str]]:
        """The conversation as chat messages (system, first observation, then response/observation pairs)."""
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        messages.append({"role": "user", "content": self.first_observation})
        for turn in self.turns:
            messages.append({"role": "assistant", "content": turn.response})
            if turn.observation:
                messages.append({"role": "user", "content": turn.observation})
        return messages

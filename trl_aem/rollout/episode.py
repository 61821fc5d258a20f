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

    def __repr__(self) -> str:
        # short: a Turn's token ids, statistics and prompt are hundreds of numbers (issue 23 item 5)
        flags = ", invalid" if self.invalid else ""
        return (
            f"Turn({len(self.completion_ids)} tokens, response {_short(self.response)}, reward {self.reward:g}{flags}, "
            f"observation {_short(self.observation)})"
        )


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

    def __repr__(self) -> str:
        # short, as it ends up in log lines (TRL's "All reward functions returned None" prints the row that holds
        # it): no token ids, no statistics, no conversation (issue 23 item 5)
        error = f", error {_short(self.error, 120)}" if self.error else ""
        return (
            f"Episode(#{self.index} group {self.group}, task {_short(self.task, 80)}, {len(self.turns)} turns, "
            f"ending {self.ending}, return {self.env_return:g}{', success' if self.success else ''}{error})"
        )

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


def _short(value: Any, limit: int = 60) -> str:
    """A ``repr`` of ``value`` of about ``limit`` characters at most, with its quotes and brackets balanced: a long
    string is cut (its closing quote kept), a long list counted, a dict shown key by key with short values."""
    text = repr(value)
    if len(text) <= limit:
        return text
    if isinstance(value, str):
        return text[: max(limit - 4, 2)] + "..." + text[0]
    if isinstance(value, dict):
        parts: list[str] = []
        for key, item in value.items():
            part = f"{_short(key, 24)}: {_short(item, 24)}"
            if sum(len(p) + 2 for p in parts) + len(part) > limit - 8:
                parts.append("...")
                break
            parts.append(part)
        return "{" + ", ".join(parts) + "}"
    if isinstance(value, list | tuple | set):
        return f"<{type(value).__name__} of {len(value)}>"
    return f"<{type(value).__name__}>"

"""``RolloutSettings``: how episodes are played, and the one place the rollout defaults live.

:class:`~trl_aem.AEMConfig` takes its rollout and environment-pool fields' defaults from here (the pool's from
:mod:`trl_aem.envs.pool`, which environment workers import without torch, so it cannot import this package), the
trainer builds its settings with :meth:`RolloutSettings.from_config`, checkpoints record them in ``aem_env.json``
(:meth:`RolloutSettings.record`) and ``evaluate()`` / ``trl-aem eval`` play with the recorded settings
(:meth:`RolloutSettings.from_record`), so an evaluation sees the prompts, budgets and penalties the model was
trained with; without a record they play with these defaults, which are training's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..envs.pool import DEFAULT_MAX_WORKERS, DEFAULT_STEP_TIMEOUT, DEFAULT_WORKER_TYPE

__all__ = ["ROLLOUT_MODES", "TRL_MAX_COMPLETION_LENGTH", "RolloutSettings"]

ROLLOUT_MODES = ("trajectory", "step")

# TRL's GRPOConfig.max_completion_length default, the training default AEMConfig inherits (a constant, so that this
# module does not import TRL; tests/rollout/test_settings.py checks it against GRPOConfig)
TRL_MAX_COMPLETION_LENGTH = 512


@dataclass(frozen=True)
class RolloutSettings:
    """Field names are :class:`~trl_aem.AEMConfig`'s (see its docstring for their meaning).

    Attributes:
        rollout_mode: ``"trajectory"`` (one growing conversation per episode) or ``"step"`` (a fresh windowed prompt
            per turn).
        max_turns: model responses per episode at most.
        history_length: step mode: previous (response, observation) pairs shown in the prompt.
        max_turn_tokens: cap on one response; ``None`` means ``max_completion_length``.
        max_completion_length: trajectory mode: all responses and observations of one episode (TRL's default,
            :data:`TRL_MAX_COMPLETION_LENGTH`).
        invalid_action_penalty: subtracted from the episode return per invalid action (verl-agent's 0.1).
        env_step_timeout: seconds one ``env.step`` may take; ``None`` waits forever.
        num_env_workers: environments stepping in parallel.
        env_worker_type: ``"thread"`` or ``"process"`` workers (see :class:`~trl_aem.envs.EnvPool`).
        rollout_waves: generate waves per turn (one wave's environment steps overlap the next's generation).
        show_progress: an ``episodes`` progress bar.
    """

    rollout_mode: str = "trajectory"
    max_turns: int = 10
    history_length: int = 2
    max_turn_tokens: int | None = None
    max_completion_length: int = TRL_MAX_COMPLETION_LENGTH
    invalid_action_penalty: float = 0.1
    env_step_timeout: float | None = DEFAULT_STEP_TIMEOUT
    num_env_workers: int = DEFAULT_MAX_WORKERS
    env_worker_type: str = DEFAULT_WORKER_TYPE
    rollout_waves: int = 2
    show_progress: bool = False

    # what a checkpoint records for evaluation (how episodes are played, not how fast)
    RECORDED = (
        "rollout_mode",
        "max_turns",
        "history_length",
        "max_turn_tokens",
        "max_completion_length",
        "invalid_action_penalty",
        "env_step_timeout",
    )

    def __post_init__(self) -> None:
        if self.rollout_mode not in ROLLOUT_MODES:
            raise ValueError(f"rollout_mode must be one of {ROLLOUT_MODES}, got {self.rollout_mode!r}")

    @property
    def turn_tokens(self) -> int:
        """The effective cap on one response."""
        return self.max_turn_tokens or self.max_completion_length

    @classmethod
    def from_config(cls, args: Any, **overrides: Any) -> RolloutSettings:
        """The settings of an :class:`~trl_aem.AEMConfig` (``overrides`` win)."""
        values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
        return cls(**{**values, **overrides})

    def record(self) -> dict[str, Any]:
        """The fields ``aem_env.json`` keeps (``max_turn_tokens`` resolved)."""
        return {
            name: (self.turn_tokens if name == "max_turn_tokens" else getattr(self, name)) for name in self.RECORDED
        }

    @classmethod
    def from_record(cls, record: dict[str, Any], **overrides: Any) -> RolloutSettings:
        """Settings from an ``aem_env.json`` record (unknown keys ignored, missing ones default); ``overrides``
        (``None`` values ignored) win."""
        values = {name: record[name] for name in cls.RECORDED if name in record}
        values.update({name: value for name, value in overrides.items() if value is not None})
        return cls(**values)

"""Expert demonstrations for cold starts: roll out ``env.expert_action()`` into an SFT dataset.

The expert plays through an :class:`~trl_aem.envs.pool.EnvPool`, like the trainer's and ``evaluate()``'s episodes, so
the environment meets one contract everywhere: the same checks and coercions of what it returns
(:func:`~trl_aem.envs.pool.call_env`), the same per-episode fault tolerance (an episode whose ``reset`` or ``step``
raises or times out is left out, the others go on), the same :class:`~trl_aem.envs.EnvContractError` at the first
wrong return type, and :class:`~trl_aem.envs.pool.EnvFailedError` when no episode could be played at all.
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from datasets import Dataset

from ..envs.base import EnvContractError, StepResult
from ..envs.pool import EnvCall, EnvFailedError, EnvOutcome, EnvPool
from .episode import Episode, Turn
from .prompts import step_messages
from .settings import ROLLOUT_MODES

__all__ = ["collect_demonstrations"]


class _Fault(Exception):
    """One demonstration episode ended in an environment error or timeout (it is left out)."""


def _probe(env_factory: Callable[[], Any]) -> tuple[str | None, Any, bool]:
    """``(system_prompt, history_observation, has admissible_actions)`` of one instance, which must have an expert."""
    try:
        env = env_factory()
    except Exception as error:  # noqa: BLE001 - one line naming the environment's own error
        raise EnvFailedError(
            f"the environment could not be created for the demonstrations: {type(error).__name__}: {error}"
        ) from error
    try:
        if not callable(getattr(env, "expert_action", None)):
            raise TypeError(f"{type(env).__name__} has no expert_action(); demonstrations need one")
        return (
            getattr(env, "system_prompt", None),
            getattr(env, "history_observation", None),
            callable(getattr(env, "admissible_actions", None)),
        )
    finally:
        if callable(getattr(env, "close", None)):
            env.close()


def _call(pool: EnvPool, method: str, arg: Any = None, *, where: str) -> Any:
    """One call in the pool's single slot: its value, :class:`EnvContractError` for a wrong return type (every
    episode would hit it), :class:`_Fault` for an error or a timeout (this episode only)."""
    outcome: EnvOutcome = pool.run([EnvCall(0, method, arg)])[0]
    if outcome.status == "contract":
        raise EnvContractError(outcome.error)
    if not outcome.ok:
        raise _Fault(f"{where}: {outcome.reason}")
    return outcome.value


def collect_demonstrations(
    env_factory: Callable[[], Any],
    tasks: list[dict],
    *,
    rollout_mode: str = "trajectory",
    history_length: int = 2,
    max_turns: int = 50,
    noise: float = 0.0,
    successful_only: bool = True,
    seed: int = 0,
    timeout: float | None = None,
) -> Dataset:
    """Play ``tasks`` with the environment's expert and return a ``datasets.Dataset`` that TRL's ``SFTTrainer``
    trains on directly.

    ``rollout_mode="trajectory"``: one conversation per episode (system, observation, action, ...) in a ``messages``
    column. ``"step"``: one example per turn, conversational prompt-completion (``prompt``: the step-mode prompt the
    RL trainer uses, so SFT and RL see the same inputs; ``completion``: the action), so SFTTrainer's loss covers the
    action only (its ``completion_only_loss``), not the prompt. With ``noise > 0`` the expert is replaced by a random
    admissible action with that probability (recovery behaviour in the data); ``successful_only`` keeps only episodes
    that succeeded.

    The environment is held to the same contract as in training (``trl_aem.envs.pool.call_env``): a ``step`` may
    return a gym-like ``(observation, reward, done, info)`` tuple, a wrong return type raises
    :class:`~trl_aem.envs.EnvContractError` at once, an episode whose ``reset``, ``expert_action`` or ``step`` raises
    (or runs past ``timeout`` seconds; default: no limit) is left out with a warning, and
    :class:`~trl_aem.envs.pool.EnvFailedError` says so when that was every episode.
    """
    if rollout_mode not in ROLLOUT_MODES:
        raise ValueError(f"rollout_mode must be one of {ROLLOUT_MODES}, got {rollout_mode!r}")
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise must be in [0, 1], got {noise}")
    if timeout is not None and not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds or None, got {timeout}")
    rng = random.Random(seed)
    system_prompt, history_observation, has_admissible = _probe(env_factory)
    rows: list[dict] = []
    faults: list[str] = []
    pool = EnvPool(env_factory, worker_type="thread", max_workers=1, timeout=math.inf if timeout is None else timeout)
    expert = _Expert(pool, system_prompt, history_observation, has_admissible, history_length, max_turns, noise, rng)
    try:
        for number, task in enumerate(tasks):
            try:
                conversation, step_rows, success = expert.play(task)
            except _Fault as fault:
                faults.append(f"task {number}: {fault}")
                continue
            if (successful_only and not success) or not step_rows:  # a failure, or no move at all
                continue
            if rollout_mode == "step":
                rows += step_rows
            else:
                while conversation[-1]["role"] != "assistant":
                    conversation.pop()
                rows.append({"messages": conversation})
    finally:
        pool.close()
    if faults and len(faults) == len(tasks):
        raise EnvFailedError(
            f"every expert demonstration episode ({len(tasks)}) ended in an environment error or timeout, so there "
            f"is nothing to learn from; the first: {faults[0]}"
        )
    if faults:
        warnings.warn(
            f"{len(faults)} of {len(tasks)} expert demonstration episodes ended in an environment error or timeout "
            f"and were left out; the first: {faults[0]}",
            RuntimeWarning,
            stacklevel=2,
        )
    if not rows:
        raise ValueError(
            f"no demonstration was collected: none of the {len(tasks) - len(faults)} played tasks succeeded within "
            f"{max_turns} turns; check the tasks, raise max_turns or lower noise"
        )
    return Dataset.from_list(rows)


@dataclass
class _Expert:
    """Plays the expert's episodes in the pool's single slot."""

    pool: EnvPool
    system_prompt: str | None
    history_observation: Callable[[str], str] | None
    has_admissible: bool
    history_length: int
    max_turns: int
    noise: float
    rng: random.Random

    def play(self, task: dict) -> tuple[list[dict], list[dict], bool]:
        """One expert episode of ``task``: its conversation, its step-mode rows and whether it succeeded."""
        pool = self.pool
        first = _call(pool, "reset", task, where="reset")
        conversation = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        conversation.append({"role": "user", "content": first})
        episode = Episode(task=task, group=0, index=0, system_prompt=self.system_prompt, first_observation=first)
        step_rows, success, admissible = [], False, []
        for turn in range(1, self.max_turns + 1):
            action = _call(pool, "expert_action", where=f"expert_action before step {turn}")
            if action is None:
                break
            # noise: a random admissible action, from env.admissible_actions() when the environment has it, else
            # from the `admissible` list of the previous step's info (the contract's field); templates like
            # search[<your query>] are skipped
            if self.noise and self.has_admissible:
                admissible = _call(pool, "admissible_actions", where=f"admissible_actions before step {turn}")
            concrete = [a for a in admissible if "<" not in a]
            if self.noise and concrete and self.rng.random() < self.noise:  # in the expert's own answer format
                choice = self.rng.choice(concrete)
                action = f"<action>{choice}</action>" if "<action>" in action else choice
            prompt = step_messages(episode, self.history_length, self.history_observation)
            step_rows.append({"prompt": prompt, "completion": [{"role": "assistant", "content": action}]})
            result: StepResult = _call(pool, "step", action, where=f"step {turn}")
            conversation.append({"role": "assistant", "content": action})
            episode.turns.append(
                Turn(
                    prompt_ids=[],
                    completion_ids=[],
                    entropies=None,
                    logps=None,
                    response=action,
                    observation=result.observation,
                )
            )
            admissible = [a for a in result.info.get("admissible") or [] if isinstance(a, str)]
            if result.done:
                success = bool(result.info.get("success", False))
                break
            conversation.append({"role": "user", "content": result.observation})
        return conversation, step_rows, success

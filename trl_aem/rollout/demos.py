"""Expert demonstrations for cold starts: roll out ``env.expert_action()`` into an SFT dataset."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from datasets import Dataset

from ..envs.base import StepResult
from .episode import Episode, Turn
from .prompts import step_messages
from .settings import ROLLOUT_MODES

__all__ = ["collect_demonstrations"]


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
) -> Dataset:
    """Play ``tasks`` with the environment's expert and return a ``datasets.Dataset`` that TRL's ``SFTTrainer``
    trains on directly.

    ``rollout_mode="trajectory"``: one conversation per episode (system, observation, action, ...) in a ``messages``
    column. ``"step"``: one example per turn, conversational prompt-completion (``prompt``: the step-mode prompt the
    RL trainer uses, so SFT and RL see the same inputs; ``completion``: the action), so SFTTrainer's loss covers the
    action only (its ``completion_only_loss``), not the prompt. With ``noise > 0`` the expert is replaced by a random admissible action with that
    probability (recovery behaviour in the data); ``successful_only`` keeps only episodes that succeeded.
    """
    if rollout_mode not in ROLLOUT_MODES:
        raise ValueError(f"rollout_mode must be one of {ROLLOUT_MODES}, got {rollout_mode!r}")
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise must be in [0, 1], got {noise}")
    rng = random.Random(seed)
    env = env_factory()
    if not callable(getattr(env, "expert_action", None)):
        raise TypeError(f"{type(env).__name__} has no expert_action(); demonstrations need one")
    system_prompt = getattr(env, "system_prompt", None)
    rows: list[dict] = []
    for task in tasks:
        first = env.reset(task)
        conversation = [{"role": "system", "content": system_prompt}] if system_prompt else []
        conversation.append({"role": "user", "content": first})
        episode = Episode(task=task, group=0, index=0, system_prompt=system_prompt, first_observation=first)
        step_rows, success, admissible = [], False, []
        for _ in range(max_turns):
            action = env.expert_action()
            if action is None:
                break
            # noise: a random admissible action, from env.admissible_actions() when the environment has it, else
            # from the `admissible` list of the previous step's info (the contract's field); templates like
            # search[<your query>] are skipped
            if callable(getattr(env, "admissible_actions", None)):
                admissible = list(env.admissible_actions())
            concrete = [a for a in admissible if "<" not in a]
            if noise and concrete and rng.random() < noise:  # in the expert's own answer format
                choice = rng.choice(concrete)
                action = f"<action>{choice}</action>" if "<action>" in action else choice
            prompt = step_messages(episode, history_length, getattr(env, "history_observation", None))
            step_rows.append({"prompt": prompt, "completion": [{"role": "assistant", "content": action}]})
            result: StepResult = env.step(action)
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
            admissible = list(result.info.get("admissible") or [])
            if result.done:
                success = bool(result.info.get("success", False))
                break
            conversation.append({"role": "user", "content": result.observation})
        if successful_only and not success:
            continue
        if rollout_mode == "trajectory":
            while conversation[-1]["role"] != "assistant":
                conversation.pop()
            rows.append({"messages": conversation})
        else:
            rows.extend(step_rows)
    close = getattr(env, "close", None)
    if callable(close):
        close()
    if not rows:
        raise ValueError(
            f"no demonstration was collected: none of the {len(tasks)} tasks succeeded within {max_turns} turns; "
            "check the tasks, raise max_turns or lower noise"
        )
    return Dataset.from_list(rows)

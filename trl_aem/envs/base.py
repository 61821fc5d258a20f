"""The environment contract: ``TextEnv`` (a Protocol) and ``StepResult``, plus shared action parsing.

An environment is untrusted code: the trainer runs it in worker threads or processes
(:mod:`trl_aem.envs.pool`) and survives it raising, hanging or crashing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = ["ACTION_FORMAT", "EnvContractError", "StepResult", "TextEnv", "extract_action"]

ACTION_FORMAT = (
    "Think briefly, then give exactly one action inside <action></action> tags, for example "
    "<action>go to desk 1</action>."
)


class EnvContractError(TypeError):
    """An environment broke the :class:`TextEnv` contract (``reset`` did not return a ``str``, ``step`` did not
    return a :class:`StepResult` or a gym-like 4-tuple): a bug of the environment, which every episode would hit, so
    training, evaluation and demonstrations stop at once with this message instead of ending every episode as an
    error."""


@dataclass
class StepResult:
    """What one ``env.step(action)`` returns.

    Attributes:
        observation: text shown to the agent next.
        reward: reward of this step (the episode return is the sum, minus penalties for invalid actions).
        done: the episode is over.
        info: free-form; the trainer reads ``success`` (bool), ``invalid`` (bool: the action could not be
            parsed or executed) and ``admissible`` (list of valid actions), when present.
    """

    observation: str
    reward: float = 0.0
    done: bool = False
    info: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class TextEnv(Protocol):
    """A text environment, one instance per concurrently running episode.

    Required: ``reset(task) -> str`` (the first observation, including the goal) and
    ``step(action) -> StepResult`` where ``action`` is the model's raw response text.

    The contract is checked, identically, wherever an environment is played (training, ``evaluate()``, ``trl-aem
    eval`` and the expert demonstrations of a warm start; :func:`trl_aem.envs.pool.call_env`): a ``step`` may also
    return a gym-like 4-tuple ``(observation, reward, done, info)``, read as a :class:`StepResult`; ``reward`` is
    converted to ``float``, ``done`` to ``bool`` and an ``info`` of ``None`` to ``{}``. Anything else of the wrong
    type (a non-``str`` observation, gymnasium's 5-tuple: wrap such an environment with
    :class:`trl_aem.envs.gym_text.GymTextEnv`, a ``reward`` that is not a number, an ``info`` that is not
    a dict, an ``expert_action()`` that is neither ``str`` nor ``None``) raises :class:`EnvContractError` and stops
    the run at once. An environment that *raises* (or hangs past ``env_step_timeout``) only ends its episode; when
    every episode fails, :class:`trl_aem.envs.pool.EnvFailedError` says so in one line.

    Optional attributes
    the trainer uses when present: ``system_prompt: str``, ``tasks(split) -> list[dict]``,
    ``expert_action() -> str | None``, ``close()``, ``history_observation(observation) -> str`` (a pure
    function: how an observation reads in a step-mode prompt once it is history; ALFWorld and WebShop drop
    the admissible-action list there, as verl-agent does) and ``state_key(observation) -> Hashable`` (a pure
    function: GiGPO's anchor state; two observations with equal keys are the same environment state. Default:
    the text with whitespace collapsed, see :func:`trl_aem.gigpo.default_state_key`).
    """

    def reset(self, task: dict) -> str: ...

    def step(self, action: str) -> StepResult: ...


_ACTION_TAG = {}


def extract_action(response: str, tag: str = "action") -> str | None:
    """The text inside the *last* ``<tag>...</tag>`` of a response, stripped; ``None`` when there is none
    or it is empty (the caller flags such a response as an invalid action)."""
    pattern = _ACTION_TAG.get(tag)
    if pattern is None:
        pattern = _ACTION_TAG[tag] = re.compile(rf"<{tag}>(.*?)</{tag}>", re.DOTALL | re.IGNORECASE)
    matches = pattern.findall(response)
    if not matches:
        return None
    action = " ".join(matches[-1].split())
    return action or None

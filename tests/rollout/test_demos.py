"""Expert demonstrations: the environment contract is the trainer's (coercion of a gym-like 4-tuple, one-line contract
errors), faulted episodes are left out, and an environment that fails every episode is one clear error."""

from __future__ import annotations

import pytest

from trl_aem.envs import EnvContractError
from trl_aem.envs.keyword import KeywordEnv
from trl_aem.envs.pool import EnvFailedError
from trl_aem.rollout import collect_demonstrations

from ..fake_envs import make_faulty_tasks

TASKS = [{"words": ["apple", "mug"]}, {"words": ["lamp"]}, {"words": ["desk", "key", "book"]}]


class TupleStep(KeywordEnv):
    """A gym-like ``step``: ``(observation, reward, done, info)``."""

    def step(self, action):
        result = super().step(action)
        return result.observation, result.reward, result.done, result.info


class RaisingReset(KeywordEnv):
    def reset(self, task):
        if task.get("broken", True):
            raise ValueError("no such room")
        return super().reset(task)


@pytest.mark.parametrize("rollout_mode", ["trajectory", "step"])
def test_a_gym_like_step_tuple_is_read_as_in_training(rollout_mode):
    expected = collect_demonstrations(KeywordEnv, TASKS, rollout_mode=rollout_mode)
    assert collect_demonstrations(TupleStep, TASKS, rollout_mode=rollout_mode).to_list() == expected.to_list()
    assert len(expected) == (3 if rollout_mode == "trajectory" else 6)


class _Returns(KeywordEnv):
    """An environment whose ``method`` returns ``value``."""

    method, value = "", None

    def reset(self, task):
        observation = super().reset(task)
        return self.value if self.method == "reset" else observation

    def step(self, action):
        result = super().step(action)
        return self.value if self.method == "step" else result

    def expert_action(self):
        action = super().expert_action()
        return self.value if self.method == "expert_action" else action


@pytest.mark.parametrize(
    "method, value, message",
    [
        ("reset", ["a list"], "env.reset must return the first observation as str, got list"),
        (
            "step",
            {"observation": "x"},
            "env.step must return trl_aem.envs.StepResult(observation, reward, done, info)",
        ),
        ("step", ("obs", 1.0, False, False, {}), "env.step returned a 5-tuple, gymnasium's"),
        ("step", ("obs", 1.0, True, "info"), "StepResult.info must be a dict, got str"),
        ("expert_action", 3, "env.expert_action must return the action as str (or None: no move), got int"),
    ],
)
def test_a_wrong_return_type_is_a_one_line_contract_error(method, value, message):
    env = type("Broken", (_Returns,), {"method": method, "value": value})
    with pytest.raises(EnvContractError) as raised:
        collect_demonstrations(env, TASKS)
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)


def test_faulted_episodes_are_left_out_and_the_others_kept():
    tasks = make_faulty_tasks("raise", fault_turn=1, count=4, faulty=2)  # task 2's second step raises
    with pytest.warns(RuntimeWarning, match=r"1 of 4 expert demonstration episodes .* task 2: step 2: RuntimeError"):
        demos = collect_demonstrations(KeywordEnv, tasks)
    assert len(demos) == 3


def test_a_hanging_step_times_out_and_only_its_episode_is_lost():
    tasks = make_faulty_tasks("hang", count=3, faulty=1)
    # a healthy step answers in microseconds; 2 s leaves room for a busy machine (the hanging one sleeps an hour)
    with pytest.warns(RuntimeWarning, match=r"task 1: step 1: no answer within 2 s"):
        demos = collect_demonstrations(KeywordEnv, tasks, timeout=2.0)
    assert len(demos) == 2


def test_an_environment_that_fails_every_episode_is_one_clear_error():
    with pytest.raises(EnvFailedError) as raised:
        collect_demonstrations(RaisingReset, TASKS)
    text = str(raised.value)
    assert "every expert demonstration episode (3) ended in an environment error" in text
    assert text.endswith("the first: task 0: reset: ValueError: no such room") and "\n" not in text
    # one broken task among working ones: left out, as in training
    with pytest.warns(RuntimeWarning, match="1 of 2"):
        demos = collect_demonstrations(RaisingReset, [{"words": ["cup"], "broken": False}, {"words": ["cup"]}])
    assert len(demos) == 1


def test_an_environment_that_cannot_be_created_or_has_no_expert():
    def factory():
        raise OSError("the dataset is not downloaded")

    with pytest.raises(EnvFailedError, match="could not be created for the demonstrations: OSError: the dataset"):
        collect_demonstrations(factory, TASKS)

    class NoExpert(KeywordEnv):
        expert_action = None

    with pytest.raises(TypeError, match="NoExpert has no expert_action"):
        collect_demonstrations(NoExpert, TASKS)
    with pytest.raises(ValueError, match="timeout must be > 0"):
        collect_demonstrations(KeywordEnv, TASKS, timeout=0)

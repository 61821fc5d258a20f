"""GymTextEnv / gymnasium_env against the real gymnasium package: a text ``gymnasium.Env`` played through trl_aem's
engine, trained two steps with the tiny model, a step that raises, truncation, the contract errors."""

from __future__ import annotations

import pickle

import pytest

gymnasium = pytest.importorskip("gymnasium")

from gymnasium import spaces  # noqa: E402
from gymnasium.wrappers import TimeLimit  # noqa: E402

from trl_aem.envs import EnvContractError, extract_action  # noqa: E402
from trl_aem.envs.gym_text import GymEnvFactory, GymTextEnv, gymnasium_env  # noqa: E402
from trl_aem.envs.pool import EnvCall, EnvPool  # noqa: E402
from trl_aem.rollout import collect_demonstrations  # noqa: E402

from ..rollout.conftest import Recording, logged  # noqa: E402


class GuessNumberEnv(gymnasium.Env):
    """Guess a number in 1..9 from "higher"/"lower" hints; reward 1 on the right guess, ``9999`` ends the game with
    reward 0 (a loss), a guess that is no number is flagged ``info["invalid"]``. A task with ``options["boom"]``
    raises at its first step (an environment fault)."""

    observation_space = spaces.Text(max_length=200)
    action_space = spaces.Text(max_length=50)

    def __init__(self):
        self.secret, self.boom = 5, False

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        options = options or {}
        self.secret = int(self.np_random.integers(1, 10)) if options.get("secret") is None else options["secret"]
        self.boom = bool(options.get("boom"))
        return "Guess my number between 1 and 9.", {"secret": self.secret}

    def step(self, action):
        if self.boom:
            raise RuntimeError("the game broke")
        try:
            guess = int(action)
        except ValueError:
            return "Say a number.", 0.0, False, False, {"invalid": True}
        if guess == 9999:
            return "You gave up.", 0.0, True, False, {}
        if guess == self.secret:
            return "Right!", 1.0, True, False, {"guesses": 1}
        return ("Higher." if guess < self.secret else "Lower."), 0.0, False, False, {}


class ArrayObservationEnv(GuessNumberEnv):
    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed, options=options)
        return [1, 2, 3], {}


def parse_number(response: str) -> int | None:
    """``<action>N</action>`` (or a bare ``N``) -> ``N``; anything else is invalid (``ValueError``)."""
    return int(extract_action(response) or response.strip())


def action_text(response: str) -> str:
    """The tagged action, else the whole response: the env itself flags what is no number."""
    return extract_action(response) or response


def limited_guess() -> gymnasium.Env:
    return TimeLimit(GuessNumberEnv(), max_episode_steps=2)


# ---------------------------------------------------------------------------------------------- the wrapper alone
def test_maps_reset_step_success_and_invalid_actions():
    env = GymTextEnv(GuessNumberEnv(), parse_action=parse_number)
    assert env.reset({"seed": 3, "options": {"secret": 4}}) == "Guess my number between 1 and 9."
    invalid = env.step("no number here")
    assert invalid.info == {"invalid": True} and invalid.reward == 0.0 and not invalid.done
    assert invalid.observation == "Guess my number between 1 and 9."
    hint = env.step("<action>2</action>")
    assert (hint.observation, hint.reward, hint.done) == ("Higher.", 0.0, False)
    win = env.step("<action>4</action>")
    assert win.done and win.reward == 1.0
    assert win.info == {"guesses": 1, "terminated": True, "truncated": False, "success": True}
    env.reset({"seed": 3, "options": {"secret": 4}})
    lost = env.step("9999")
    assert lost.done and lost.info["success"] is False
    # the seed drives the env's own RNG: the same seed, the same secret
    secrets = set()
    for _ in range(2):
        env.reset({"seed": 11})
        secrets.add(env.env.secret)
    assert len(secrets) == 1


def test_truncation_ends_the_episode_and_is_recorded():
    env = gymnasium_env(limited_guess, parse_action=parse_number)()
    env.reset({"seed": 0, "options": {"secret": 9}})
    assert not env.step("1").done
    cut = env.step("1")
    assert cut.done and cut.info["truncated"] and not cut.info["terminated"] and cut.info["success"] is False


def test_success_from_info_wins_over_the_rule_and_the_rule_is_configurable():
    class SaysSuccess(GuessNumberEnv):
        def step(self, action):
            observation, reward, terminated, truncated, info = super().step(action)
            return observation, reward, terminated, truncated, {**info, "success": False}

    env = GymTextEnv(SaysSuccess(), parse_action=parse_number)
    env.reset({"options": {"secret": 1}})
    assert env.step("1").info["success"] is False
    env = GymTextEnv(GuessNumberEnv(), parse_action=parse_number, success_rule=lambda ret, term, trunc, info: True)
    env.reset({"options": {"secret": 1}})
    assert env.step("9999").info["success"] is True


def test_tasks_from_a_list_or_a_seed_range():
    seeded = GymTextEnv(GuessNumberEnv(), seeds={"train": range(3)})
    assert seeded.tasks("train") == [{"seed": 0}, {"seed": 1}, {"seed": 2}]
    with pytest.raises(KeyError, match="no 'eval' split"):
        seeded.tasks("eval")
    listed = GymTextEnv(GuessNumberEnv(), tasks={"train": [{"seed": 1, "options": {"secret": 2}}]})
    assert listed.tasks("train") == [{"seed": 1, "options": {"secret": 2}}]
    default = GymTextEnv(GuessNumberEnv())
    assert len(default.tasks("train")) == 64 and not {t["seed"] for t in default.tasks("train")} & {
        t["seed"] for t in default.tasks("eval")
    }


def test_a_non_string_observation_names_render_observation():
    with pytest.raises(EnvContractError, match="render_observation="):
        GymTextEnv(ArrayObservationEnv()).reset({})
    rendered = GymTextEnv(ArrayObservationEnv(), render_observation=lambda obs: " ".join(map(str, obs)))
    assert rendered.reset({}) == "1 2 3"


def test_factory_is_picklable_named_and_checks_its_options():
    factory = gymnasium_env(GuessNumberEnv, parse_action=parse_number)
    again = pickle.loads(pickle.dumps(factory))
    assert isinstance(again, GymEnvFactory) and isinstance(again(), GymTextEnv)
    assert factory.env_name == "guessnumber" and gymnasium_env("Foo/Bar-v0").env_name == "bar-v0"
    with pytest.raises(TypeError):
        gymnasium_env(GuessNumberEnv, parse_acton=parse_number)


def reveal(env) -> str:
    """A scripted expert: reads the secret off the (unwrapped) environment."""
    return f"<action>{env.unwrapped.secret}</action>"


def test_an_expert_is_exposed_only_when_given():
    assert not hasattr(GymTextEnv(GuessNumberEnv()), "expert_action")
    env = gymnasium_env(limited_guess, parse_action=parse_number, expert=reveal)()
    env.reset({"options": {"secret": 7}})
    assert env.expert_action() == "<action>7</action>" and env.step(env.expert_action()).info["success"]
    factory = gymnasium_env(limited_guess, parse_action=parse_number, expert=reveal)
    demos = collect_demonstrations(factory, factory().tasks("eval")[:4], max_turns=3)
    assert len(demos) == 4  # one successful expert episode per task


def test_close_passes_through():
    closed = []

    class Closing(GuessNumberEnv):
        def close(self):
            closed.append(True)

    GymTextEnv(Closing()).close()
    assert closed == [True]


# ---------------------------------------------------------------------------------------------- in the engine
class FiveTuple(GuessNumberEnv):
    """Un-wrapped: the engine's contract check must refuse it and name the wrapper."""

    def reset(self, task):
        return "Guess."


def test_the_unwrapped_contract_error_names_the_wrapper():
    pool = EnvPool(FiveTuple, timeout=5.0)
    try:
        pool.run([EnvCall(0, "reset", {})])
        (outcome,) = pool.run([EnvCall(0, "step", "3")])
    finally:
        pool.close()
    assert outcome.status == "contract"
    assert "5-tuple" in outcome.error and "trl_aem.envs.gym_text.GymTextEnv" in outcome.error
    assert "gymnasium_env(" in outcome.error


def test_plays_in_a_process_worker():
    pool = EnvPool(gymnasium_env(GuessNumberEnv, parse_action=parse_number), worker_type="process", timeout=60.0)
    try:
        (reset,) = pool.run([EnvCall(0, "reset", {"seed": 0, "options": {"secret": 3}})])
        (step,) = pool.run([EnvCall(0, "step", "<action>3</action>")])
    finally:
        pool.close()
    assert reset.ok and reset.value.startswith("Guess my number"), reset.error
    assert step.ok and step.value.done and step.value.info["success"], step.error


@pytest.mark.parametrize("mode", ["trajectory", "step"])
def test_trains_two_steps_and_a_raising_step_ends_only_its_episode(make_model, tokenizer, env_config, mode):
    """The random tiny model's responses are no numbers (invalid, flagged by the env); the task whose step raises
    ends its episodes in an error, the other task's episodes go on, and the run trains its 2 steps."""
    tasks = {"train": [{"seed": 0}, {"seed": 1, "options": {"boom": True}}]}
    factory = gymnasium_env(limited_guess, parse_action=action_text, tasks=tasks)
    config = env_config(rollout_mode=mode, max_turns=3, max_steps=2)
    trainer = Recording(make_model(), factory, config, processing_class=tokenizer)
    trainer.train()
    assert trainer.state.global_step == 2
    assert sum(logged(trainer, "env/errors")) >= 1
    assert max(logged(trainer, "env/invalid_rate")) > 0
    episodes = [e for batch in trainer.episodes for e in batch]
    faulted = [e for e in episodes if e.faulted]
    assert faulted and all("the game broke" in e.error and e.task["options"]["boom"] for e in faulted)
    finished = [e for e in episodes if not e.faulted]
    assert finished and all(e.ending in ("done", "max_turns", "truncated") for e in finished)
    # TimeLimit(2) cuts the game before max_turns=3: gymnasium's truncation ends the episode
    assert any(e.turns[-1].info.get("truncated") for e in finished)


# ---------------------------------------------------------------------------------------------- from the CLI
CLI_GYM_ENVS = '''
import gymnasium

from trl_aem.envs import extract_action
from trl_aem.envs.gym_text import gymnasium_env


class Echo(gymnasium.Env):
    """Say the word of the seed's parity; one turn."""

    def reset(self, *, seed=None, options=None):
        self.word = "even" if (seed or 0) % 2 == 0 else "odd"
        return f"Say {self.word}.", {}

    def step(self, action):
        right = action == self.word
        return "Done.", float(right), True, False, {}


GUESS = gymnasium_env(Echo, parse_action=extract_action, seeds={"train": range(8), "eval": range(100, 102)})
'''


def test_trains_and_evaluates_from_the_cli(tmp_path, monkeypatch, capsys):
    """`trl-aem train --env module:attr` with a gymnasium_env factory, then `trl-aem eval` finding it again."""
    import json
    import os
    import sys

    from trl_aem.cli import main

    from ..test_cli import TINY_RUN

    (tmp_path / "cli_gym_envs.py").write_text(CLI_GYM_ENVS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p and os.path.abspath(p) != str(tmp_path)])
    monkeypatch.delitem(sys.modules, "cli_gym_envs", raising=False)
    main(["train", "--env", "cli_gym_envs:GUESS", "--output_dir", "out", "--max_steps", "1", *TINY_RUN])
    out = capsys.readouterr().out
    assert "held-out evaluation before RL (4 episodes of the eval tasks)" in out and "held-out success rate" in out
    # the card and aem_env.json name the factory by where it lives, so `trl-aem eval` finds it without --env
    settings = json.loads((tmp_path / "out" / "aem_env.json").read_text())
    assert settings["env"] == "echo" and settings["env_spec"] == "cli_gym_envs:GUESS"
    main(["eval", "--model", "out", "--episodes", "2", "--split", "train"])
    assert "echo" in capsys.readouterr().out.lower()

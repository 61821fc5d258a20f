"""AlfWorldEnv: offline generated games and real-format game files, through TextWorld's PDDL engine."""

import random
from pathlib import Path

import pytest

from trl_aem.envs import ENVIRONMENTS, AlfWorldEnv, get_env
from trl_aem.envs.alfworld import real_tasks
from trl_aem.envs.alfworld.generator import TASK_TYPES

DATA = Path(__file__).parents[2] / "fixtures" / "alfworld_data"


def play_expert(env: AlfWorldEnv, task: dict, max_turns: int = 50) -> tuple[bool, int, list]:
    """Play ``task`` with the expert: (success, turns, invalid flags)."""
    env.reset(task)
    invalid, result = [], None
    for turn in range(1, max_turns + 1):
        action = env.expert_action()
        assert action is not None, f"expert gave up on {task['task_id']} at turn {turn}"
        result = env.step(action)
        invalid.append(result.info["invalid"])
        if result.done:
            return result.info["success"], turn, invalid
    return False, max_turns, invalid


def test_expert_solves_every_sampled_offline_task():
    """Two tasks of every type from train, one of every type from the unseen rooms, at ALFRED's density."""
    env = AlfWorldEnv(num_train_tasks=12, num_eval_tasks=6, task_seed=7)
    tasks = env.tasks("train") + env.tasks("eval")
    assert sorted({t["task_type"] for t in tasks}) == sorted(TASK_TYPES)
    for task in tasks:
        success, turns, invalid = play_expert(env, task)
        assert success and not any(invalid), task["task_id"]
        assert turns <= 20
    env.close()


def test_observations_have_alfworld_form():
    env = AlfWorldEnv(num_train_tasks=1)
    task = env.tasks("train")[0]
    first = env.reset(task)
    assert first.startswith("-= Welcome to TextWorld, ALFRED! =-")
    assert "Looking quickly around you, you see a " in first
    assert f"Your task is to: {task['goal']}." in first
    assert "Your admissible actions of the current situation are: ['go to " in first
    assert "'help'" not in first
    admissible = env.step("<action>look</action>").info["admissible"]
    target = next(a for a in admissible if a.startswith("go to "))
    result = env.step(f"<think>explore</think><action>{target}</action>")
    assert result.observation.startswith(f"You arrive at {target[len('go to ') :]}.")
    assert not result.info["invalid"] and not result.done and result.reward == 0.0


def test_garbage_is_invalid_and_never_succeeds():
    env = AlfWorldEnv(num_train_tasks=3, max_object_classes=3)
    rng = random.Random(0)
    garbage = ["", "hello", "<action></action>", "<action>fly to the moon</action>", "go to countertop 1", "🙂" * 50]
    for task in env.tasks("train"):
        env.reset(task)
        for _ in range(15):
            result = env.step(rng.choice(garbage) + "".join(rng.choice("abc <>/[]") for _ in range(rng.randrange(30))))
            assert result.info["invalid"] and not result.done and not result.info["success"]
            assert result.observation.startswith("Nothing happens.") and result.reward == 0.0


def test_actions_are_normalised_like_alfworld_input():
    env = AlfWorldEnv(num_train_tasks=1, max_object_classes=3)
    env.reset(env.tasks("train")[0])
    target = next(a for a in env.step("<action>look</action>").info["admissible"] if a.startswith("go to"))
    result = env.step(f"<action>  {target.upper()}. </action>")
    assert not result.info["invalid"] and "You arrive at" in result.observation


def test_expert_recovers_from_detours_and_planner_expert():
    env = AlfWorldEnv(num_train_tasks=3, max_object_classes=4)
    rng = random.Random(1)
    for task in env.tasks("train"):
        env.reset(task)
        for _ in range(6):  # a random detour first (may pick up the wrong object)
            result = env.step(f"<action>{rng.choice(env.step('<action>look</action>').info['admissible'])}</action>")
            if result.done:
                break
        else:
            for _ in range(40):
                result = env.step(env.expert_action())
                if result.done:
                    break
        assert result.info["success"], task["task_id"]
    planner = AlfWorldEnv(num_train_tasks=1, max_object_classes=2, expert="planner")
    success, _, invalid = play_expert(planner, planner.tasks("train")[0])
    assert success and not any(invalid)


def test_real_data_layout_splits_and_filters():
    train = real_tasks(DATA, "train")
    names = [t["task_id"].split("/")[1] for t in train]
    # ALFWorld skips movable-receptacle and sliced tasks and unsolvable games
    assert len(train) == 4 and not any("movable" in n or "Sliced" in n or "-416" in n for n in names)
    assert [t["task_id"] for t in real_tasks(DATA, "eval_in_distribution")] == [
        "eval_in_distribution/pick_and_place_simple-SoapBar-None-GarbageCan-417/trial_T8"
    ]
    env = AlfWorldEnv(data_dir=DATA)
    assert len(env.tasks("eval")) == 1 and env.tasks("eval")[0]["task_type"] == "pick_two_obj_and_place"
    assert [
        t["task_type"] for t in AlfWorldEnv(data_dir=DATA, task_types=["look_at_obj_in_light"]).tasks("train")
    ] == ["look_at_obj_in_light"]
    with pytest.raises(FileNotFoundError, match="alfworld-download"):
        real_tasks(DATA / "missing", "train")


def test_real_games_play_through_the_engine_with_the_expert():
    env = AlfWorldEnv(data_dir=DATA)
    for task in env.tasks("train") + env.tasks("eval_in_distribution") + env.tasks("eval"):
        first = env.reset(task)
        assert "Your task is to: " in first
        success, _, invalid = play_expert(env, task)
        assert success and not any(invalid), task["task_id"]


def test_bad_arguments_fail_clearly():
    with pytest.raises(ValueError, match="task_types"):
        AlfWorldEnv(task_types=["make_coffee"])
    with pytest.raises(ValueError, match="expert"):
        AlfWorldEnv(expert="oracle")
    with pytest.raises(ValueError, match="max_object_classes"):
        AlfWorldEnv(max_object_classes=0)
    with pytest.raises(ValueError, match="split"):
        AlfWorldEnv().tasks("test")
    with pytest.raises(ValueError, match="needs"):
        AlfWorldEnv().reset({"task_id": "x"})
    with pytest.raises(RuntimeError, match="reset"):
        AlfWorldEnv().step("<action>look</action>")
    assert ENVIRONMENTS["alfworld"] and get_env("alfworld") is AlfWorldEnv


def test_demonstrations_for_sft_in_both_modes():
    from trl_aem.rollout import collect_demonstrations

    env = AlfWorldEnv(num_train_tasks=2, max_object_classes=3)
    tasks = env.tasks("train")
    trajectories = collect_demonstrations(lambda: AlfWorldEnv(max_object_classes=3), tasks)
    steps = collect_demonstrations(lambda: AlfWorldEnv(max_object_classes=3), tasks, rollout_mode="step")
    assert len(trajectories) == 2 and len(steps) == sum(
        sum(m["role"] == "assistant" for m in row["messages"]) for row in trajectories
    )
    first = trajectories[0]["messages"]
    assert first[0] == {"role": "system", "content": AlfWorldEnv.system_prompt}
    assert first[1]["content"].startswith("-= Welcome to TextWorld, ALFRED! =-")
    assert all(m["content"].startswith("<action>") for m in first if m["role"] == "assistant")
    # step prompts list the admissible actions of the current observation only (verl-agent's layout)
    assert all(row["prompt"][1]["content"].count("admissible actions") == 1 for row in steps)
    assert "Your last 2 step(s):" in steps[3]["prompt"][1]["content"]
    assert all(row["completion"][0]["content"].startswith("<action>") for row in steps)


def test_group_of_episodes_on_one_game_share_the_translation_not_the_state():
    """The G episodes of a GRPO group play one game: Fast Downward translates it once (cached), yet every
    episode has its own state; Fast Downward's overwrite of sys.argv does not leak out."""
    import sys

    argv = list(sys.argv)
    task = AlfWorldEnv(num_train_tasks=1, max_object_classes=3).tasks("train")[0]
    first, second = AlfWorldEnv(), AlfWorldEnv()
    first.reset(task)
    second.reset(task)
    assert sys.argv == argv
    target = next(a for a in first.admissible_actions() if a.startswith("go to "))
    assert "You arrive at" in first.step(f"<action>{target}</action>").observation
    assert first.step("<action>look</action>").observation.startswith("You are facing the")
    assert second.step("<action>look</action>").observation.startswith("You are in the middle of a room")
    success, _, invalid = play_expert(second, task)
    assert success and not any(invalid)


def test_concurrent_steps_in_threads_match_sequential_play():
    """Thread workers step several games at once: TextWorld re-parses its grammar with one module-level tatsu
    parser on every step, which is not thread-safe; the parse cache serialises parsing, so concurrent play
    gives exactly the observations of sequential play."""
    from concurrent.futures import ThreadPoolExecutor

    tasks = AlfWorldEnv(num_train_tasks=4, max_object_classes=3).tasks("train")

    def play(task: dict) -> list[str]:
        env, rng = AlfWorldEnv(), random.Random(task["seed"])
        observations = [env.reset(task)]
        for _ in range(25):
            action = rng.choice(sorted(env.admissible_actions()))
            observations.append(env.step(f"<action>{action}</action>").observation)
        return observations

    sequential = [play(task) for task in tasks]
    with ThreadPoolExecutor(4) as pool:
        concurrent = list(pool.map(play, tasks * 2))
    assert concurrent == sequential * 2

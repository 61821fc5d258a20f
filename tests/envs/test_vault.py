"""VaultEnv: a corridor where one early wrong door dooms the episode and only the end pays."""

from __future__ import annotations

import random
import re

import pytest

from trl_aem.envs import VaultEnv, get_env
from trl_aem.envs.vault import COLORS
from trl_aem.rollout import collect_demonstrations


def play(env: VaultEnv, task: dict, choose) -> list:
    results = []
    env.reset(task)
    for _ in range(40):
        results.append(env.step(choose(env)))
        if results[-1].done:
            break
    return results


def test_the_expert_reaches_every_vault_and_random_doors_almost_never():
    env = VaultEnv()
    tasks = env.tasks("eval")
    assert all(play(env, t, lambda e: e.expert_action())[-1].info["success"] for t in tasks)
    rng = random.Random(0)
    wins = sum(play(env, t, lambda e: rng.choice(e.admissible_actions()))[-1].reward for t in tasks * 4)
    assert wins <= 2  # (1/3) ** 6 per episode at best


def test_rewards_come_at_the_end_and_a_wrong_door_dooms_silently():
    env = VaultEnv()
    task = env.tasks("train")[3]
    good = play(env, task, lambda e: e.expert_action())
    assert len(good) == task["rooms"] and [r.reward for r in good] == [0.0] * (task["rooms"] - 1) + [1.0]
    assert all(not r.done for r in good[:-1])

    wrong_first = {"done": False}

    def wrong_then_expert(e):
        if not wrong_first["done"]:
            wrong_first["done"] = True
            right = e.expert_action()
            return next(c for c in e.admissible_actions() if c != right)
        return e.expert_action()

    doomed = play(env, task, wrong_then_expert)
    assert len(doomed) == task["rooms"] and doomed[-1].reward == 0.0 and not doomed[-1].info["success"]
    # the side wing looks like the corridor: same kind of rooms, doors and signs, no hint of the mistake
    pattern = re.compile(r"^You walk on\. Room \d+ of \d+\. Doors: 1 \w+, 2 \w+, 3 \w+\. Sign: .+\.$")
    assert all(pattern.match(r.observation) for r in doomed[:-1])


def test_rooms_depend_on_the_path_only():
    env, other = VaultEnv(), VaultEnv()
    task = env.tasks("train")[0]
    first = env.reset(task)
    assert other.reset(task) == first  # the G episodes of a task start in the same room
    action = env.expert_action()
    assert env.step(action).observation == other.step(action).observation  # same door, same next room
    right = env.expert_action()
    wrong = next(c for c in env.admissible_actions() if c != right)
    assert env.step(right).observation != other.step(wrong).observation


def test_answers_by_colour_or_number_and_invalid_ones_stay():
    env = VaultEnv()
    task = env.tasks("train")[1]
    env.reset(task)
    colors = env.admissible_actions()
    observation = env.reset(task)
    for bad in (
        "no tag",
        "<action>purple</action>",
        "<action>4</action>",
        f"<action>{colors[0]} {colors[1]}</action>",
    ):
        result = env.step(bad)
        assert result.info["invalid"] and not result.done
        assert result.observation == "Nothing happens. " + observation
    assert not env.step("<action>2</action>").info["invalid"]
    env.reset(task)
    assert not env.step(f"<action>the {colors[2]} door</action>").info["invalid"]
    env.reset(task)
    assert not env.step(f" {colors[1].upper()}.").info["invalid"]


def test_splits_are_disjoint_seeded_and_sized():
    env = VaultEnv()
    train, held_out = env.tasks("train"), env.tasks("eval")
    assert len(train) == 256 and len(held_out) == 32
    assert not {t["corridor"] for t in train} & {t["corridor"] for t in held_out}
    assert all(6 <= t["rooms"] <= 8 for t in train + held_out)
    assert VaultEnv().tasks("train") == train and VaultEnv(seed=1).tasks("train") != train
    assert get_env("vault") is VaultEnv
    with pytest.raises(ValueError, match="splits"):
        env.tasks("valid")
    with pytest.raises(ValueError, match="rooms"):
        VaultEnv(rooms=(5, 2))
    with pytest.raises(ValueError, match="corridor"):
        env.reset({"rooms": 3})


def test_noisy_demonstrations_keep_wrong_doors_and_history_hides_old_rooms():
    tasks = VaultEnv().tasks("train")[:20]
    clean = collect_demonstrations(VaultEnv, tasks, rollout_mode="step", history_length=2)
    noisy = collect_demonstrations(VaultEnv, tasks, rollout_mode="step", noise=0.5, successful_only=False, seed=0)
    assert len(clean) == sum(t["rooms"] for t in tasks)
    assert len(noisy) == len(clean)  # a wrong door still advances a room
    actions = [[c[0]["content"] for c in d["completion"]] for d in (clean, noisy)]
    assert sum(a != b for a, b in zip(*actions, strict=True)) >= 5  # random doors in the noisy ones
    assert set(actions[1]) <= set(COLORS)  # in the expert's format (one word), so noise teaches no other format
    later = [row[-1]["content"] for row in clean["prompt"] if "Current observation" in row[-1]["content"]]
    assert later and all("Doors:" not in text.split("Current observation")[0] for text in later)
    assert VaultEnv.history_observation("You walk on. Room 3 of 7. Doors: 1 red, 2 blue, 3 gray. Sign: x.") == (
        "You walk on. Room 3 of 7."
    )

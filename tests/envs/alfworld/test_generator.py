"""Offline ALFRED-style games: seeded, thousands of distinct ones, and splits that keep unseen rooms unseen."""

from trl_aem.envs.alfworld.generator import generate_game, offline_tasks, scenes_for_split


def test_same_seed_same_tasks_and_games():
    a = offline_tasks("train", 30, seed=3)
    b = offline_tasks("train", 30, seed=3)
    c = offline_tasks("train", 30, seed=4)
    assert a == b and a != c
    game = generate_game(a[0]["scene"], a[0]["task_type"], a[0]["seed"])
    assert game.game == generate_game(a[0]["scene"], a[0]["task_type"], a[0]["seed"]).game
    assert game.goal == a[0]["goal"]


def test_thousands_of_distinct_tasks_and_disjoint_splits():
    def digest(task):
        return generate_game(task["scene"], task["task_type"], task["seed"]).digest

    train = offline_tasks("train", 1000)
    assert len({digest(t) for t in train}) == 1000
    in_distribution = offline_tasks("eval_in_distribution", 100)
    unseen = offline_tasks("eval_out_of_distribution", 100)
    train_digests = {digest(t) for t in train}
    assert not train_digests & {digest(t) for t in in_distribution}
    assert not train_digests & {digest(t) for t in unseen}
    # unseen rooms are never trained on; the in-distribution split reuses the training rooms
    assert not {t["scene"] for t in train} & {t["scene"] for t in unseen}
    assert {t["scene"] for t in in_distribution} <= set(scenes_for_split("train"))
    assert len({(t["task_type"], t["targets"]["object_target"]) for t in train}) > 100

"""WebShopEnv (offline catalog): the expert solves every task, garbage never does, seeds, splits, training."""

import random

import pytest
from trl import SFTConfig, SFTTrainer

from trl_aem import AEMTrainer
from trl_aem.envs import WebShopEnv
from trl_aem.rollout import collect_demonstrations, tasks_dataset


def play(env, task, policy, max_turns=15):
    env.reset(task)
    for _ in range(max_turns):
        result = env.step(policy(env))
        if result.done:
            return result
    return result


def test_expert_solves_every_task():
    env = WebShopEnv()
    tasks = env.tasks("eval") + env.tasks("train")[:300]
    for task in tasks:
        result = play(env, task, lambda e: e.expert_action())
        assert result.done and result.info["success"] and result.info["score"] == 1.0
        assert result.reward == 1.0


def test_garbage_is_invalid_and_never_succeeds():
    env = WebShopEnv()
    rng = random.Random(0)
    words = ["buy", "click", "search", "<action>", "shoes", "[", "]", "now"]
    for task in env.tasks("eval")[:50]:
        env.reset(task)
        for _ in range(15):
            garbage = " ".join(rng.choice(words) for _ in range(6))
            result = env.step(garbage)
            assert result.info["invalid"] and not result.done and result.reward == 0.0
    env.reset(env.tasks("eval")[0])
    assert env.step("<action>click[buy now]</action>").info["invalid"]  # not clickable on the search page


def test_random_admissible_policy_rarely_scores():
    env, rng = WebShopEnv(), random.Random(0)

    def random_policy(e):
        action = rng.choice(e._admissible())
        return "<action>search[black shoes]</action>" if action.startswith("search") else f"<action>{action}</action>"

    results = [play(env, task, random_policy) for task in env.tasks("eval")[:100]]
    assert sum(r.info.get("success", False) for r in results) <= 5


def test_seeds_and_disjoint_splits():
    assert WebShopEnv(task_seed=3).tasks("train")[:20] == WebShopEnv(task_seed=3).tasks("train")[:20]
    assert WebShopEnv(task_seed=3).tasks("train")[:20] != WebShopEnv(task_seed=4).tasks("train")[:20]
    env = WebShopEnv()
    train = {t["asin"] for t in env.tasks("train")}
    evaluation = {t["asin"] for t in env.tasks("eval")}
    assert not train & evaluation
    assert len({t["instruction"] for t in env.tasks("train")}) > 1000  # thousands of distinct tasks
    with pytest.raises(ValueError, match="missing"):
        env.reset({"instruction": "buy something"})


def test_score_gives_partial_credit():
    env = WebShopEnv()
    task = env.tasks("eval")[0]
    env.reset(task)
    target = env.catalog.by_asin[task["asin"]]
    perfect = env.score(target, dict(task["options"]))
    no_options = env.score(target, {})
    wrong_kind = next(p for p in env.catalog.products if p.category != task["category"])
    assert perfect == 1.0 and 0 < no_options < 1 and env.score(wrong_kind, {}) <= 0.1
    success_env = WebShopEnv(reward="success", success_reward=10.0)
    assert play(success_env, task, lambda e: e.expert_action()).reward == 10.0


@pytest.mark.parametrize("mode", ["trajectory", "step"])
def test_demonstrations_feed_sft_trainer(tmp_path, make_model, tokenizer, mode):
    tasks = WebShopEnv().tasks("train")[:4]
    dataset = collect_demonstrations(WebShopEnv, tasks, rollout_mode=mode, noise=0.2, seed=0)
    assert len(dataset) >= 4
    last = [m[-1] for m in dataset["messages"]] if mode == "trajectory" else [c[0] for c in dataset["completion"]]
    assert all(m["role"] == "assistant" and "<action>" in m["content"] for m in last)
    config = SFTConfig(
        output_dir=str(tmp_path),
        max_steps=1,
        per_device_train_batch_size=2,
        report_to=[],
        use_cpu=True,
        bf16=False,
        max_length=512,
    )
    trainer = SFTTrainer(make_model(), args=config, train_dataset=dataset, processing_class=tokenizer)
    trainer.train()
    assert trainer.state.log_history[-1]["train_loss"] > 0


@pytest.mark.parametrize("mode", ["trajectory", "step"])
def test_trains_through_aem_trainer(make_model, tokenizer, make_config, mode):
    config = make_config(
        rollout_mode=mode,
        max_turns=3,
        max_turn_tokens=12,
        max_completion_length=1024,
        per_device_train_batch_size=4,
        num_generations=4,
        max_steps=1,
    )
    tasks = tasks_dataset(WebShopEnv().tasks("train")[:2])  # nested, per-category option keys
    trainer = AEMTrainer(make_model(), WebShopEnv, config, train_dataset=tasks, processing_class=tokenizer)
    trainer.train()
    log = trainer.state.log_history[0]
    assert log["env/turns"] >= 1 and log["env/invalid_rate"] == 1.0 and log["env/errors"] == 0


def test_demonstration_noise_takes_admissible_detours_and_still_succeeds():
    tasks = WebShopEnv().tasks("train")[:20]
    clean = collect_demonstrations(WebShopEnv, tasks, noise=0.0)
    noisy = collect_demonstrations(WebShopEnv, tasks, noise=0.3, seed=1)
    assert sum(map(len, noisy["messages"])) > sum(map(len, clean["messages"]))  # detours from admissible actions
    assert len(noisy) > 0  # successful_only keeps only episodes the expert still finished

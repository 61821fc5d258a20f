"""WebShop's real data files (a small fixture in their format): loading, the expert on real goals, training."""

from pathlib import Path

import pytest

from trl_aem import AEMTrainer
from trl_aem.envs import WebShopEnv

from .test_env import play

FIXTURE = str(Path(__file__).parents[2] / "fixtures" / "webshop_data")


def test_real_data_files_load_like_webshop():
    from trl_aem.envs.webshop.real import load_real_catalog

    catalog, _ = load_real_catalog(FIXTURE, small=True)
    assert len(catalog.products) == 12  # 'nan' and the duplicate ASIN dropped
    product = catalog.by_asin["B0FIX00001"]
    assert product.options["color"] == ["black", "white | red"]  # lower-cased, "/" written as " | "
    ranged = catalog.by_asin["B0FIX00000"]  # "$a.00 - $b.50": a price sampled inside the range
    assert 10.0 <= ranged.price <= 40.5
    with pytest.raises(FileNotFoundError, match="setup.sh"):
        load_real_catalog(FIXTURE, small=False)


@pytest.mark.parametrize("human_goals", [True, False])
def test_expert_solves_real_data_goals(human_goals):
    env = WebShopEnv(data_dir=FIXTURE, human_goals=human_goals)
    train, evaluation = env.tasks("train"), env.tasks("eval")

    def ids(tasks):
        return {(t["asin"], t["instruction"]) for t in tasks}

    assert train and evaluation and not ids(train) & ids(evaluation)
    if human_goals:
        assert len(train) + len(evaluation) == 12  # one goal per human instruction with attributes
    for task in train + evaluation:
        result = play(env, task, lambda e: e.expert_action())
        assert result.info["success"], (task, result.observation)
    assert "Instruction:" in env.reset(train[0]) and train[0]["instruction"] in env.reset(train[0])


def test_real_data_tasks_train_through_aem_trainer(make_model, tokenizer, make_config):
    import functools

    env = functools.partial(WebShopEnv, data_dir=FIXTURE)
    config = make_config(
        rollout_mode="step",
        max_turns=2,
        max_turn_tokens=8,
        per_device_train_batch_size=4,
        num_generations=4,
        max_steps=1,
    )
    trainer = AEMTrainer(make_model(), env, config, processing_class=tokenizer)
    trainer.train()
    assert trainer.state.log_history[0]["env/errors"] == 0

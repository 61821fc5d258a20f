"""The standard model card: a single-turn run's card (local base's license, dataset, no evaluation yet) and the
environment's factory recorded for ``trl-aem eval``."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import ModelCard

from trl_aem import AEMTrainer
from trl_aem.envs import get_env

from ..conftest import length_reward


def test_single_turn_card_with_local_base_license_and_dataset(model_path, make_config, prompt_dataset, tmp_path):
    Path(model_path, "README.md").write_text("---\nlicense: mit\n---\n# tiny base\n")
    config = make_config(max_steps=2, hub_model_id="tester/digits-aem")
    trainer = AEMTrainer(model_path, config=config, train_dataset=prompt_dataset, reward_funcs=length_reward)
    trainer.train()
    trainer.create_model_card(dataset_name="trl-lib/digits", tags=["math"])
    card = ModelCard.load(Path(config.output_dir, "README.md"))
    data = card.data.to_dict()
    assert data["license"] == "mit" and "base_model" not in data  # license of the local base; no local path
    assert data["datasets"] == ["trl-lib/digits"] and "math" in data["tags"] and "agent" not in data["tags"]
    assert "model-index" not in data  # no evaluation yet
    assert "None" not in card.content and "| Reward | Reward std |" in card.text and "trl-aem eval" not in card.text
    assert Path(config.output_dir, "training_curves.png").exists()


def test_environment_arguments_travel_to_the_evaluation():
    """A ``functools.partial`` factory's keyword arguments are recorded (``env_kwargs``) and rebuilt by the card's
    snippet; ``trl-aem eval`` applies them to the registered environment."""
    import functools

    from trl_aem.hub.card import env_info

    info = env_info(functools.partial(get_env("keyword"), delay=0.01))
    assert info["name"] == "keyword" and info["kwargs"] == {"delay": 0.01}
    namespace: dict = {}
    exec(f"{info['import_line']}\nfactory = {info['factory_expr']}", namespace)
    assert namespace["factory"]().delay == 0.01
    assert env_info(functools.partial(get_env("keyword"), delay=object()))["kwargs"] is None  # not JSON: not recorded

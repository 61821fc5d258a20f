"""The standard model card: a single-turn run's card (local base's license, dataset, no evaluation yet) and the
environment's factory recorded for ``trl-aem eval``."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import ModelCard

from trl_aem import AEMTrainer
from trl_aem.envs import get_env
from trl_aem.hub.card import CardInputs, card_context, render_card, write_model_card

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


def _run(tmp_path, tokenizer, env_factory, log_history=()) -> CardInputs:
    from trl_aem import AEMConfig
    from trl_aem.tiny import build_model

    return CardInputs(
        args=AEMConfig(output_dir=str(tmp_path / "run"), use_cpu=True, rollout_mode="step", max_turn_tokens=8),
        log_history=list(log_history),
        global_step=4,
        max_steps=4,
        model=build_model(tokenizer),
        env_factory=env_factory,
        hub_model_id=None,
        elapsed_seconds=None,
        hardware="1 x CPU",
        example_prompt="Say the word None.",  # an environment's text may say None
        system_prompt=None,
        citation="@misc{aem}",
    )


def test_a_legitimate_none_is_content_and_an_unrendered_field_is_reported(tmp_path, tokenizer, caplog):
    """The card's check for unrendered fields looks at the template's fields, not at the text: a snippet's
    ``dataset=None`` argument (the SWE example's environment) or an observation saying None is no bug report, a field
    the template prints as None is."""
    import functools
    import logging

    run = _run(tmp_path, tokenizer, functools.partial(get_env("keyword"), delay=None))
    with caplog.at_level(logging.WARNING, logger="trl_aem.hub.card"):
        card = write_model_card(run, tmp_path / "card")
    assert 'partial(get_env("keyword"), delay=None)' in card.text and "Say the word None." in card.text
    assert not [r for r in caplog.records if "rendered as 'None'" in r.getMessage()]
    context = card_context(run)
    context["rollout"] = {**context["rollout"], "max_turn_tokens": None}  # a value the card lacks
    with caplog.at_level(logging.WARNING, logger="trl_aem.hub.card"):
        card = render_card(context)
    (warning,) = [r.getMessage() for r in caplog.records if "rendered as 'None'" in r.getMessage()]
    assert "1 field(s)" in warning and "max_new_tokens=" in warning and "please report" in warning
    assert "max_new_tokens=None" in card.text and "\x00" not in card.text


def test_held_out_results_before_and_after_rl(tmp_path, tokenizer):
    """An evaluation at step 0 (before RL; `trl-aem train --env` and the quickstart) and one after: both rows in the
    results table, the one after RL in the model-index."""
    history = [
        {"eval_env/success_rate": 0.25, "eval_env/return": 0.5, "eval_env/turns": 3.0, "step": 0},
        {"env/success_rate": 0.5, "env/return": 1.0, "env/turns": 2.5, "env/invalid_rate": 0.1, "step": 4},
        {"eval_env/success_rate": 0.75, "eval_env/return": 1.5, "eval_env/turns": 2.0, "step": 4},
    ]
    card = render_card(card_context(_run(tmp_path, tokenizer, get_env("keyword"), history)))
    assert "| eval, before RL | 0.250 | 0.500 | 3.00 | - |" in card.text
    assert "| eval, after RL | 0.750 | 1.500 | 2.00 | - |" in card.text
    assert "eval, before RL: the same evaluation at step 0" in card.text
    values = {(r.dataset_split, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert values[("eval", "success_rate")] == 0.75 and len(card.data.eval_results) == 3
    # a single evaluation keeps its plain label
    card = render_card(card_context(_run(tmp_path, tokenizer, get_env("keyword"), history[1:])))
    assert "| eval | 0.750 |" in card.text and "before RL" not in card.text

"""Evaluation results in a model card: merged into a local folder's README.md (``trl-aem eval --write-results``) as
into a Hub repository's card, and ``trl-aem eval`` telling a model that is not there from a missing ``--env``."""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from trl_aem.cli import main
from trl_aem.hub.card import EVAL_MARKERS
from trl_aem.hub.results import write_eval_results

METRICS = {"success_rate": 0.5, "return": 1.25, "turns": 2.0, "invalid_rate": 0.125}


def _values(card: ModelCard) -> dict:
    return {(r.dataset_type, r.dataset_split, r.metric_type): r.metric_value for r in card.data.eval_results}


def test_results_written_into_a_local_card(tmp_path):
    folder = tmp_path / "my-agent"
    folder.mkdir()
    card = write_eval_results(folder, METRICS, env_name="keyword", split="eval", episodes=8)  # no card yet: a new one
    assert card.data.model_name == "my-agent" and (folder / "README.md").exists()
    assert _values(ModelCard.load(folder / "README.md"))[("keyword", "eval", "success_rate")] == 0.5
    # again: the same environment and split are replaced, another split is added, the rest of the card is kept
    (folder / "README.md").write_text(
        (folder / "README.md").read_text().replace("# my-agent", "# my-agent\n\nHand-written notes.")
    )
    write_eval_results(folder, {**METRICS, "success_rate": 0.75}, env_name="keyword", split="eval", episodes=16)
    card = write_eval_results(folder, METRICS, env_name="keyword", split="train", episodes=4)
    values = _values(card)
    assert values[("keyword", "eval", "success_rate")] == 0.75 and values[("keyword", "train", "success_rate")] == 0.5
    assert len(values) == 6 and "Hand-written notes." in card.text
    assert card.text.count(EVAL_MARKERS[0]) == 1 and "| `keyword` | eval | 16 | 0.750 |" in card.text
    assert "| `keyword` | eval | 8 |" not in card.text and "| `keyword` | train | 4 | 0.500 |" in card.text


def test_eval_writes_results_into_a_local_models_card(model_path, capsys):
    """`trl-aem eval --model LOCAL_FOLDER --write-results` merges into the folder's card (the base model's card here:
    its license and text stay); `--push-results` on a local folder says to use --write-results."""
    readme = Path(model_path, "README.md")
    readme.write_text("---\nlicense: mit\n---\n# tiny base\n\nNotes.\n")
    args = ["eval", "--model", model_path, "--env", "keyword", "--episodes", "2", "--max-turns", "1"]
    main([*args, "--max-turn-tokens", "4", "--write-results"])
    assert f"results written into the model card {readme}" in capsys.readouterr().out
    card = ModelCard.load(readme)
    assert card.data.license == "mit" and "Notes." in card.text and "| `keyword` | eval | 2 |" in card.text
    assert ("keyword", "eval", "success_rate") in _values(card)
    with pytest.raises(SystemExit, match="not the local folder .*; --write-results writes the results into its"):
        main([*args, "--push-results"])


def test_eval_of_a_model_the_hub_does_not_have_blames_the_model(hub, model_path):
    """No `--env` and a model that does not exist: the error is about the model (the Hub answered 404), not --env."""
    with pytest.raises(SystemExit) as raised:
        main(["eval", "--model", "tester/does-not-exist"])
    text = str(raised.value)
    assert text.startswith("trl-aem: error: model not found:") and "has no model repository" in text
    assert "--env" not in text and "\n" not in text
    with pytest.raises(SystemExit, match="adapter not found: .*has no model repository"):
        main(["eval", "--model", model_path, "--adapter", "tester/no-adapter-either"])

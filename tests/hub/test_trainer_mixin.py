"""HubMixin against a real loopback Hub server: checkpoints and cards pushed while training, resume from the Hub,
evaluation results merged into the card and kept by later pushes, outages, rotation, PEFT adapters and merged models."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard, snapshot_download
from huggingface_hub.repocard_data import model_index_to_eval_results
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from trl_aem import AEMConfig, AEMTrainer
from trl_aem.cli import main
from trl_aem.envs import get_env
from trl_aem.hub import download_checkpoint
from trl_aem.rollout import RolloutSettings

from ..hub_server import HubServer

REPO = "tester/keyword-aem"


def _config(tmp_path, name: str, **overrides) -> AEMConfig:
    params = dict(
        output_dir=str(tmp_path / name),
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=32,
        max_steps=2,
        learning_rate=1e-3,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        seed=0,
        rollout_mode="step",
        max_turns=2,
        max_turn_tokens=6,
        save_strategy="steps",
        save_steps=1,
        push_to_hub=True,
        hub_model_id=f"tester/{name}",
        hub_push_retries=1,
        hub_push_backoff=0.01,
        gradient_checkpointing=False,
    )
    params.update(overrides)
    return AEMConfig(**params)


@pytest.fixture(scope="module")
def pushed(hub, tmp_path_factory, tokenizer):
    """A tiny keyword agent trained 2 steps, evaluated at step 2, pushed with hub_strategy='checkpoint'."""
    from trl_aem.tiny import build_model

    tmp = tmp_path_factory.mktemp("runs")
    config = _config(
        tmp,
        "keyword-aem",
        hub_strategy="checkpoint",
        eval_strategy="steps",
        eval_steps=2,
        per_device_eval_batch_size=4,
    )
    trainer = AEMTrainer(build_model(tokenizer), get_env("keyword"), config, processing_class=tokenizer)
    trainer.train()
    trainer.push_to_hub()
    return trainer


def test_push_then_download_load_and_generate(hub, pushed, tmp_path):
    files = hub.repo(REPO).files()
    for name in ("README.md", "training_curves.png", "model.safetensors", "tokenizer.json", "aem_env.json"):
        assert name in files
    assert "last-checkpoint/trainer_state.json" in files and "last-checkpoint/optimizer.pt" in files
    assert not any(f.startswith("checkpoint-") for f in files)  # hub_strategy="checkpoint": only last-checkpoint
    assert pushed._hub_api.stats.failures == 0 and pushed._hub_api.stats.pushes >= 3

    local = snapshot_download(REPO, cache_dir=tmp_path / "cache")
    settings = json.loads(Path(local, "aem_env.json").read_text())  # what `trl-aem eval` reuses
    assert settings["env"] == "keyword" and settings["env_step_timeout"] == pushed.args.env_step_timeout
    # every rollout setting an evaluation must reuse, max_completion_length included
    assert RolloutSettings.from_record(settings).record() == RolloutSettings.from_config(pushed.args).record()
    assert settings["max_completion_length"] == pushed.args.max_completion_length
    model = AutoModelForCausalLM.from_pretrained(REPO)
    tokenizer = AutoTokenizer.from_pretrained(local)
    trained = pushed.model.state_dict()
    assert all(torch.equal(value, trained[name]) for name, value in model.state_dict().items())
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Say the word mug."}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    output = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert output.shape[1] > inputs["input_ids"].shape[1]


def test_card_metadata_and_body(hub, pushed):
    card = ModelCard.load(REPO)
    data = card.data.to_dict()
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "text-generation"
    assert {"trl", "aem", "grpo", "reinforcement-learning", "agent", "keyword"} <= set(data["tags"])
    assert "base_model" not in data and "license" not in data  # a random local model: omitted, never None
    model_name, results = model_index_to_eval_results(data["model-index"])
    assert model_name == "keyword-aem"
    by_metric = {r.metric_type: r for r in results}
    assert {"success_rate", "return", "turns"} <= set(by_metric)
    assert by_metric["success_rate"].dataset_type == "keyword" and by_metric["success_rate"].dataset_split == "eval"
    evals = [e for e in pushed.state.log_history if "eval_env/success_rate" in e]
    assert by_metric["success_rate"].metric_value == pytest.approx(evals[-1]["eval_env/success_rate"], abs=1e-4)

    text = card.text
    assert "None" not in card.content
    for needle in (
        "## Usage",
        "trl-aem eval --model tester/keyword-aem --env keyword",
        'AutoModelForCausalLM.from_pretrained("tester/keyword-aem")',
        "| AEM lambda | 1 |",
        "| Rollout mode | `step` |",
        "| Max turns | 2 |",
        "| History length | 2 |",
        "| Group size (num_generations) | 2 |",
        "| Steps | 2 |",
        "| Loss type | `dapo` |",
        "| scale_rewards | `group` |",
        "| PEFT | none (full fine-tuning) |",
        "| Hardware | 1 x CPU",
        "| Wall time |",
        "| train | ",
        "| eval | ",
        "![Training curves",
        "(training_curves.png)",
        "arXiv:2605.00425",
        "@article{zhao2026aem",
        "@software{vonwerra2020trl",
        "- TRL: ",
    ):
        assert needle in text, needle
    assert hub.file(REPO, "training_curves.png").startswith(b"\x89PNG")


def test_resume_from_the_hubs_last_checkpoint(hub, pushed, tokenizer, tmp_path):
    from trl_aem.tiny import build_model

    path = download_checkpoint(REPO, local_dir=tmp_path / "download")
    assert path.endswith("last-checkpoint")
    config = _config(tmp_path, "resumed", max_steps=3, push_to_hub=False, save_strategy="no")
    trainer = AEMTrainer(build_model(tokenizer, seed=5), get_env("keyword"), config, processing_class=tokenizer)
    trainer.train(resume_from_checkpoint=path)
    assert trainer.state.global_step == 3
    steps = [e["step"] for e in trainer.state.log_history if "loss" in e]
    assert steps == [1, 2, 3]  # steps 1-2 came from the pushed checkpoint's trainer_state.json


def test_eval_cli_pushes_results_into_the_model_index(hub, pushed, capsys):
    main(["eval", "--model", REPO, "--episodes", "4", "--push-results", "--split", "train"])
    out = capsys.readouterr().out
    assert "success rate" in out and "`keyword` (train tasks)" in out and "results written" in out
    card = ModelCard.load(REPO)
    _, results = model_index_to_eval_results(card.data.to_dict()["model-index"])
    splits = {(r.dataset_split, r.metric_type) for r in results}
    assert ("train", "success_rate") in splits and ("eval", "success_rate") in splits  # merged, not replaced
    assert "### Evaluations with `trl-aem eval`" in card.text and "| `keyword` | train | 4 |" in card.text
    with pytest.raises(SystemExit, match="Hub repository id"):
        main(["eval", "--model", pushed.args.output_dir, "--episodes", "1", "--push-results"])


def test_a_later_push_keeps_the_cli_evaluations(hub, pushed):
    """`trl-aem eval --push-results` wrote into the Hub card (previous test); the trainer's next save re-renders
    the card from the run, and must carry those results over instead of erasing them."""
    pushed.push_to_hub(commit_message="another push")
    card = ModelCard.load(REPO)
    assert "| `keyword` | train | 4 |" in card.text and "Evaluations with `trl-aem eval`" in card.text
    _, results = model_index_to_eval_results(card.data.to_dict()["model-index"])
    splits = {(r.dataset_split, r.metric_type) for r in results}
    assert ("train", "success_rate") in splits and ("eval", "success_rate") in splits
    assert card.text.count("<!-- trl-aem:eval-results -->") == 1


def test_eval_cli_local_model_user_env_and_trained_settings(pushed, tmp_path, capsys):
    output = tmp_path / "results.json"
    main(["eval", "--model", pushed.args.output_dir, "--env", "tests.fake_envs:FixedTurnsEnv", "--episodes", "3"])
    main(["eval", "--model", pushed.args.output_dir, "--episodes", "3", "--output", str(output)])
    summary = json.loads(output.read_text())
    assert summary["env"] == "keyword" and summary["episodes"] == 3  # env and settings from aem_env.json
    assert all(1 <= e["turns"] <= 2 for e in summary["per_episode"])  # max_turns=2 as in training
    assert "`fixedturns`" in capsys.readouterr().out


class _Faults(TrainerCallback):
    """Break the Hub while training: 500s from step 1 on, the port closed from step 2 on."""

    def __init__(self, server: HubServer):
        self.server = server

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 1:
            self.server.fail(10**6)
        elif state.global_step == 2:
            self.server.stop()


def test_hub_failures_mid_training_lose_nothing(hub, tokenizer, tmp_path):
    from trl_aem.tiny import build_model

    config = _config(tmp_path, "flaky", hub_strategy="checkpoint", max_steps=3)
    trainer = AEMTrainer(
        build_model(tokenizer), get_env("keyword"), config, processing_class=tokenizer, callbacks=[_Faults(hub)]
    )
    trainer.train()  # must not raise
    assert trainer.state.global_step == 3
    for step in (1, 2, 3):  # every local checkpoint is complete
        folder = os.path.join(config.output_dir, f"checkpoint-{step}")
        assert {"model.safetensors", "optimizer.pt", "trainer_state.json"} <= set(os.listdir(folder))
    assert trainer._hub_api.stats.failures >= 1 and trainer._hub_api.stats.retries >= 1
    logged = [e["hub/push_failures"] for e in trainer.state.log_history if "hub/push_failures" in e]
    assert logged and logged == sorted(logged)

    with pytest.warns(RuntimeWarning, match="failed"):
        assert trainer.push_to_hub() is None  # still down: reported, not raised
    hub.fail(0)
    hub.start()  # the Hub is back on the same port
    trainer.push_to_hub()
    repo = hub.repo("tester/flaky")
    state = repo.path / "last-checkpoint" / "trainer_state.json"
    assert '"global_step": 3' in state.read_text()  # the newest checkpoint reached the Hub
    final = AutoModelForCausalLM.from_pretrained("tester/flaky")
    assert all(torch.equal(v, trainer.model.state_dict()[k]) for k, v in final.state_dict().items())


def test_an_unreachable_hub_costs_seconds_and_the_end_says_what_is_missing(hub, tokenizer, tmp_path):
    """The Hub down for the whole run: training is not held up by retries (a bounded budget, one try per upload once
    the Hub is known to be down, no card read), and the end of train() lists what is only on disk."""

    from trl_aem.tiny import build_model

    config = _config(tmp_path, "offline-run", hub_strategy="every_save", max_steps=3, hub_push_retries=5,
                     hub_push_backoff=2.0, hub_push_retry_budget=3.0)  # fmt: skip
    hub.stop()
    try:
        trainer = AEMTrainer(build_model(tokenizer), get_env("keyword"), config, processing_class=tokenizer)
        started = time.monotonic()
        with pytest.warns(RuntimeWarning, match=r"upload\(s\) did not reach tester/offline-run: .*offline-run"):
            trainer.train()
        elapsed = time.monotonic() - started
        assert trainer._hub_api.stats.retries == 1  # 2 s of the 3 s budget; then one try per upload
        assert not trainer._hub_api.reachable and elapsed < 60
        assert {"model.safetensors", "README.md", "aem_env.json"} <= set(os.listdir(config.output_dir))
    finally:
        hub.start()


@pytest.mark.parametrize("strategy", ["end", "every_save"])
def test_hub_strategy_end_and_every_save(hub, tokenizer, tmp_path, strategy):
    from trl_aem.tiny import build_model

    name = f"strategy-{strategy.replace('_', '-')}"
    config = _config(tmp_path, name, hub_strategy=strategy, max_steps=1)
    trainer = AEMTrainer(build_model(tokenizer), get_env("keyword"), config, processing_class=tokenizer)
    trainer.train()
    files = hub.repo(f"tester/{name}").files()
    if strategy == "end":
        assert files == []  # nothing until push_to_hub
    else:
        assert "model.safetensors" in files and "README.md" in files
        assert not any("checkpoint" in f for f in files)
    trainer.push_to_hub()
    assert "model.safetensors" in hub.repo(f"tester/{name}").files()


def test_peft_adapter_card_merged_model_and_all_checkpoints(hub, model_path, tokenizer, tmp_path):
    from peft import LoraConfig

    config = _config(
        tmp_path, "keyword-lora", hub_strategy="all_checkpoints", push_merged_model=True, learning_rate=1e-2
    )
    peft_config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    trainer = AEMTrainer(model_path, get_env("keyword"), config, processing_class=tokenizer, peft_config=peft_config)
    trainer.train()
    trainer.push_to_hub()

    files = hub.repo("tester/keyword-lora").files()
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= set(files)
    assert "checkpoint-1/adapter_model.safetensors" in files and "checkpoint-2/adapter_model.safetensors" in files
    card = ModelCard.load("tester/keyword-lora")
    assert card.data.library_name == "peft", card.data
    assert {"peft", "lora"} <= set(card.data.tags), card.data.tags
    assert "AutoPeftModelForCausalLM" in card.text and "| PEFT | LORA: r = 4, alpha = 8" in card.text
    assert "base_model" not in card.data.to_dict()  # trained from a local path

    merged_card = ModelCard.load("tester/keyword-lora-merged")
    assert merged_card.data.library_name == "transformers" and "merged into its weights" in " ".join(
        merged_card.text.split()
    )
    merged = AutoModelForCausalLM.from_pretrained("tester/keyword-lora-merged")
    reference = trainer.model.merge_and_unload()
    assert all(torch.allclose(v, reference.state_dict()[k], atol=1e-6) for k, v in merged.state_dict().items())

    from trl_aem.evaluation import evaluate, load_policy

    policy, policy_tokenizer = load_policy("tester/keyword-lora")  # adapter detected, base from its config
    report = evaluate(policy, policy_tokenizer, get_env("keyword"), episodes=2, max_turns=2, max_turn_tokens=8)
    assert len(report.episodes) == 2 and 0.0 <= report.metrics["success_rate"] <= 1.0


class _OutageAtFirstSave(TrainerCallback):
    """The Hub answers 500 to every request of the first checkpoint's push, and is healthy again once that push has
    finished (failed), before step 2 saves.

    The outage ends when the uploads it is meant to break are over, not at a step: the uploads run on the upload
    thread, and on a busy machine the step-1 push was still running when step 2 ended (issue 23 item 10)."""

    def __init__(self, server: HubServer):
        self.server = server
        self.trainer: AEMTrainer | None = None

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 1:
            self.server.fail(10**6)
        elif state.global_step == 2:
            self.trainer._finish_current_push()  # the step-1 uploads have all failed now
            self.server.fail(0)


def test_rotation_keeps_checkpoints_whose_upload_failed(hub, tokenizer, tmp_path):
    """save_total_limit=1 with hub_strategy='all_checkpoints': checkpoint-1's upload fails, so rotation must keep
    its folder until the replay with the next push has put it on the Hub; afterwards it is rotated as usual."""
    from trl_aem.tiny import build_model

    config = _config(tmp_path, "rotation", hub_strategy="all_checkpoints", save_total_limit=1, max_steps=3)
    outage = _OutageAtFirstSave(hub)
    trainer = AEMTrainer(
        build_model(tokenizer),
        get_env("keyword"),
        config,
        processing_class=tokenizer,
        callbacks=[outage],
    )
    outage.trainer = trainer
    with pytest.warns(RuntimeWarning, match="failed"):
        trainer.train()
    trainer.push_to_hub()
    repo = hub.repo("tester/rotation")
    for step in (1, 2, 3):
        assert (repo.path / f"checkpoint-{step}" / "model.safetensors").exists(), step
    assert trainer._hub_api.pending_failures == []
    # once uploaded it is rotated like any other (the next save's rotation; run here, as no save follows)
    trainer._rotate_checkpoints_keeping_pending(config.save_total_limit)
    assert sorted(d for d in os.listdir(config.output_dir) if d.startswith("checkpoint-")) == ["checkpoint-3"]


def test_rotation_keeps_checkpoints_whose_upload_is_still_running(tmp_path):
    """The race behind the flaky rotation test (issue 23 item 10): a checkpoint's upload still queued or running on
    the upload thread when the next save rotates. Rotation must keep its folder until the upload is over."""
    import threading
    import types

    from trl_aem.hub.push import ResilientHubApi
    from trl_aem.hub.trainer_mixin import HubMixin

    run = tmp_path / "run"
    for step in (1, 2):
        (run / f"checkpoint-{step}").mkdir(parents=True)
        (run / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
        time.sleep(0.01)  # rotation sorts by modification time
    release, started = threading.Event(), threading.Event()

    class SlowHub(ResilientHubApi):
        def _upload_with_replays(self, job):
            started.set()
            release.wait(30)  # the Hub (or the machine) is slow
            return None

    api = SlowHub(retries=0)
    trainer = types.SimpleNamespace(
        _hub_api=api, _get_output_dir=lambda trial: str(run), state=types.SimpleNamespace(best_model_checkpoint=None)
    )
    future = api.upload_folder(
        repo_id="tester/slow", folder_path=run / "checkpoint-1", path_in_repo="checkpoint-1", run_as_future=True
    )
    started.wait(30)
    assert api.pending_uploads == [str(run / "checkpoint-1")]
    HubMixin._rotate_checkpoints_keeping_pending(trainer, 1)
    assert sorted(os.listdir(run)) == ["checkpoint-1", "checkpoint-2"]  # kept while its upload runs
    release.set()
    future.result(timeout=30)
    assert api.pending_uploads == []
    HubMixin._rotate_checkpoints_keeping_pending(trainer, 1)
    assert sorted(os.listdir(run)) == ["checkpoint-2"]  # rotated as usual once the upload is over

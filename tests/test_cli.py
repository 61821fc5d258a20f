"""The ``trl-aem`` command line: TrlParser config files, command-line overrides, clear errors."""

import dataclasses

import pytest

from trl_aem.cli import main


def test_train_from_yaml_with_overrides(tmp_path):
    config = tmp_path / "job.yaml"
    config.write_text(
        "model_name_or_path: tiny\ntask: digits\nuse_aem: true\naem_lambda: 0.5\nmax_steps: 3\n"
        "per_device_train_batch_size: 8\nnum_generations: 4\nmax_completion_length: 8\nlogging_steps: 1\n"
        "save_strategy: 'no'\nreport_to: none\nuse_cpu: true\nnum_prompts: 8\n"
    )
    out = tmp_path / "out"
    main(["train", "--config", str(config), "--output_dir", str(out), "--aem_lambda", "2.0", "--max_steps", "2"])
    assert (out / "model.safetensors").exists() and (out / "tokenizer.json").exists()
    import torch

    saved = torch.load(out / "training_args.bin", weights_only=False)
    assert saved.aem_lambda == 2.0 and saved.max_steps == 2  # command line beats the file


def test_invalid_config_values_are_reported(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--output_dir", str(tmp_path), "--aem_scope", "tokens"])
    assert "invalid choice: 'tokens'" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="aem_lambda must be a finite number"):
        main(["train", "--output_dir", str(tmp_path), "--aem_lambda", "nan"])


def test_unknown_task_and_command(tmp_path, capsys):
    with pytest.raises(SystemExit, match="unknown --task"):
        main(["train", "--output_dir", str(tmp_path), "--task", "chess", "--use_cpu", "true"])
    with pytest.raises(SystemExit):
        main(["fly"])
    assert "invalid choice" in capsys.readouterr().err


def test_train_in_a_builtin_environment(tmp_path):
    out = tmp_path / "env-run"
    main(
        [
            "train",
            "--env",
            "keyword",
            "--output_dir",
            str(out),
            "--max_steps",
            "1",
            "--sft_steps",
            "2",
            "--rollout_mode",
            "step",
            "--per_device_train_batch_size",
            "8",
            "--num_generations",
            "4",
            "--max_turns",
            "2",
            "--max_turn_tokens",
            "8",
            "--report_to",
            "none",
            "--use_cpu",
            "true",
            "--save_strategy",
            "no",
        ]
    )
    assert (out / "model.safetensors").exists()
    with pytest.raises(SystemExit):
        main(["train", "--env", "chess", "--output_dir", str(out)])


def test_evaluate_generates_in_eval_mode_and_restores_train_mode():
    # a model handed over from a trainer is in train mode with gradient checkpointing on, which would make
    # generate drop its KV cache; evaluate() must generate in eval mode and give the model back as it was
    from trl_aem.envs import KeywordEnv
    from trl_aem.evaluation import evaluate
    from trl_aem.tiny import build_model, build_tokenizer

    tokenizer = build_tokenizer()
    model = build_model(tokenizer)
    model.gradient_checkpointing_enable()
    model.train()
    modes = []
    model.register_forward_pre_hook(lambda module, args: modes.append(module.training))
    report = evaluate(model, tokenizer, KeywordEnv, episodes=4, max_turns=2, max_turn_tokens=4)
    assert len(report.episodes) == 4 and modes and not any(modes)
    assert model.training


def test_evaluate_falls_back_only_on_a_missing_split_and_says_so():
    from trl_aem.envs import KeywordEnv
    from trl_aem.evaluation import evaluate
    from trl_aem.tiny import build_model, build_tokenizer

    class TrainOnly(KeywordEnv):
        def tasks(self, split):
            if split != "train":
                raise ValueError(f"no {split} split")
            return super().tasks(split)

    class Broken(KeywordEnv):
        def tasks(self, split):
            raise RuntimeError("dataset server down")

    tokenizer = build_tokenizer()
    model = build_model(tokenizer)
    with pytest.warns(UserWarning, match="evaluating on the 'train' split; skipped: eval"):
        report = evaluate(model, tokenizer, TrainOnly, episodes=2, max_turns=1, max_turn_tokens=4)
    assert report.split == "train"
    with pytest.raises(RuntimeError, match="dataset server down"):  # a real failure is not a missing split
        evaluate(model, tokenizer, Broken, episodes=2, max_turns=1, max_turn_tokens=4)


def test_environment_from_a_yaml_file_with_learning_defaults(tmp_path):
    """`environment:` in a config file (TrlParser keeps `env:` for environment variables); with the tiny model the
    environment's schedule applies unless the file or the command line sets a field."""
    from trl_aem.recipes import STEP_MODE_BUDGETS

    config = tmp_path / "job.yaml"
    config.write_text("environment: keyword\nsft_steps: 2\nmax_steps: 1\nreport_to: none\n")
    out = tmp_path / "out"
    main(["train", "--config", str(config), "--output_dir", str(out)])
    import torch

    saved = torch.load(out / "training_args.bin", weights_only=False)
    assert saved.rollout_mode == "step" and saved.max_turn_tokens == STEP_MODE_BUDGETS["keyword"][1]
    assert saved.max_steps == 1 and saved.learning_rate == 2e-4 and saved.use_cpu
    for name in ("model.safetensors", "README.md", "aem_env.json", "training_curves.png"):
        assert (out / name).exists(), name  # what the card promises is in the output folder


def test_train_help_lists_every_builtin_environment(capsys):
    from trl_aem.envs import ENVIRONMENTS

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert all(f"{name}:" in text for name in ENVIRONMENTS) and "environment: NAME" in text


@pytest.mark.parametrize(
    "argv, message",
    [
        (["eval", "--model", "./no/such/folder", "--env", "keyword"], "no such local folder './no/such/folder'"),
        (
            ["eval", "--model", "nobody/nothing", "--env", "keyword"],
            "HF_HUB_OFFLINE=1 and it is not in the local cache",
        ),
        (["train", "--model_name_or_path", "nobody/nothing", "--max_steps", "1"], "cannot load the model 'nobody"),
        (["train", "--env", "keyword", "--env_kwargs", "{bad json"], "trl-aem train: Expecting property name"),
    ],
)
def test_load_failures_are_one_line_each(tmp_path, monkeypatch, argv, message):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SystemExit) as raised:
        main([*argv, "--output_dir", str(tmp_path)] if argv[0] == "train" else argv)
    text = str(raised.value)
    assert message in text and "\n" not in text


def test_eval_without_a_record_plays_with_the_training_defaults(tmp_path, monkeypatch, capsys):
    """A model folder without aem_env.json: `trl-aem eval` plays with AEMConfig's defaults (max_completion_length
    included: TRL's), the command line's settings win, and evaluate() steps as many environments in parallel as
    training does."""
    from trl_aem import AEMConfig, evaluation
    from trl_aem.rollout.settings import RolloutSettings

    seen = {}

    def fake_evaluate(model, tokenizer, env, **kwargs):
        seen.update(kwargs)
        return evaluation.EvalReport(kwargs["env_name"], "eval")

    monkeypatch.setattr(evaluation, "load_policy", lambda *args, **kwargs: (None, None))
    monkeypatch.setattr(evaluation, "evaluate", fake_evaluate)
    trained = RolloutSettings.from_config(AEMConfig(output_dir=str(tmp_path / "run"), use_cpu=True))
    main(["eval", "--model", str(tmp_path), "--env", "keyword", "--episodes", "1"])
    assert seen["settings"] == trained and seen["settings"].max_completion_length == AEMConfig.max_completion_length
    main(["eval", "--model", str(tmp_path), "--env", "keyword", "--max-turns", "2", "--rollout-mode", "step"])
    assert seen["settings"] == dataclasses.replace(trained, max_turns=2, rollout_mode="step")
    capsys.readouterr()


def test_evaluate_defaults_to_the_training_settings(monkeypatch):
    from trl_aem import evaluation
    from trl_aem.envs import KeywordEnv
    from trl_aem.rollout.settings import RolloutSettings
    from trl_aem.tiny import build_model, build_tokenizer

    pools = []

    class RecordingPool(evaluation.EnvPool):
        def __init__(self, factory, **kwargs):
            pools.append(kwargs)
            super().__init__(factory, **kwargs)

    engines = []

    class RecordingEngine(evaluation.RolloutEngine):
        def __init__(self, pool, formatter, generate, settings, **kwargs):
            engines.append(settings)
            super().__init__(pool, formatter, generate, settings, **kwargs)

    monkeypatch.setattr(evaluation, "EnvPool", RecordingPool)
    monkeypatch.setattr(evaluation, "RolloutEngine", RecordingEngine)
    tokenizer = build_tokenizer()
    evaluation.evaluate(build_model(tokenizer), tokenizer, KeywordEnv, episodes=1, max_turns=1, max_turn_tokens=2)
    defaults = RolloutSettings()
    assert engines == [dataclasses.replace(defaults, rollout_waves=1, max_turns=1, max_turn_tokens=2)]
    assert pools == [
        {
            "worker_type": defaults.env_worker_type,
            "max_workers": defaults.num_env_workers,
            "timeout": defaults.env_step_timeout,
        }
    ]

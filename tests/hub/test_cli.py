"""The ``trl-aem`` command line: TrlParser config files, command-line overrides, clear errors."""

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

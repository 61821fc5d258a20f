"""The ``trl-aem`` command line: TrlParser config files, command-line overrides, clear errors."""

import dataclasses
import os
import subprocess
import sys

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
            "--held_out_eval",
            "false",
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


def test_evaluate_reports_an_environment_that_fails_every_episode_in_one_line():
    from trl_aem.envs import KeywordEnv
    from trl_aem.envs.pool import EnvFailedError
    from trl_aem.evaluation import evaluate
    from trl_aem.tiny import build_model, build_tokenizer

    class BrokenReset(KeywordEnv):
        def reset(self, task):
            raise ValueError("no such room")

    def unbuildable():
        raise OSError("data not downloaded")

    tokenizer = build_tokenizer()
    model = build_model(tokenizer)
    with pytest.raises(EnvFailedError) as raised:
        evaluate(model, tokenizer, BrokenReset, episodes=2, max_turns=1, max_turn_tokens=4)
    assert str(raised.value) == (
        "every episode of the evaluation (2) ended in an environment error or timeout, so there is nothing to "
        "report; the first: reset: ValueError: no such room"
    )
    with pytest.raises(EnvFailedError, match="could not be created: OSError: data not downloaded"):
        evaluate(model, tokenizer, unbuildable, episodes=2)
    with pytest.raises(ValueError, match="the environment has no 'dev' split: env.tasks"):
        evaluate(model, tokenizer, type("NoDev", (KeywordEnv,), {"tasks": _no_dev}), episodes=1, split="dev")


def _no_dev(self, split):
    if split == "dev":
        raise KeyError(split)
    return []


def test_environment_from_a_yaml_file_with_learning_defaults(tmp_path):
    """`environment:` in a config file (TrlParser keeps `env:` for environment variables); with the tiny model the
    environment's schedule applies unless the file or the command line sets a field."""
    from trl_aem.recipes import STEP_MODE_BUDGETS

    config = tmp_path / "job.yaml"
    config.write_text("environment: keyword\nsft_steps: 2\nmax_steps: 1\nreport_to: none\nheld_out_eval: false\n")
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
            "model not found: 'nobody/nothing' is not a local folder and not in the local Hub cache",
        ),
        (["train", "--model_name_or_path", "nobody/nothing", "--max_steps", "1"], "model not found: 'nobody/nothing'"),
        (["train", "--env", "keyword", "--env_kwargs", "{bad json"], "trl-aem: error: Expecting property name"),
        (["train", "--env", "keyword", "--env_kwargs", "[1]"], "--env_kwargs must be a JSON object"),
    ],
)
def test_load_failures_are_one_line_each(tmp_path, monkeypatch, argv, message):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SystemExit) as raised:
        main([*argv, "--output_dir", str(tmp_path)] if argv[0] == "train" else argv)
    text = str(raised.value)
    assert message in text and "\n" not in text and text.startswith("trl-aem: error: ")


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


# ---------------------------------------------------------------------------------------------- sharper errors
def test_misspelled_fields_suggest_the_closest_one(tmp_path):
    """A field no dataclass has, in the YAML file or on the command line (abbreviations included), stops the run with
    the closest field instead of being ignored."""
    config = tmp_path / "job.yaml"
    config.write_text("num_generation: 8\nmax_steps: 1\n")
    out = ["--output_dir", str(tmp_path / "out")]
    with pytest.raises(
        SystemExit, match=r"unknown field 'num_generation' in .*job.yaml; did you mean num_generations\?"
    ):
        main(["train", "--config", str(config), *out])
    with pytest.raises(SystemExit, match="unknown field 'num_generation'"):  # --config=FILE reads the file as well
        main(["train", f"--config={config}", *out])
    for argv, closest in [
        (["--num_generation", "8"], "--num_generations"),
        (["--num_generatons=8"], "--num_generations"),
        (["--learning_rat", "0.1"], "--learning_rate"),  # no silent abbreviation
        (["--enviroment", "keyword"], "--environment"),
    ]:
        with pytest.raises(SystemExit) as raised:
            main(["train", *argv, *out])
        text = str(raised.value)
        assert text == f"trl-aem: error: unknown option {argv[0].split('=')[0]}; did you mean {closest}?", text
    config.write_text("env: keyword\n")
    with pytest.raises(
        SystemExit, match=r"`env:` in a YAML config sets environment variables .* `environment: keyword`"
    ):
        main(["train", "--config", str(config), *out])
    config.write_text("zzz_qqq: 1\n")
    with pytest.raises(SystemExit, match=r"unknown field 'zzz_qqq' .*; `trl-aem train --help` lists them all"):
        main(["train", "--config", str(config), *out])


def test_eval_of_a_missing_model_blames_the_model_not_env(monkeypatch):
    """`trl-aem eval --model does/not-exist` without --env: the model is checked first. Offline, a Hub id that is
    not cached cannot be resolved, and the line says so; with a Hub that cannot be reached, that is what it says."""
    with pytest.raises(SystemExit) as raised:
        main(["eval", "--model", "does/not-exist"])
    text = str(raised.value)
    assert text.startswith("trl-aem: error: model not found: 'does/not-exist'") and "HF_HUB_OFFLINE=1" in text
    assert "--env" not in text
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(SystemExit, match=r"model not found: .* the Hub \(http://127.0.0.1:9\) cannot be reached"):
        main(["eval", "--model", "does/not-exist"])


# ---------------------------------------------------------------------------------------------- a user's environment
USER_ENVS = '''
from trl_aem.envs import KeywordEnv


class Tuple4(KeywordEnv):
    """A gym-like step, (observation, reward, done, info); two held-out tasks."""

    def tasks(self, split):
        return super().tasks(split)[:2] if split == "eval" else super().tasks(split)

    def step(self, action):
        result = super().step(action)
        return result.observation, result.reward, result.done, result.info


class RaisingReset(KeywordEnv):
    def reset(self, task):
        raise ValueError("no such room")


class RaisingResetNoExpert(RaisingReset):
    expert_action = None


class BadStep(KeywordEnv):
    def step(self, action):
        return {"observation": "?"}
'''

TINY_RUN = [
    *("--per_device_train_batch_size", "8", "--num_generations", "4", "--max_turns", "2", "--max_turn_tokens", "8"),
    *("--num_generations_eval", "2", "--per_device_eval_batch_size", "4", "--report_to", "none"),
]


@pytest.fixture
def user_envs(tmp_path, monkeypatch):
    """``cli_user_envs.py`` in a temporary directory that is the current one but not on ``sys.path`` (as for the
    ``trl-aem`` console script)."""
    (tmp_path / "cli_user_envs.py").write_text(USER_ENVS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p and os.path.abspath(p) != str(tmp_path)])
    monkeypatch.delitem(sys.modules, "cli_user_envs", raising=False)
    return tmp_path


def test_the_console_script_imports_from_the_current_directory_and_fails_in_one_line(user_envs):
    """`trl-aem train --env module:attr` as a console script: the module comes from the current directory, and a
    `reset` that raises (in the demonstrations that train the tiny model's tokenizer) is one line, no traceback."""
    script = os.path.join(os.path.dirname(sys.executable), "trl-aem")
    if not os.path.exists(script):
        pytest.skip("the trl-aem console script is not installed")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRL_EXPERIMENTAL_SILENCE": "1"}
    run = subprocess.run(
        [script, "train", "--env", "cli_user_envs:RaisingReset", "--output_dir", "out"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr and "No module named" not in run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("trl-aem: error: the environment failed: every expert demonstration episode (")
    assert last.endswith(
        "ended in an environment error or timeout, so there is nothing to learn from; the first: task 0: reset: ValueError: no such room"
    )


def test_environment_errors_are_one_line_in_the_cli_and_the_same_error_in_python(user_envs, make_config):
    """One contract, one behaviour: a `reset` that always raises stops training after three all-faulted batches
    with the same message in Python and in the CLI (one line there); a `step` of the wrong type is a contract error
    in the demonstrations as in training."""
    from trl_aem import AEMTrainer
    from trl_aem.envs.pool import EnvFailedError
    from trl_aem.tiny import build_model, build_tokenizer

    message = "every episode of the last 3 generation batches ended in an environment error or timeout"
    args = ["train", "--env", "cli_user_envs:RaisingResetNoExpert", "--output_dir", "out", "--max_steps", "4"]
    with pytest.raises(SystemExit) as raised:
        main([*args, *TINY_RUN, "--held_out_eval", "false"])
    text = str(raised.value)
    assert text.startswith(f"trl-aem: error: the environment failed: {message}") and "\n" not in text
    assert text.endswith("the first: reset: ValueError: no such room")
    import cli_user_envs

    tokenizer = build_tokenizer()
    config = make_config(rollout_mode="step", max_turns=2, max_turn_tokens=8, max_steps=4)
    trainer = AEMTrainer(
        build_model(tokenizer), cli_user_envs.RaisingResetNoExpert, config, processing_class=tokenizer
    )
    with pytest.raises(EnvFailedError, match=message):
        trainer.train()
    with pytest.raises(SystemExit) as raised:
        main(["train", "--env", "cli_user_envs:BadStep", "--output_dir", "out", *TINY_RUN])
    assert str(raised.value) == (
        "trl-aem: error: the environment broke its contract: env.step must return trl_aem.envs.StepResult("
        "observation, reward, done, info), got dict {'observation': '?'}"
    )


def test_a_gym_like_step_trains_from_the_cli_and_the_card_has_held_out_results(user_envs, capsys):
    """A `step` returning a 4-tuple trains from the CLI as in Python; the run ends with the held-out evaluation before
    and after RL in the card's model-index; `trl-aem eval --write-results` adds its own to the local card (the
    environment found again from aem_env.json and the current directory)."""
    from huggingface_hub import ModelCard

    main(["train", "--env", "cli_user_envs:Tuple4", "--output_dir", "out", "--max_steps", "1", *TINY_RUN])
    out = capsys.readouterr().out
    assert "held-out evaluation before RL (4 episodes of the eval tasks)" in out
    assert "held-out success rate" in out and "in the card's model-index" in out
    card = ModelCard.load(user_envs / "out" / "README.md")
    values = {(r.dataset_type, r.dataset_split, r.metric_type) for r in card.data.eval_results}
    assert {("tuple4", "eval", metric) for metric in ("success_rate", "return", "turns")} == values
    assert "| eval, before RL |" in card.text and "| eval, after RL |" in card.text
    assert "trl-aem eval --model" in card.text and "--env cli_user_envs:Tuple4" in card.text
    main(["eval", "--model", "out", "--episodes", "2", "--split", "train", "--write-results"])
    assert "results written into the model card out/README.md" in capsys.readouterr().out
    card = ModelCard.load(user_envs / "out" / "README.md")
    splits = {(r.dataset_split, r.metric_type) for r in card.data.eval_results}
    assert ("train", "success_rate") in splits and ("eval", "success_rate") in splits
    assert "| `tuple4` | train | 2 |" in card.text

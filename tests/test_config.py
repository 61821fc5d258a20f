import pytest
from trl import GRPOConfig, TrlParser

from trl_aem import AEMConfig

BASE = dict(output_dir="/tmp/aem-config-test", report_to=[], use_cpu=True, bf16=False)


def test_defaults_are_the_papers():
    config = AEMConfig(**BASE)
    assert isinstance(config, GRPOConfig)
    assert config.use_aem is True
    assert config.aem_lambda == 1.0 and config.aem_min_range == 0.1
    assert config.aem_scope == "group" and config.aem_statistic == "entropy" and config.aem_shuffle is False
    assert config.rollout_mode == "trajectory"


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("aem_lambda", float("nan"), "aem_lambda must be a finite number"),
        ("aem_lambda", float("inf"), "aem_lambda must be a finite number"),
        ("aem_lambda", "1", "aem_lambda must be a finite number"),
        ("aem_min_range", -0.5, "aem_min_range must be a finite number >= 0"),
        ("aem_scope", "episode", "aem_scope must be one of"),
        ("aem_statistic", "variance", "aem_statistic must be one of"),
        ("use_aem", "yes", "use_aem must be a bool"),
        ("aem_shuffle", 1, "aem_shuffle must be a bool"),
        ("rollout_mode", "turn", "rollout_mode must be one of"),
        ("max_turns", 0, "max_turns must be an integer >= 1"),
        ("history_length", -1, "history_length must be an integer >= 0"),
        ("max_turn_tokens", 0, "max_turn_tokens must be None or an integer >= 1"),
        ("env_step_timeout", 0, "env_step_timeout must be None or a finite number of seconds > 0"),
        ("env_step_timeout", float("inf"), "env_step_timeout"),
        ("num_env_workers", 0, "num_env_workers must be an integer >= 1"),
        ("env_worker_type", "fiber", "env_worker_type must be one of"),
        ("invalid_action_penalty", -1.0, "invalid_action_penalty must be a finite number >= 0"),
    ],
)
def test_invalid_values_are_refused_with_clear_messages(field, value, message):
    with pytest.raises(ValueError, match=message):
        AEMConfig(**BASE, **{field: value})


def test_reversed_and_zero_lambda_are_allowed():
    assert AEMConfig(**BASE, aem_lambda=-1.0).aem_lambda == -1.0
    assert AEMConfig(**BASE, aem_lambda=0).aem_lambda == 0


def test_grpo_validation_still_runs():
    with pytest.raises(ValueError, match="at least 2 generations"):
        AEMConfig(**BASE, num_generations=1, per_device_train_batch_size=1)


def test_trl_parser_yaml_and_command_line(tmp_path):
    config_file = tmp_path / "config.yaml"
    config_file.write_text(
        "output_dir: /tmp/aem-parse\naem_lambda: 2.0\naem_scope: trajectory\nreport_to: []\nuse_cpu: true\nbf16: false\n"
    )
    parser = TrlParser(AEMConfig)
    (config,) = parser.parse_args_and_config(
        ["--config", str(config_file), "--aem_scope", "batch", "--aem_min_range", "0.05", "--use_aem", "false"]
    )
    assert config.aem_lambda == 2.0  # from the file
    assert config.aem_scope == "batch"  # the command line wins
    assert config.aem_min_range == 0.05
    assert config.use_aem is False
    with pytest.raises(SystemExit):
        parser.parse_args_and_config(["--output_dir", "/tmp/x", "--aem_scope", "nope"])


def test_precision_defaults_to_fp32_without_a_bf16_accelerator():
    import torch

    config = AEMConfig(output_dir="/tmp/aem-config-test", report_to=[])
    if not torch.cuda.is_available():
        assert config.bf16 is False
    assert AEMConfig(output_dir="/tmp/aem-config-test", report_to=[], use_cpu=True, bf16=True).bf16 is True


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("hub_push_retries", -1),
        ("hub_push_retries", 1.5),
        ("hub_push_backoff", float("inf")),
        ("push_merged_model", 1),
    ],
)
def test_hub_config_fields_are_validated(tmp_path, field, value):
    with pytest.raises(ValueError, match=field):
        AEMConfig(output_dir=str(tmp_path), use_cpu=True, **{field: value})

"""``RolloutSettings``: the one source of the rollout and environment-pool defaults, and they are training's."""

import dataclasses
import inspect

from trl import GRPOConfig

from trl_aem.config import ENV_WORKER_TYPES, AEMConfig
from trl_aem.envs import pool
from trl_aem.evaluation import evaluate
from trl_aem.rollout.settings import ROLLOUT_MODES, TRL_MAX_COMPLETION_LENGTH, RolloutSettings


def test_max_completion_length_default_is_grpoconfigs():
    (grpo_field,) = [f for f in dataclasses.fields(GRPOConfig) if f.name == "max_completion_length"]
    assert grpo_field.default == TRL_MAX_COMPLETION_LENGTH
    assert RolloutSettings().max_completion_length == grpo_field.default


def test_settings_defaults_are_the_training_defaults(tmp_path):
    """What an evaluation without a record plays with (RolloutSettings()) is what a default AEMConfig trains with."""
    args = AEMConfig(output_dir=str(tmp_path), use_cpu=True)
    assert RolloutSettings.from_config(args) == RolloutSettings()
    for f in dataclasses.fields(RolloutSettings):
        if hasattr(args, f.name):
            assert getattr(args, f.name) == f.default, f.name
    # a checkpoint without aem_env.json, or a record missing some fields: the training defaults again
    assert RolloutSettings.from_record({}) == RolloutSettings()
    assert RolloutSettings.from_record({}).record() == RolloutSettings.from_config(args).record()


def test_pool_defaults_have_one_source():
    settings = RolloutSettings()
    assert (settings.num_env_workers, settings.env_worker_type, settings.env_step_timeout) == (
        pool.DEFAULT_MAX_WORKERS,
        pool.DEFAULT_WORKER_TYPE,
        pool.DEFAULT_STEP_TIMEOUT,
    )
    defaults = inspect.signature(pool.EnvPool).parameters
    assert defaults["max_workers"].default == settings.num_env_workers
    assert defaults["worker_type"].default == settings.env_worker_type
    assert defaults["timeout"].default == settings.env_step_timeout
    assert ENV_WORKER_TYPES == pool.WORKER_TYPES and settings.env_worker_type in pool.WORKER_TYPES
    # evaluate() takes its worker count from the settings unless told
    assert inspect.signature(evaluate).parameters["num_workers"].default is None
    # how fast episodes are played is not recorded for evaluation
    assert not {"num_env_workers", "env_worker_type"} & set(RolloutSettings.RECORDED)


def test_rollout_modes_are_one_list():
    fields = {f.name: f for f in dataclasses.fields(AEMConfig)}
    assert tuple(fields["rollout_mode"].metadata["choices"]) == ROLLOUT_MODES
    assert RolloutSettings().rollout_mode in ROLLOUT_MODES

"""AEMTrainer's constructor arguments without a trainer: GRPOTrainer's call forms and the multi-turn one bound by
name, the environment factory told apart from reward functions, and the configuration made an AEMConfig."""

from __future__ import annotations

import dataclasses
import functools
import inspect

import pytest
import torch
from trl import GRPOConfig, GRPOTrainer

from trl_aem import AEMConfig, AEMTrainer
from trl_aem.arguments import GRPO_PARAMETERS, as_aem_config, bind_trainer_arguments, trainer_signature
from trl_aem.envs import KeywordEnv, get_env

NAMES = [p.name for p in GRPO_PARAMETERS]
DEFAULTS = {p.name: p.default for p in GRPO_PARAMETERS}
BASE = dict(report_to=[], use_cpu=True, bf16=False)


def reward(completions, **kwargs):
    return [0.0 for _ in completions]


class RewardModelLike:
    """A reward given as an instance with ``__call__(completions, ...)``, as TRL allows."""

    def __call__(self, prompts, completions, **kwargs):
        return [0.0 for _ in completions]


@pytest.fixture(scope="module")
def grpo_config(tmp_path_factory):
    return GRPOConfig(output_dir=str(tmp_path_factory.mktemp("grpo")), **BASE)


def test_grpo_parameters_are_grpotrainers_after_model():
    assert NAMES[:4] == ["reward_funcs", "args", "train_dataset", "eval_dataset"]
    assert list(inspect.signature(GRPOTrainer.__init__).parameters)[2:] == NAMES


def test_grpo_positional_and_keyword_forms_bind_alike(grpo_config):
    dataset = object()
    positional = bind_trainer_arguments((reward, grpo_config, dataset), {}, None)
    named = bind_trainer_arguments((), {"reward_funcs": reward, "args": grpo_config, "train_dataset": dataset}, None)
    mixed = bind_trainer_arguments((reward,), {"train_dataset": dataset, "args": grpo_config}, None)
    assert positional == named == mixed
    assert set(positional) == {*NAMES, "env"}
    assert positional["reward_funcs"] is reward and positional["args"] is grpo_config
    assert positional["train_dataset"] is dataset and positional["env"] is None
    for name in NAMES[3:]:  # everything not given gets GRPOTrainer's default
        assert positional[name] == DEFAULTS[name], name


def test_multi_turn_form_puts_the_environment_where_reward_funcs_stands(grpo_config):
    call = bind_trainer_arguments((KeywordEnv, grpo_config), {}, None)
    assert call["env"] is KeywordEnv and call["args"] is grpo_config and call["reward_funcs"] is None
    # extra reward functions by name, next to the environment
    call = bind_trainer_arguments((KeywordEnv, grpo_config), {"reward_funcs": [reward]}, None)
    assert call["env"] is KeywordEnv and call["reward_funcs"] == [reward]
    # env= by name, with GRPOTrainer's positional order for the rest
    call = bind_trainer_arguments((reward, grpo_config), {}, KeywordEnv)
    assert call["env"] is KeywordEnv and call["reward_funcs"] is reward and call["args"] is grpo_config
    call = bind_trainer_arguments((), {"args": grpo_config}, KeywordEnv)
    assert call["env"] is KeywordEnv and call["reward_funcs"] is None


@pytest.mark.parametrize(
    "factory",
    [
        KeywordEnv,  # a class
        lambda: KeywordEnv(),  # a zero-argument callable
        functools.partial(KeywordEnv, delay=0.0),  # keyword arguments bound
        get_env("keyword"),
    ],
    ids=["class", "lambda", "partial", "get_env"],
)
def test_environment_factories_are_recognised(factory):
    assert bind_trainer_arguments((factory,), {}, None)["env"] is factory


@pytest.mark.parametrize(
    "value",
    [
        reward,  # a function of the completions
        lambda completions, **kwargs: [1.0] * len(completions),
        RewardModelLike(),  # an instance with __call__
        [reward, reward],  # a list of reward functions
        torch.nn.Linear(2, 1),  # a reward model (nn.Module instance)
        "my-org/my-reward-model",  # a reward model id
    ],
    ids=["function", "lambda", "callable-instance", "list", "module", "model-id"],
)
def test_reward_functions_are_not_taken_for_an_environment(value):
    call = bind_trainer_arguments((value,), {}, None)
    assert call["reward_funcs"] is value and call["env"] is None


def test_reward_functions_whose_arguments_all_have_defaults_are_not_environments():
    def keyword_defaults(prompts=None, completions=None):
        return [0.0]

    def any_keywords(**kwargs):
        return [0.0]

    for value in (keyword_defaults, any_keywords):
        assert bind_trainer_arguments((value,), {}, None)["reward_funcs"] is value


def test_two_environments_raise_typeerror():
    with pytest.raises(TypeError, match="multiple values for argument 'env'"):
        bind_trainer_arguments((KeywordEnv,), {}, KeywordEnv)


def test_none_environment_with_reward_funcs_by_name_is_the_single_turn_form(grpo_config):
    call = bind_trainer_arguments((None, grpo_config), {"reward_funcs": reward}, None)
    assert call["env"] is None and call["reward_funcs"] is reward and call["args"] is grpo_config


def test_a_builtin_environment_name_says_how_to_pass_the_environment(tmp_path, monkeypatch):
    with pytest.raises(TypeError, match=r"'alfworld' would be read as a reward model id.*env=trl_aem\.envs\.get_env"):
        bind_trainer_arguments(("alfworld",), {}, None)
    # a local directory of that name is a reward model path, as for GRPOTrainer
    monkeypatch.chdir(tmp_path)
    (tmp_path / "keyword").mkdir()
    assert bind_trainer_arguments(("keyword",), {}, None)["reward_funcs"] == "keyword"


def test_duplicate_unknown_and_surplus_arguments_raise_typeerror(grpo_config):
    with pytest.raises(TypeError, match="AEMTrainer got multiple values for argument 'args'"):
        bind_trainer_arguments((reward, grpo_config), {"args": grpo_config}, None)
    with pytest.raises(TypeError, match="AEMTrainer got multiple values for argument 'reward_funcs'"):
        bind_trainer_arguments((reward,), {"reward_funcs": reward}, None)
    with pytest.raises(TypeError, match="AEMTrainer got an unexpected keyword argument 'reward_fn'"):
        bind_trainer_arguments((), {"reward_fn": reward}, None)
    with pytest.raises(TypeError, match=f"AEMTrainer takes at most {len(NAMES) + 1} positional arguments"):
        bind_trainer_arguments(tuple(range(len(NAMES) + 1)), {}, None)


def test_args_and_config_are_aliases(grpo_config):
    config = AEMConfig(output_dir="unused", **BASE)
    assert as_aem_config(config, None, "m") is config
    assert as_aem_config(None, config, "m") is config
    assert as_aem_config(config, config, "m") is config
    other = AEMConfig(output_dir="unused", **BASE)
    with pytest.raises(TypeError, match="pass the configuration once, as `args=` or `config=`"):
        as_aem_config(config, other, "m")
    with pytest.raises(TypeError, match="args must be a trl_aem.AEMConfig or a trl.GRPOConfig, got dict"):
        as_aem_config({"output_dir": "x"}, None, "m")


def test_a_plain_grpo_config_keeps_its_fields_and_gets_aems_defaults(tmp_path):
    grpo = GRPOConfig(
        output_dir=str(tmp_path),
        learning_rate=3e-6,
        num_generations=4,
        per_device_train_batch_size=8,
        steps_per_generation=2,
        beta=0.04,
        loss_type="grpo",
        **BASE,
    )
    with pytest.warns(UserWarning, match="converted the GRPOConfig to an AEMConfig with AEM's defaults"):
        config = as_aem_config(None, grpo, "m")
    assert isinstance(config, AEMConfig) and config is not grpo and type(grpo) is GRPOConfig  # a converted copy
    for f in dataclasses.fields(GRPOConfig):
        if f.init:
            assert getattr(config, f.name) == getattr(grpo, f.name), f.name
    assert config.generation_batch_size == grpo.generation_batch_size == 16  # derived fields kept as resolved
    defaults = AEMConfig(output_dir=str(tmp_path), **BASE)
    aem_fields = {f.name for f in dataclasses.fields(AEMConfig)} - {f.name for f in dataclasses.fields(GRPOConfig)}
    assert {"use_aem", "aem_lambda", "aem_scope", "rollout_mode", "max_turns"} <= aem_fields
    for name in aem_fields:
        assert getattr(config, name) == getattr(defaults, name), name
    assert config.use_aem is True


def test_no_config_gives_an_aem_config_named_after_the_model(make_model):
    assert as_aem_config(None, None, "Qwen/Qwen2.5-0.5B-Instruct").output_dir == "Qwen2.5-0.5B-Instruct-AEM"
    assert as_aem_config(None, None, "/models/tiny/").output_dir == "tiny-AEM"
    model = make_model()
    model.config._name_or_path = "org/from-an-instance"
    config = as_aem_config(None, None, model)
    assert isinstance(config, AEMConfig) and config.output_dir == "from-an-instance-AEM" and config.use_aem
    model.config._name_or_path = ""  # a model built in memory has no name
    assert as_aem_config(None, None, model).output_dir == "model-AEM"


def test_trainer_signature_is_grpotrainers_then_env_and_config():
    signature = trainer_signature()
    grpo = list(inspect.signature(GRPOTrainer.__init__).parameters.values())
    assert list(signature.parameters.values())[: len(grpo)] == grpo
    assert list(signature.parameters)[len(grpo) :] == ["env", "config"]
    for name in ("env", "config"):
        parameter = signature.parameters[name]
        assert parameter.kind is inspect.Parameter.KEYWORD_ONLY and parameter.default is None
    assert inspect.signature(AEMTrainer.__init__) == signature  # what IDEs and help() show

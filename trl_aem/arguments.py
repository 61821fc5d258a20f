"""``AEMTrainer``'s constructor arguments: ``GRPOTrainer``'s, by the same names and positions, plus ``env``.

A TRL user changes one import: ``AEMTrainer(model=..., reward_funcs=..., args=GRPOConfig(...), ...)`` works as it
did with ``GRPOTrainer`` (a plain ``GRPOConfig`` becomes an :class:`~trl_aem.AEMConfig` with AEM's defaults). The
multi-turn form ``AEMTrainer(model, env, config)`` puts an environment factory where ``reward_funcs`` stands.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import os
import warnings
from typing import Any

import torch
from trl import GRPOConfig, GRPOTrainer
from trl.trainer.utils import get_config_model_id

from .config import AEMConfig

__all__ = ["GRPO_PARAMETERS", "as_aem_config", "bind_trainer_arguments", "trainer_signature"]

# GRPOTrainer.__init__'s parameters after `model`, in order (reward_funcs, args, train_dataset, ...)
GRPO_PARAMETERS = list(inspect.signature(GRPOTrainer.__init__).parameters.values())[2:]


def trainer_signature() -> inspect.Signature:
    """What ``inspect.signature``, IDEs and ``help()`` show for ``AEMTrainer.__init__``: GRPOTrainer's parameters,
    then ``env`` and ``config`` (keyword-only)."""
    return inspect.Signature(
        [
            *list(inspect.signature(GRPOTrainer.__init__).parameters.values())[:2],
            *GRPO_PARAMETERS,
            inspect.Parameter("env", inspect.Parameter.KEYWORD_ONLY, default=None),
            inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=None),
        ]
    )


def bind_trainer_arguments(positional: tuple, named: dict[str, Any], env: Any) -> dict[str, Any]:
    """GRPOTrainer's arguments by name (defaults filled in) plus ``env``, from a call in either form:
    ``AEMTrainer(model, reward_funcs, args, train_dataset, ...)`` as for ``GRPOTrainer``, or
    ``AEMTrainer(model, env, config, ...)``, where an environment factory takes ``reward_funcs``' position (a
    ``None`` there with ``reward_funcs=`` given by name is the single-turn form without an environment)."""
    names = [p.name for p in GRPO_PARAMETERS]
    if len(positional) > len(names):
        raise TypeError(f"AEMTrainer takes at most {len(names) + 1} positional arguments, got {len(positional) + 1}")
    slots = list(names)
    if positional and _is_env_factory(positional[0]):
        if env is not None:  # AEMTrainer(model, MyEnv, env=MyEnv): two environments
            raise TypeError("AEMTrainer got multiple values for argument 'env'")
        slots[0] = "env"
    elif positional and positional[0] is None and "reward_funcs" in named and env is None:
        # AEMTrainer(model, None, config, reward_funcs=...): no environment, the single-turn form
        slots[0] = "env"
    call: dict[str, Any] = dict(zip(slots[: len(positional)], positional, strict=True))
    for name, value in named.items():
        if name not in names:
            raise TypeError(f"AEMTrainer got an unexpected keyword argument {name!r}")
        if name in call:
            raise TypeError(f"AEMTrainer got multiple values for argument {name!r}")
        call[name] = value
    call.setdefault("env", env)
    for parameter in GRPO_PARAMETERS:
        call.setdefault(parameter.name, parameter.default)
    return call


_REWARD_ARGUMENTS = ("prompts", "completions", "completion_ids")


def _is_env_factory(value: Any) -> bool:
    """Whether the second positional argument is an environment factory rather than ``reward_funcs``: a class (reward
    functions are functions or instances) or a callable that needs no argument and takes none of the keyword arguments
    TRL passes reward functions (``prompts``, ``completions``, ``**kwargs``). A built-in environment's name is refused:
    as a string it would be read as a reward model id."""
    if isinstance(value, str):
        from .envs import ENVIRONMENTS

        if value in ENVIRONMENTS and not os.path.exists(value):
            raise TypeError(
                f"{value!r} would be read as a reward model id; pass the environment itself: "
                f"env=trl_aem.envs.get_env({value!r}) (env must be a zero-argument callable returning a TextEnv)"
            )
        return False
    if isinstance(value, (list, tuple, torch.nn.Module)) or not callable(value):
        return False
    if isinstance(value, type):
        return True
    try:
        parameters = inspect.signature(value).parameters.values()
    except (TypeError, ValueError):  # no signature (some builtins): leave it to GRPOTrainer
        return False
    # TRL calls a reward function with `prompts=`, `completions=` and the dataset columns as keyword arguments
    if any(p.kind is inspect.Parameter.VAR_KEYWORD or p.name in _REWARD_ARGUMENTS for p in parameters):
        return False
    kinds = (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.KEYWORD_ONLY,
    )
    return not any(p.default is p.empty and p.kind in kinds for p in parameters)


def as_aem_config(args: GRPOConfig | None, config: GRPOConfig | None, model) -> AEMConfig:
    """The trainer's :class:`AEMConfig` from ``args`` or ``config`` (aliases). A plain ``GRPOConfig`` becomes an
    ``AEMConfig`` with every field it already resolved kept and AEM's defaults added (re-running
    ``GRPOConfig.__post_init__`` would refuse its own derived ``generation_batch_size``/``steps_per_generation``)."""
    if args is not None and config is not None and args is not config:
        raise TypeError(
            "AEMTrainer: pass the configuration once, as `args=` or `config=` (they are the same argument)"
        )
    config = args if args is not None else config
    if config is None:
        model_name = model if isinstance(model, str) else get_config_model_id(model.config)
        name = str(model_name or "").rstrip("/").split("/")[-1] or "model"  # a model built in memory has no name
        return AEMConfig(f"{name}-AEM")
    if isinstance(config, AEMConfig):
        return config
    if not isinstance(config, GRPOConfig):
        raise TypeError(f"args must be a trl_aem.AEMConfig or a trl.GRPOConfig, got {type(config).__name__}")
    warnings.warn(
        f"AEMTrainer: converted the {type(config).__name__} to an AEMConfig with AEM's defaults (use_aem=True)",
        UserWarning,
        stacklevel=3,
    )
    converted = copy.copy(config)
    converted.__class__ = AEMConfig
    for f in dataclasses.fields(AEMConfig):
        if f.init and f.name not in vars(converted):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            setattr(converted, f.name, default)
    converted._validate_aem()
    return converted

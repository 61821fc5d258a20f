"""Environments: the ``TextEnv`` contract, a fault-tolerant worker pool, and built-in environments."""

from .base import ACTION_FORMAT, StepResult, TextEnv, extract_action
from .pool import EnvCall, EnvOutcome, EnvPool

__all__ = [
    "ACTION_FORMAT",
    "AlfWorldEnv",
    "ENVIRONMENTS",
    "EnvCall",
    "EnvOutcome",
    "EnvPool",
    "StepResult",
    "SWEEnv",
    "TextEnv",
    "extract_action",
    "get_env",
    "KeywordEnv",
    "WebShopEnv",
    "collect_demonstrations",
    "tasks_dataset",
]

# name -> "module:attribute" of a zero-argument environment factory (imported on demand)
ENVIRONMENTS = {
    "keyword": "trl_aem.envs.keyword:KeywordEnv",
    "alfworld": "trl_aem.envs.alfworld:AlfWorldEnv",
    "webshop": "trl_aem.envs.webshop:WebShopEnv",
    "swe": "trl_aem.envs.swe:SWEEnv",
}


def __getattr__(name: str):
    # built-in environments load on first use (their dependencies stay out of `import trl_aem.envs`)
    if name == "AlfWorldEnv":
        from .alfworld import AlfWorldEnv

        return AlfWorldEnv
    if name == "SWEEnv":
        from .swe import SWEEnv

        return SWEEnv
    if name == "WebShopEnv":
        from .webshop import WebShopEnv

        return WebShopEnv
    if name == "tasks_dataset":
        from ..rollout.trainer_env import tasks_dataset

        return tasks_dataset
    if name == "collect_demonstrations":
        from .demos import collect_demonstrations

        return collect_demonstrations
    if name == "KeywordEnv":
        from .keyword import KeywordEnv

        return KeywordEnv
    raise AttributeError(f"module 'trl_aem.envs' has no attribute {name!r}")


def get_env(name: str):
    """The environment factory registered as ``name`` (see ``ENVIRONMENTS``)."""
    import importlib

    if name not in ENVIRONMENTS:
        raise ValueError(f"unknown environment {name!r}; built-in environments: {sorted(ENVIRONMENTS)}")
    module, attribute = ENVIRONMENTS[name].split(":")
    return getattr(importlib.import_module(module), attribute)

"""Environments: the ``TextEnv`` contract, a fault-tolerant worker pool, and built-in environments.

Built-in environments (one :class:`~trl_aem.envs.registry.EnvSpec` each in :mod:`trl_aem.envs.registry`) are
imported on first use, so their dependencies stay out of ``import trl_aem.envs``: ``KeywordEnv`` (a tiny word game),
``VaultEnv`` (a corridor of doors where credit assignment matters), ``WebShopEnv``, ``AlfWorldEnv`` and ``SWEEnv``.
"""

from .base import ACTION_FORMAT, EnvContractError, StepResult, TextEnv, extract_action
from .pool import EnvCall, EnvOutcome, EnvPool
from .registry import ENVIRONMENTS, SPECS, get_env, resolve_env

__all__ = [
    "ACTION_FORMAT",
    "ENVIRONMENTS",
    "AlfWorldEnv",
    "EnvCall",
    "EnvContractError",
    "EnvOutcome",
    "EnvPool",
    "KeywordEnv",
    "SWEEnv",
    "StepResult",
    "TextEnv",
    "VaultEnv",
    "WebShopEnv",
    "extract_action",
    "get_env",
    "resolve_env",
]

_LAZY = {spec.class_name: name for name, spec in SPECS.items()}  # "KeywordEnv" -> "keyword", ...


def __getattr__(name: str):
    if name in _LAZY:
        return get_env(_LAZY[name])
    raise AttributeError(f"module 'trl_aem.envs' has no attribute {name!r}")

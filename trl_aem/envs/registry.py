"""The built-in environments by name: the one registry the trainer, the CLI, the card and ``trl-aem eval`` use."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__all__ = ["ENVIRONMENTS", "SUMMARIES", "get_env", "registered_name", "resolve_env"]

# name -> "module:attribute" of a zero-argument environment factory (imported on first use, so that
# `import trl_aem.envs` does not import ALFWorld's or the SWE sandbox's dependencies)
ENVIRONMENTS: dict[str, str] = {
    "keyword": "trl_aem.envs.keyword:KeywordEnv",
    "alfworld": "trl_aem.envs.alfworld:AlfWorldEnv",
    "webshop": "trl_aem.envs.webshop:WebShopEnv",
    "swe": "trl_aem.envs.swe:SWEEnv",
    "vault": "trl_aem.envs.vault:VaultEnv",
}

# one line each, for `trl-aem train --help` and error messages
SUMMARIES: dict[str, str] = {
    "keyword": "say the requested words over up to three turns (tiny, deterministic; the CPU demo)",
    "alfworld": "ALFWorld household tasks, offline generated games or the real ones (needs the alfworld extra)",
    "webshop": "WebShop shopping on a generated catalog or WebShop's real data",
    "swe": "fix a bug in a repository with tools, judged by its tests (local namespace sandbox)",
    "vault": "a corridor of 6-8 rooms, one door each; an early wrong door dooms the episode, only the end pays",
}


def _load(target: str) -> Callable[[], Any]:
    module, attribute = target.split(":", 1)
    value: Any = importlib.import_module(module)
    for part in attribute.split("."):
        value = getattr(value, part)
    return value


def get_env(name: str) -> Callable[[], Any]:
    """The environment factory registered as ``name`` (see :data:`ENVIRONMENTS`)."""
    if name not in ENVIRONMENTS:
        raise ValueError(f"unknown environment {name!r}; built-in environments: {', '.join(sorted(ENVIRONMENTS))}")
    return _load(ENVIRONMENTS[name])


def resolve_env(spec: str) -> tuple[Callable[[], Any], str]:
    """``(factory, display name)`` for a built-in name or a ``module:attribute`` factory of the user's."""
    if spec in ENVIRONMENTS:
        return get_env(spec), spec
    if ":" not in spec:
        raise ValueError(
            f"unknown environment {spec!r}: use a built-in name ({', '.join(sorted(ENVIRONMENTS))}) or "
            "module:attribute"
        )
    factory = _load(spec)
    attribute = spec.split(":", 1)[1]
    display = getattr(factory, "env_name", None) or attribute.split(".")[-1].lower().removesuffix("env") or "env"
    return factory, display


def registered_name(factory: Any) -> str | None:
    """The registry name of a built-in environment factory (or of a ``functools.partial`` of one), else ``None``."""
    target = getattr(factory, "func", factory)
    module = getattr(target, "__module__", "") or ""
    if not module.startswith("trl_aem.envs"):
        return None  # a user's factory: nothing to import
    for name, spec in ENVIRONMENTS.items():
        try:
            if _load(spec) is target:
                return name
        except ImportError:  # an optional dependency missing: that environment is not this one
            continue
    return None

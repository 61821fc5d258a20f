"""trl_aem: AEM (Adaptive Entropy Modulation, arXiv:2605.00425) for agentic RL on Hugging Face TRL."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .runtime import quiet_third_party

__version__ = "0.1.0"

# Known third-party start-up noise off (trl_aem.runtime.NOISE: each filter drops one message that says nothing about
# the run, e.g. bitsandbytes' kernel-fetch line printed while trl imports peft). Only that: torch threads and every
# other warning are left to the user's process.
quiet_third_party()

__all__ = ["AEMConfig", "AEMTrainer", "aem_coefficients", "warm_start_policy", "__version__"]

# Lazy exports: environment worker processes import `trl_aem.envs` without paying for torch/TRL.
_EXPORTS = {
    "AEMConfig": ".config",
    "AEMTrainer": ".trainer",
    "aem_coefficients": ".modulation",
    "warm_start_policy": ".recipes",  # a model ready for RL in an environment, e.g. the offline tiny one + SFT
}

if TYPE_CHECKING:
    from .config import AEMConfig
    from .modulation import aem_coefficients
    from .recipes import warm_start_policy
    from .trainer import AEMTrainer


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'trl_aem' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)

"""The three arms of the compatibility run: what ``trl.GRPOTrainer`` / ``trl.GRPOConfig`` mean in each.

* ``grpo``: TRL's own classes (the baseline). The config only gets the fp32 fallback below.
* ``aem``: ``trl_aem.AEMTrainer`` and an ``AEMConfig`` with ``use_aem=True``.
* ``aem_off``: ``trl_aem.AEMTrainer`` and an ``AEMConfig`` with ``use_aem=False`` (TRL's base algorithm through
  AEMTrainer's code path).

:func:`install_arm` replaces the two names in the ``trl`` module; call it before the test module runs
``from trl import GRPOConfig, GRPOTrainer``.

CPU adaptation (all arms): ``GRPOConfig`` defaults to ``bf16=True``, which transformers refuses on a machine
without a bf16-capable accelerator ("Your setup doesn't support bf16/gpu"), so on such a machine every upstream
test would fail at its first line. The baseline's config class therefore defaults ``bf16`` to what the machine
supports, exactly as ``AEMConfig`` already does; an explicit ``bf16=...`` is left alone.

The classes are module-level (Trainer pickles ``args`` into every checkpoint).
"""

from __future__ import annotations

import dataclasses
import os

from trl.trainer.grpo_config import GRPOConfig as _TRLGRPOConfig
from trl.trainer.grpo_trainer import GRPOTrainer as _TRLGRPOTrainer

from trl_aem import AEMConfig, AEMTrainer

ARMS = ("grpo", "aem", "aem_off")
MIN_RANGE_ENV = "TRL_COMPAT_AEM_MIN_RANGE"


def bf16_capable() -> bool:
    """Whether this machine has a bf16-capable accelerator (what ``bf16=True`` needs without ``use_cpu``)."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    xpu = getattr(torch, "xpu", None)
    return bool(xpu is not None and xpu.is_available())


@dataclasses.dataclass
class BaselineGRPOConfig(_TRLGRPOConfig):
    """``trl.GRPOConfig`` whose ``bf16`` default follows the hardware (fp32 on a CPU-only machine)."""

    def __post_init__(self):
        if self.bf16 is None and not self.fp16:
            self.bf16 = bf16_capable()
        super().__post_init__()


@dataclasses.dataclass
class AEMOnConfig(AEMConfig):
    """``AEMConfig`` with ``use_aem=True``; ``$TRL_COMPAT_AEM_MIN_RANGE`` (if set) replaces ``aem_min_range``."""

    use_aem: bool = True

    def __post_init__(self):
        if os.environ.get(MIN_RANGE_ENV):
            self.aem_min_range = float(os.environ[MIN_RANGE_ENV])
        super().__post_init__()


@dataclasses.dataclass
class AEMOffConfig(AEMConfig):
    """``AEMConfig`` with ``use_aem=False``: TRL's base algorithm through AEMTrainer."""

    use_aem: bool = False


def arm_classes(arm: str) -> tuple[type, type]:
    """``(trainer_class, config_class)`` standing for ``GRPOTrainer`` / ``GRPOConfig`` in ``arm``."""
    if arm == "grpo":
        return _TRLGRPOTrainer, BaselineGRPOConfig
    if arm == "aem":
        return AEMTrainer, AEMOnConfig
    if arm == "aem_off":
        return AEMTrainer, AEMOffConfig
    raise ValueError(f"unknown arm {arm!r}; expected one of {ARMS}")


def install_arm(arm: str, aem_min_range: float | None = None) -> tuple[type, type]:
    """Make ``trl.GRPOTrainer`` / ``trl.GRPOConfig`` the arm's classes (``from trl import ...`` then sees them).

    ``aem_min_range`` (``aem`` arm) overrides AEM's noise guard; ``None`` keeps AEMConfig's default.
    """
    import trl

    if aem_min_range is not None:
        os.environ[MIN_RANGE_ENV] = str(aem_min_range)
    trainer_class, config_class = arm_classes(arm)
    trl.GRPOTrainer = trainer_class
    trl.GRPOConfig = config_class
    if arm == "grpo":
        # GRPOTrainer(model, reward_funcs) without `args` builds `GRPOConfig(f"{model_name}-GRPO")` from its own
        # module's global: give that default the same fp32 fallback (AEMTrainer's default is an AEMConfig already).
        import trl.trainer.grpo_trainer as grpo_trainer_module

        grpo_trainer_module.GRPOConfig = BaselineGRPOConfig
    return trainer_class, config_class

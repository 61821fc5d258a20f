"""What TRL's test modules import from their ``tests/testing_utils.py``, written for this harness.

The upstream helpers are not used (nothing of TRL's test code is kept in this repository); these are equivalents
with the same names: ``TrlTestCase`` gives each test a fresh ``self.tmp_dir``, and every ``require_*`` marker skips
its test when the requirement is missing on this machine (no GPU, vLLM, Liger, ``kernels``, ...).

The names are those that TRL's test modules import from ``testing_utils`` from v1.0.0 to the newest stored commit
(1.10.0.dev0): ``require_ampere_or_newer`` until v1.4, ``is_ampere_or_newer`` from v1.5 (``test_grpo_trainer.py``
of v1.6 onwards collected nothing without it), ``is_bf16_supported`` after v1.9. A module that imports a name
missing here fails its collection, and ``run_upstream.py`` fails the run with that name.
"""

from __future__ import annotations

import functools
import importlib.util
import subprocess
import warnings
from collections.abc import Callable

import pytest
import torch

__all__ = [
    "TrlTestCase",
    "ignore_warnings",
    "is_ampere_or_newer",
    "is_bf16_supported",
    "is_bitsandbytes_multi_backend_available",
    "kill_process",
    "require_3_accelerators",
    "require_ampere_or_newer",
    "require_bitsandbytes",
    "require_comet",
    "require_harbor",
    "require_jmespath",
    "require_kernels",
    "require_liger_kernel",
    "require_llm_blender",
    "require_math_latex",
    "require_mergekit",
    "require_no_wandb",
    "require_openreward",
    "require_peft",
    "require_rich",
    "require_sklearn",
    "require_torch_accelerator",
    "require_torch_gpu_if_bnb_not_multi_backend_enabled",
    "require_torch_multi_accelerator",
    "require_torch_multi_gpu",
    "require_vision",
    "require_vllm",
    "require_wandb",
]


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _accelerator_count() -> int:
    if torch.cuda.is_available():
        return torch.cuda.device_count()
    xpu = getattr(torch, "xpu", None)
    return xpu.device_count() if xpu is not None and xpu.is_available() else 0


def is_ampere_or_newer(device_index: int = 0) -> bool:
    """An NVIDIA GPU of compute capability 8.0 or more (never a ROCm GPU, whose capability is its gfx version)."""
    if not torch.cuda.is_available() or torch.version.hip is not None:
        return False
    return torch.cuda.get_device_capability(device_index) >= (8, 0)


def is_bf16_supported() -> bool:
    """Hardware bf16 for ``bf16=True`` training (a CUDA/XPU/... device that has it); never a plain CPU."""
    from transformers.utils import is_torch_bf16_gpu_available, is_torch_xla_available

    return is_torch_bf16_gpu_available() or is_torch_xla_available()


def is_bitsandbytes_multi_backend_available() -> bool:
    if not _installed("bitsandbytes"):
        return False
    import bitsandbytes

    return "multi_backend" in getattr(bitsandbytes, "features", set())


def ignore_warnings(message: str | None = None, category: type[Warning] = Warning) -> Callable:
    """Decorator: run the test with warnings matching ``message`` (a regex; all when ``None``) and ``category``
    ignored."""

    def decorator(test_func):
        @functools.wraps(test_func)
        def wrapper(*args, **kwargs):
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=message or "", category=category)
                return test_func(*args, **kwargs)

        return wrapper

    return decorator


def kill_process(process) -> None:
    """Terminate ``process`` (a ``subprocess.Popen``) and, with psutil installed, its children first."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            for child in psutil.Process(process.pid).children(recursive=True):
                try:
                    child.terminate()
                    child.wait(timeout=5)
                except psutil.TimeoutExpired:
                    child.kill()
                except psutil.NoSuchProcess:
                    pass
        except psutil.NoSuchProcess:
            pass
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()


def _vision() -> bool:
    from transformers.utils import is_vision_available

    return is_vision_available()


class TrlTestCase:
    """Base class of TRL's pytest-style test classes: ``self.tmp_dir`` is a per-test temporary directory."""

    @pytest.fixture(autouse=True)
    def _trl_compat_tmp_dir(self, tmp_path):
        self.tmp_dir = str(tmp_path)


require_peft = pytest.mark.skipif(not _installed("peft"), reason="test requires peft")
require_bitsandbytes = pytest.mark.skipif(not _installed("bitsandbytes"), reason="test requires bitsandbytes")
require_jmespath = pytest.mark.skipif(not _installed("jmespath"), reason="test requires jmespath")
require_kernels = pytest.mark.skipif(not _installed("kernels"), reason="test requires the kernels package")
require_liger_kernel = pytest.mark.skipif(not _installed("liger_kernel"), reason="test requires liger-kernel")
require_vllm = pytest.mark.skipif(not _installed("vllm"), reason="test requires vLLM")
require_vision = pytest.mark.skipif(not _vision(), reason="test requires PIL (transformers vision extras)")
require_torch_accelerator = pytest.mark.skipif(_accelerator_count() < 1, reason="test requires a GPU/XPU")
require_torch_multi_accelerator = pytest.mark.skipif(_accelerator_count() < 2, reason="test requires 2 GPUs/XPUs")
require_torch_multi_gpu = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="test requires 2 GPUs")
require_3_accelerators = pytest.mark.skipif(_accelerator_count() < 3, reason="test requires 3 GPUs/XPUs")
require_ampere_or_newer = pytest.mark.skipif(not is_ampere_or_newer(), reason="test requires an Ampere or newer GPU")
require_torch_gpu_if_bnb_not_multi_backend_enabled = pytest.mark.skipif(
    not is_bitsandbytes_multi_backend_available() and not torch.cuda.is_available(),
    reason="test requires bitsandbytes' multi-backend or a CUDA GPU",
)
require_comet = pytest.mark.skipif(not _installed("comet_ml"), reason="test requires comet_ml")
require_harbor = pytest.mark.skipif(not _installed("harbor"), reason="test requires harbor")
require_llm_blender = pytest.mark.skipif(not _installed("llm_blender"), reason="test requires llm-blender")
require_math_latex = pytest.mark.skipif(not _installed("math_verify"), reason="test requires math_verify")
require_mergekit = pytest.mark.skipif(not _installed("mergekit"), reason="test requires mergekit")
require_openreward = pytest.mark.skipif(not _installed("openreward"), reason="test requires openreward")
require_rich = pytest.mark.skipif(not _installed("rich"), reason="test requires rich")
require_sklearn = pytest.mark.skipif(
    not (_installed("sklearn") and _installed("joblib")), reason="test requires scikit-learn"
)
require_wandb = pytest.mark.skipif(not _installed("wandb"), reason="test requires wandb")
require_no_wandb = pytest.mark.skipif(_installed("wandb"), reason="test requires wandb not to be installed")

"""What TRL's test modules import from their ``tests/testing_utils.py``, written for this harness.

The upstream helpers are not used (nothing of TRL's test code is kept in this repository); these are equivalents
with the same names: ``TrlTestCase`` gives each test a fresh ``self.tmp_dir``, and every ``require_*`` marker skips
its test when the requirement is missing on this machine (no GPU, vLLM, Liger, ``kernels``, ...).
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

__all__ = [
    "TrlTestCase",
    "require_ampere_or_newer",
    "require_bitsandbytes",
    "require_jmespath",
    "require_kernels",
    "require_liger_kernel",
    "require_peft",
    "require_torch_accelerator",
    "require_torch_gpu_if_bnb_not_multi_backend_enabled",
    "require_torch_multi_accelerator",
    "require_vision",
    "require_vllm",
]


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _accelerator_count() -> int:
    if torch.cuda.is_available():
        return torch.cuda.device_count()
    xpu = getattr(torch, "xpu", None)
    return xpu.device_count() if xpu is not None and xpu.is_available() else 0


def _ampere_or_newer() -> bool:
    return torch.cuda.is_available() and torch.cuda.get_device_capability(0) >= (8, 0)


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
require_ampere_or_newer = pytest.mark.skipif(not _ampere_or_newer(), reason="test requires an Ampere or newer GPU")
require_torch_gpu_if_bnb_not_multi_backend_enabled = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="test requires a CUDA GPU for bitsandbytes"
)

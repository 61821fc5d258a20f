"""Shared offline fixtures: a tokenizer trained on the spot and tiny random Qwen2-style models."""

from __future__ import annotations

import os

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from trl_aem.runtime import configure_threads, quiet_third_party  # noqa: E402  (stdlib only)

quiet_third_party()  # before trl imports peft and bitsandbytes: the session's first lines are pytest's

import pytest  # noqa: E402
from datasets import Dataset  # noqa: E402
from trl import GRPOConfig  # noqa: E402

from trl_aem import AEMConfig  # noqa: E402
from trl_aem.tiny import build_model, build_tokenizer  # noqa: E402

# one torch thread on 2 cores (TRL_AEM_THREADS / OMP_NUM_THREADS override): these tiny models gain little from a
# second thread on idle cores and run several times slower with it on busy ones (docs/cpu.md)
configure_threads()


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer()


@pytest.fixture
def make_model(tokenizer):
    """Fresh tiny model; the same seed gives the same weights."""

    def _make(seed: int = 0, **kwargs):
        return build_model(tokenizer, seed=seed, **kwargs)

    return _make


@pytest.fixture(scope="session")
def prompt_dataset():
    words = ["apple", "mug", "fridge", "drawer", "shoes", "table", "lamp", "knife"]
    return Dataset.from_dict(
        {"prompt": [[{"role": "user", "content": f"take the {w} {i}"}] for i, w in enumerate(words * 4)]}
    )


def length_reward(completions, **kwargs):
    """A deterministic reward with spread inside groups: completion length modulo 5."""
    return [float(len(c[0]["content"]) % 5) for c in completions]


AEM_FIELDS = {"use_aem", "aem_lambda", "aem_min_range", "aem_scope", "aem_statistic", "aem_shuffle"}


@pytest.fixture
def config_params(tmp_path):
    """Keyword arguments of a fast CPU configuration, with overrides."""

    def _params(**overrides) -> dict:
        params = dict(
            output_dir=str(tmp_path / "out"),
            per_device_train_batch_size=8,
            num_generations=4,
            max_completion_length=12,
            max_steps=2,
            learning_rate=1e-3,
            logging_steps=1,
            report_to=[],
            bf16=False,
            use_cpu=True,
            save_strategy="no",
            seed=0,
            gradient_checkpointing=False,
            dataloader_num_workers=0,
        )
        params.update(overrides)
        return params

    return _params


@pytest.fixture
def make_config(config_params):
    def _make(**overrides) -> AEMConfig:
        return AEMConfig(**config_params(**overrides))

    return _make


@pytest.fixture
def env_config(make_config):
    """A fast multi-turn configuration for environment tests (any field overridable)."""

    def _config(**overrides):
        params = dict(max_completion_length=120, max_turn_tokens=12, max_turns=4, max_steps=2, env_step_timeout=5.0)
        return make_config(**{**params, **overrides})

    return _config


@pytest.fixture
def make_grpo_config(config_params):
    """The plain TRL GRPOConfig with the same settings (AEM fields dropped)."""

    def _make(**overrides) -> GRPOConfig:
        return GRPOConfig(**{k: v for k, v in config_params(**overrides).items() if k not in AEM_FIELDS})

    return _make


@pytest.fixture
def model_path(tmp_path, make_model, tokenizer):
    """A tiny model and its tokenizer saved to disk (TRL builds the KL reference model from this path)."""
    path = tmp_path / "tiny-model"
    make_model(seed=2).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)

"""Evaluate a model as an agent: load it (and its PEFT adapter) from the Hub or disk, play episodes in an
environment with the trainer's :class:`~trl_aem.rollout.engine.RolloutEngine` and plain ``transformers``
generation, and summarise them (success rate, return, turns, invalid-action rate). ``trl-aem eval`` is a thin
command line over this module.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .envs.pool import EnvFailedError, EnvPool
from .rollout.engine import Generated, RolloutEngine
from .rollout.episode import Episode
from .rollout.prompts import ChatFormatter
from .rollout.settings import RolloutSettings

__all__ = ["EvalReport", "evaluate", "load_policy", "read_env_settings"]

SPLITS = ("eval", "test", "train")
# evaluate()'s and `trl-aem eval`'s defaults: episodes played, and how many together (one generate call per turn)
EVAL_EPISODES = 32
EVAL_BATCH_SIZE = 32


@dataclass
class EvalReport:
    """Finished episodes and their summary metrics."""

    env_name: str
    split: str
    episodes: list[Episode] = field(default_factory=list)

    @property
    def metrics(self) -> dict[str, float]:
        n = len(self.episodes)
        turns = sum(len(e.turns) for e in self.episodes)
        if n == 0:
            return {}
        return {
            "success_rate": sum(e.success for e in self.episodes) / n,
            "return": sum(e.env_return for e in self.episodes) / n,
            "turns": turns / n,
            "invalid_rate": sum(e.num_invalid for e in self.episodes) / turns if turns else 0.0,
            "errors": float(sum(e.ending == "error" for e in self.episodes)),
            "timeouts": float(sum(e.ending == "timeout" for e in self.episodes)),
        }

    def table(self) -> str:
        """The results as a Markdown table."""
        rows = [
            ("Environment", f"`{self.env_name}` ({self.split} tasks)"),
            ("Episodes", str(len(self.episodes))),
            *((name.replace("_", " "), f"{value:.3f}") for name, value in self.metrics.items()),
        ]
        width = max(len(name) for name, _ in rows)
        lines = [f"| {'metric'.ljust(width)} | value |", f"|{'-' * (width + 2)}|-------|"]
        return "\n".join(lines + [f"| {name.ljust(width)} | {value} |" for name, value in rows])


def load_policy(
    model: str,
    adapter: str | None = None,
    *,
    revision: str | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | None = None,
):
    """``(model, tokenizer)`` from a Hub id or local folder, in eval mode.

    A PEFT adapter is applied when ``adapter`` is given or when ``model`` itself holds an adapter
    (``adapter_config.json``); the tokenizer comes from the adapter when it has one, else from the base model.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .hub.push import fetch_file

    if adapter is None and fetch_file(model, "adapter_config.json", revision):
        adapter, model = model, _adapter_base(model, revision)
    policy = AutoModelForCausalLM.from_pretrained(model, revision=None if adapter else revision, dtype=dtype)
    tokenizer_source = model
    if adapter is not None:
        from peft import PeftModel

        policy = PeftModel.from_pretrained(policy, adapter, revision=revision)
        if fetch_file(adapter, "tokenizer_config.json", revision):
            tokenizer_source = adapter
    tokenizer = AutoTokenizer.from_pretrained(
        tokenizer_source, revision=revision if tokenizer_source == adapter else None
    )
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return policy.to(device).eval(), tokenizer


def _adapter_base(adapter: str, revision: str | None) -> str:
    from peft import PeftConfig

    return PeftConfig.from_pretrained(adapter, revision=revision).base_model_name_or_path


def read_env_settings(model: str, revision: str | None = None) -> dict[str, Any]:
    """The rollout settings the model was trained with (``aem_env.json`` written beside its card), or ``{}``."""
    from .hub.card import ENV_SETTINGS_FILE
    from .hub.push import fetch_file

    path = fetch_file(model, ENV_SETTINGS_FILE, revision)
    if path is None:
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _transformers_generate(model, tokenizer, *, temperature: float, seed: int | None):
    """A :data:`~trl_aem.rollout.engine.GenerateFn` over ``model.generate`` (left-padded batch, one call per turn)."""
    eos_ids = model.generation_config.eos_token_id
    eos_ids = set(eos_ids if isinstance(eos_ids, list) else [eos_ids] if eos_ids is not None else [])
    eos_ids.add(tokenizer.eos_token_id)
    generator_seed = seed

    @torch.no_grad()
    def generate(prompts: list[list[int]], max_new_tokens: int) -> list[Generated]:
        nonlocal generator_seed
        if generator_seed is not None:
            torch.manual_seed(generator_seed)
            generator_seed += 1
        width = max(len(p) for p in prompts)
        pad = tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=model.device)
        attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=model.device)
        sample = temperature > 0
        output = model.generate(
            input_ids=input_ids,
            attention_mask=attention,
            max_new_tokens=max_new_tokens,
            do_sample=sample,
            temperature=temperature if sample else None,
            top_p=1.0 if sample else None,
            top_k=0 if sample else None,
            pad_token_id=pad,
            eos_token_id=sorted(eos_ids),
        )
        results = []
        for row in output[:, width:].tolist():
            ids = []
            for token in row:
                ids.append(token)
                if token in eos_ids:
                    break
            nan = torch.full((len(ids),), math.nan)
            results.append(Generated(ids, nan, nan.clone()))
        return results

    return generate


def evaluate(
    model,
    tokenizer,
    env: Callable[[], Any],
    *,
    episodes: int = EVAL_EPISODES,
    split: str | None = None,
    env_name: str | None = None,
    settings: RolloutSettings | None = None,
    temperature: float = 0.0,
    batch_size: int = EVAL_BATCH_SIZE,
    num_workers: int | None = None,
    seed: int | None = 0,
    **setting_overrides: Any,
) -> EvalReport:
    """Play ``episodes`` episodes of ``env`` (tasks from ``env().tasks(split)``, cycled; ``split`` defaults to the
    first of eval/test/train the environment has) and return them with their metrics. ``temperature=0`` is greedy.

    Episodes are played with ``settings`` (default: :class:`RolloutSettings`' defaults, which are ``AEMConfig``'s; a
    trained model's own are in its ``aem_env.json``, see :func:`read_env_settings`), with any
    :class:`RolloutSettings` field overridden by keyword (``max_turns=2``, ``rollout_mode="step"``, ...).
    ``num_workers`` (default: the settings' ``num_env_workers``) environments step in parallel, in workers of the
    settings' ``env_worker_type``.

    The environment is held to the contract as in training: a wrong return type raises
    :class:`~trl_aem.envs.EnvContractError`; an environment that cannot be created, whose ``tasks`` raises (other
    than the ValueError/KeyError of a missing split), or that fails every episode raises
    :class:`~trl_aem.envs.pool.EnvFailedError`; single faulted episodes count in ``errors``/``timeouts``."""
    unknown = set(setting_overrides) - {f.name for f in dataclasses.fields(RolloutSettings)}
    if unknown:
        raise TypeError(f"evaluate() got unexpected keyword arguments {sorted(unknown)}")
    settings = dataclasses.replace(settings or RolloutSettings(), rollout_waves=1, **setting_overrides)
    try:
        probe = env()
    except Exception as error:  # noqa: BLE001 - one line naming the environment's own error
        raise EnvFailedError(f"the environment could not be created: {type(error).__name__}: {error}") from error
    try:
        system_prompt = getattr(probe, "system_prompt", None)
        history_observation = getattr(probe, "history_observation", None)
        tasks_fn = getattr(probe, "tasks", None)
        if not callable(tasks_fn):
            raise ValueError("the environment has no tasks(split) method to evaluate on")
        tasks: list[dict] = []
        if split:  # an explicit split: the environment lacks it when tasks() raises ValueError/KeyError
            try:
                tasks = _tasks_of(tasks_fn, split)
            except (ValueError, KeyError) as error:
                raise ValueError(
                    f"the environment has no {split!r} split: env.tasks({split!r}) raised {type(error).__name__}: "
                    f"{error}"
                ) from error
        else:
            # the first of eval/test/train the environment has; an environment says it lacks a split by
            # raising ValueError/KeyError (or returning nothing), and any other error is a real failure
            skipped = []
            for candidate in SPLITS:
                try:
                    tasks = _tasks_of(tasks_fn, candidate)
                except (ValueError, KeyError) as error:
                    skipped.append(f"{candidate} ({type(error).__name__}: {error})")
                    continue
                if tasks:
                    split = candidate
                    break
                skipped.append(f"{candidate} (no tasks)")
            if skipped and tasks:
                warnings.warn(f"evaluating on the {split!r} split; skipped: {'; '.join(skipped)}", stacklevel=2)
        if not tasks:
            raise ValueError(f"the environment has no tasks for split {split or SPLITS!r}")
    finally:
        if callable(getattr(probe, "close", None)):
            probe.close()
    eos = {tokenizer.eos_token_id}
    generation_eos = model.generation_config.eos_token_id
    eos.update(
        generation_eos if isinstance(generation_eos, list) else [generation_eos] if generation_eos is not None else []
    )
    report = EvalReport(env_name or getattr(env, "__name__", "env"), split)
    timeout = math.inf if settings.env_step_timeout is None else settings.env_step_timeout
    workers = settings.num_env_workers if num_workers is None else num_workers
    pool = EnvPool(env, worker_type=settings.env_worker_type, max_workers=workers, timeout=timeout)
    # eval mode: a model fresh from a trainer may still be in train mode with gradient checkpointing on,
    # which makes `generate` drop its KV cache (every token would recompute the whole sequence)
    was_training = model.training
    model.eval()
    try:
        engine = RolloutEngine(
            pool,
            ChatFormatter(tokenizer, settings.history_length, history_observation=history_observation),
            _transformers_generate(model, tokenizer, temperature=temperature, seed=seed),
            settings,
            eos_token_ids=sorted(eos),
        )
        engine.system_prompt = system_prompt
        for start in range(0, episodes, batch_size):
            indices = list(range(start, min(episodes, start + batch_size)))
            batch_tasks = [tasks[i % len(tasks)] for i in indices]
            report.episodes += engine.run(batch_tasks, indices, indices)
    finally:
        pool.close()
        model.train(was_training)
    faulted = [e for e in report.episodes if e.faulted]
    if faulted and len(faulted) == len(report.episodes):
        first = (faulted[0].error or faulted[0].ending or "").strip().split("\n", 1)[0]
        raise EnvFailedError(
            f"every episode of the evaluation ({len(faulted)}) ended in an environment error or timeout, so there "
            f"is nothing to report; the first: {first}"
        )
    return report


def _tasks_of(tasks_fn: Callable[[str], Any], split: str) -> list[dict]:
    """``env.tasks(split)`` as a list. A ValueError/KeyError (how an environment says it lacks a split) propagates;
    anything else it raises is an :class:`EnvFailedError` naming it."""
    try:
        return list(tasks_fn(split) or [])
    except (ValueError, KeyError):
        raise
    except Exception as error:  # noqa: BLE001 - one line naming the environment's own error
        raise EnvFailedError(f"env.tasks({split!r}) raised {type(error).__name__}: {error}") from error


def save_report(report: EvalReport, path: str | os.PathLike) -> None:
    """Write the metrics and a per-episode summary as JSON."""
    summary = {
        "env": report.env_name,
        "split": report.split,
        "episodes": len(report.episodes),
        "metrics": report.metrics,
        "per_episode": [
            {"task": e.task, "success": e.success, "return": e.env_return, "turns": len(e.turns), "ending": e.ending}
            for e in report.episodes
        ],
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, default=str)

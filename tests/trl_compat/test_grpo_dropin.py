"""CI subset of the drop-in check: GRPOTrainer's configurations, trained with GRPOTrainer and with AEMTrainer.

Each case is one configuration that TRL's own GRPO test module exercises (dataset formats, loss types, reward
scaling, GSPO, KL against a reference model, several iterations per generation, evaluation, weighted reward
functions, a reward model given by its id, PEFT, truncation masking, entropy filtering, multi-objective
aggregation, TRL's tools loop). The same training job runs three times, from the same saved model and seed:

* ``trl.GRPOTrainer`` with a ``trl.GRPOConfig``,
* ``AEMTrainer`` with ``use_aem=False``: it must train and log exactly GRPOTrainer's losses (TRL's base algorithm),
* ``AEMTrainer`` with ``use_aem=True``: it must train (finite losses, parameters updated) and log AEM's metrics.

The full upstream module runs with ``run_upstream.py`` (see README.md); this file does not need it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from datasets import Dataset
from transformers import Qwen2Config, Qwen2ForSequenceClassification
from trl import GRPOConfig, GRPOTrainer

from trl_aem import AEMConfig, AEMTrainer
from trl_aem.tiny import build_model, build_tokenizer

ARMS = ("grpo", "aem_off", "aem")
TOOL_CALL = '<tool_call>\n{"name": "multiply", "arguments": {"a": 3, "b": 4}}\n</tool_call>'

# --------------------------------------------------------------------------------------------------------- fixtures


def multiply(a: int, b: int) -> int:
    """
    Multiplies two integers.

    Args:
        a: The first integer.
        b: The second integer.

    Returns:
        The product of the two integers.
    """
    return a * b


def _text(completion) -> str:
    return completion if isinstance(completion, str) else completion[-1]["content"]


def reward_length(completions, **kwargs) -> list[float]:
    """Deterministic, spread inside groups: completion length modulo 7."""
    return [float(len(_text(c)) % 7) for c in completions]


def reward_letters(completions, **kwargs) -> list[float]:
    """Number of distinct characters, modulo 5."""
    return [float(len(set(_text(c))) % 5) for c in completions]


def reward_with_column(completions, bonus, **kwargs) -> list[float]:
    """Uses an extra dataset column (TRL passes dataset columns to reward functions)."""
    return [float(len(_text(c)) % 3) + b for c, b in zip(completions, bonus, strict=True)]


PHRASES = [
    "Beautiful is better than",
    "Explicit is",
    "Simple is better",
    "Complex",
    "Flat is better than",
    "Sparse is better",
    "Readability",
    "Errors should never",
]


def _dataset(kind: str) -> Dataset:
    if kind == "standard":
        return Dataset.from_dict({"prompt": PHRASES, "bonus": [0.5 * (i % 2) for i in range(len(PHRASES))]})
    if kind == "tools":
        return Dataset.from_dict({"prompt": [[{"role": "user", "content": f"Multiply {p}"}] for p in PHRASES]})
    return Dataset.from_dict({"prompt": [[{"role": "user", "content": p}] for p in PHRASES]})


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Models this small run fastest on one thread, and far faster than two threads on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, str]:
    """Tiny models saved to disk, so trainers load them by path ("by id"), each arm from the same weights."""
    from trl.chat_template_utils import qwen3_chat_template

    from trl_aem.tiny import DEFAULT_CORPUS

    root = tmp_path_factory.mktemp("dropin")
    # the corpus includes the tool call, so it is a few dozen tokens and fits max_completion_length
    tokenizer = build_tokenizer([*DEFAULT_CORPUS, *PHRASES, TOOL_CALL, TOOL_CALL], vocab_size=384)
    policy = build_model(tokenizer, hidden_size=32, num_layers=1, num_heads=2, seed=0)
    policy.save_pretrained(root / "policy")
    tokenizer.save_pretrained(root / "policy")

    # a policy whose EOS logit is large on many positions, so some completions end before the length limit
    with torch.no_grad():
        policy.get_input_embeddings().weight[tokenizer.eos_token_id] *= 12.0
    policy.save_pretrained(root / "eos_policy")
    tokenizer.save_pretrained(root / "eos_policy")

    # the same weights with Qwen3's chat template, which TRL knows how to parse tool calls from
    policy = build_model(tokenizer, hidden_size=32, num_layers=1, num_heads=2, seed=0)
    policy.save_pretrained(root / "tool_policy")
    tokenizer.chat_template = qwen3_chat_template
    tokenizer.save_pretrained(root / "tool_policy")

    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(1)
    Qwen2ForSequenceClassification(config).save_pretrained(root / "reward_model")
    tokenizer.save_pretrained(root / "reward_model")
    return {name: str(root / name) for name in ("policy", "eos_policy", "reward_model", "tool_policy")}


def _tool_call_bias(model_path: str) -> dict[tuple[int, ...], float]:
    """``sequence_bias`` that makes the random policy call ``multiply``: the first token of ``TOOL_CALL`` is favoured
    at every step and, once started, each next token of the call is strongly favoured. Generation still runs through
    ``model.generate`` and its logits processors (AEM's statistics included); the tool loop then really executes
    ``multiply`` and generates again after the tool result."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    ids = tokenizer(TOOL_CALL + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
    bias = {(ids[0],): 6.0}  # about even odds for the call to start at a given step: completions differ
    bias.update({tuple(ids[: k + 1]): 100.0 for k in range(1, len(ids))})
    return bias


# ------------------------------------------------------------------------------------------------------------ cases


@dataclasses.dataclass
class Case:
    """One configuration: GRPOConfig overrides and trainer arguments."""

    name: str
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    dataset: str = "standard"
    model: str = "policy"
    rewards: Callable[[dict[str, str]], Any] = lambda assets: reward_length
    peft: bool = False
    tools: bool = False
    eval: bool = False


CASES = [
    Case("standard_prompt_only"),
    Case("conversational_prompt_only", dataset="conversational"),
    *[Case(f"loss_{loss}", {"loss_type": loss}) for loss in ("dapo", "dr_grpo", "bnpo", "cispo", "sapo")],
    Case("scale_rewards_batch", {"scale_rewards": "batch"}),
    Case("scale_rewards_none", {"scale_rewards": "none"}),
    Case("gspo_sequence_level", {"importance_sampling_level": "sequence", "num_iterations": 2}),
    Case("kl_with_reference_model", {"beta": 0.1}),
    Case("iterations_and_steps_per_generation", {"num_iterations": 2, "steps_per_generation": 2}),
    Case(
        "eval_with_num_generations_eval",
        {"eval_strategy": "steps", "eval_steps": 2, "per_device_eval_batch_size": 4, "num_generations_eval": 2},
        eval=True,
    ),
    Case(
        "weighted_reward_functions",
        {"reward_weights": [0.7, 0.3]},
        rewards=lambda assets: [reward_length, reward_letters],
    ),
    Case("reward_function_with_dataset_column", rewards=lambda assets: reward_with_column),
    Case("reward_model_by_id", rewards=lambda assets: [reward_length, assets["reward_model"]]),
    Case("peft_lora", peft=True),
    Case("mask_truncated_completions", {"mask_truncated_completions": True}, model="eos_policy"),
    Case("top_entropy_quantile", {"top_entropy_quantile": 0.2}),
    Case(
        "normalize_then_sum",
        {"multi_objective_aggregation": "normalize_then_sum"},
        rewards=lambda assets: [reward_length, reward_letters],
    ),
    Case("tools_loop", {"max_completion_length": 40}, dataset="tools", model="tool_policy", tools=True),
]


def _config_kwargs(case: Case, output_dir: Path) -> dict[str, Any]:
    kwargs: dict[str, Any] = dict(
        output_dir=str(output_dir),
        learning_rate=0.05,
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=8,
        max_steps=2,
        logging_steps=1,
        report_to="none",
        bf16=False,
        save_strategy="no",
        seed=7,
        dataloader_num_workers=0,
    )
    kwargs.update(case.config)
    return kwargs


def _run(case: Case, arm: str, assets: dict[str, str], output_dir: Path) -> dict[str, Any]:
    kwargs = _config_kwargs(case, output_dir)
    if case.tools:
        kwargs["generation_kwargs"] = {"sequence_bias": _tool_call_bias(assets[case.model])}
    if arm == "grpo":
        trainer_class, args = GRPOTrainer, GRPOConfig(**kwargs)
    elif arm == "aem_off":
        trainer_class, args = AEMTrainer, AEMConfig(**kwargs, use_aem=False)
    else:  # no noise guard: on a tiny random policy the entropy spread is small and alpha must still move
        trainer_class, args = AEMTrainer, AEMConfig(**kwargs, use_aem=True, aem_min_range=0.0)
    dataset = _dataset(case.dataset)
    extra: dict[str, Any] = {}
    if case.peft:
        from peft import LoraConfig

        extra["peft_config"] = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    if case.tools:
        extra["tools"] = [multiply]
    if case.eval:
        extra["eval_dataset"] = dataset.select(range(4))
    trainer = trainer_class(
        model=assets[case.model],
        reward_funcs=case.rewards(assets),
        args=args,
        train_dataset=dataset,
        **extra,
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    after = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    logs = trainer.state.log_history
    return {
        "losses": [entry["loss"] for entry in logs if "loss" in entry],
        "grad_norms": [entry["grad_norm"] for entry in logs if "grad_norm" in entry],
        "eval_losses": [entry["eval_loss"] for entry in logs if "eval_loss" in entry],
        "changed": {n: not torch.equal(p, after[n]) for n, p in before.items()},
        "params": after,
        "logs": logs,
    }


def _assert_trained(case: Case, arm: str, result: dict[str, Any]) -> None:
    assert result["losses"], f"{arm}: no training loss logged"
    assert all(math.isfinite(loss) for loss in result["losses"]), f"{arm}: non-finite loss {result['losses']}"
    changed = result["changed"]
    if case.peft:
        lora = [n for n in changed if "lora_" in n]
        assert lora and any(changed[n] for n in lora), f"{arm}: no LoRA parameter was updated"
        frozen = [n for n in changed if "lora_" not in n]
        assert not any(changed[n] for n in frozen), f"{arm}: a frozen base parameter changed"
    else:
        assert any(changed.values()), f"{arm}: no parameter was updated"
    if case.eval:
        assert result["eval_losses"], f"{arm}: evaluation did not run"
    if case.tools:
        calls = [entry["tools/call_frequency"] for entry in result["logs"] if "tools/call_frequency" in entry]
        assert calls and max(calls) > 0, f"{arm}: the tool loop never ran a tool ({calls})"


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_configuration_trains_on_grpo_and_aem(case: Case, assets, tmp_path):
    results = {arm: _run(case, arm, assets, tmp_path / arm) for arm in ARMS}
    for arm, result in results.items():
        _assert_trained(case, arm, result)

    # use_aem=False is TRL's base algorithm: same logged losses, gradient norms and final weights for the same seed
    grpo, off = results["grpo"], results["aem_off"]
    for key in ("losses", "grad_norms", "eval_losses"):
        torch.testing.assert_close(torch.tensor(off[key]), torch.tensor(grpo[key]), rtol=1e-5, atol=1e-7, msg=key)
    assert off["params"].keys() == grpo["params"].keys()
    for name, value in grpo["params"].items():
        torch.testing.assert_close(off["params"][name], value, rtol=1e-5, atol=1e-6, msg=name)

    # AEM's metrics are logged at the steps that generate (not at the extra iterations on a buffered batch)
    aem_logs = [entry for entry in results["aem"]["logs"] if "aem/alpha_mean" in entry]
    assert aem_logs, "use_aem=True: AEM's coefficients were not logged"
    for entry in aem_logs:  # alpha has group mean 1 by construction
        assert abs(entry["aem/alpha_mean"] - 1.0) < 1e-4, entry
    if case.name == "standard_prompt_only":  # responses differ in entropy, so alpha does modulate the update
        assert max(entry["aem/alpha_std"] for entry in aem_logs) > 0
        assert any(not torch.equal(results["aem"]["params"][n], p) for n, p in grpo["params"].items())


def _generate_without_logits_processors(eos_token_id: int, pad_token_id: int):
    """A replacement for ``GenerationMixin.generate`` that returns fixed completions and never runs the logits
    processors it is given, as a patched, cached or custom ``generate`` may (TRL's own tests patch it this way).
    Row ``r`` ends with EOS after ``2 + r % 4`` tokens, so completions differ and the policy gets a gradient."""

    def generate(self, input_ids=None, **kwargs):
        rows = []
        for r in range(input_ids.size(0)):
            length = 2 + r % 4
            tokens = [20 + (r + k) % 50 for k in range(length)] + [eos_token_id]
            rows.append(tokens + [pad_token_id] * (6 - len(tokens)))
        completions = torch.tensor(rows, device=input_ids.device)
        return torch.cat([input_ids, completions], dim=1)

    return generate


SCENARIOS = ("generate_without_logits_processors", "beam_search")


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_generate_without_per_row_statistics(scenario, assets, tmp_path):
    """Generation that gives AEM no per-row statistic still trains on every arm, like GRPOTrainer.

    Found by the upstream run (at db2ad13 AEMTrainer raised): TRL's test_training_with_mask_truncated_completions and
    test_training_with_tools replace ``generate`` by a function that never runs the logits processors (IndexError
    on the empty statistics), and test_training_with_generation_kwargs uses beam search, where the recorder sees
    ``num_beams`` rows per returned sequence (RuntimeError stacking the log-probs). Such responses get no statistic:
    alpha stays 1 and ``aem/missing_frac`` says so, so ``use_aem=False`` still reproduces GRPOTrainer exactly."""
    from unittest.mock import patch

    from transformers import AutoTokenizer

    results = {}
    for arm in ARMS:
        if scenario == "beam_search":
            case = Case(scenario, {"generation_kwargs": {"do_sample": True, "num_beams": 2, "length_penalty": -0.1}})
            results[arm] = _run(case, arm, assets, tmp_path / arm)
        else:
            tokenizer = AutoTokenizer.from_pretrained(assets["policy"])
            fake = _generate_without_logits_processors(tokenizer.eos_token_id, tokenizer.pad_token_id)
            case = Case(scenario, {"mask_truncated_completions": True})
            with patch("transformers.generation.utils.GenerationMixin.generate", fake):
                results[arm] = _run(case, arm, assets, tmp_path / arm)
        _assert_trained(case, arm, results[arm])
    torch.testing.assert_close(torch.tensor(results["aem_off"]["losses"]), torch.tensor(results["grpo"]["losses"]))
    for name, value in results["grpo"]["params"].items():
        torch.testing.assert_close(results["aem_off"]["params"][name], value, msg=name)
    missing = [entry["aem/missing_frac"] for entry in results["aem"]["logs"] if "aem/missing_frac" in entry]
    assert missing and min(missing) == 1.0, missing


def test_arms_match_the_upstream_runner():
    """The runner's arm names (kept import-free there) are the harness's."""
    from tests.trl_compat import arms, run_upstream

    assert tuple(run_upstream.ARMS) == arms.ARMS


def test_offline_zen_dataset_matches_trls_formats():
    from tests.trl_compat.offline_hub import offline_dataset

    standard = offline_dataset("trl-internal-testing/zen", "standard_prompt_only")
    assert (len(standard["train"]), len(standard["test"])) == (17, 2)
    assert standard["train"][0] == {"prompt": "Beautiful is better than"}
    chat = offline_dataset("trl-internal-testing/zen", "conversational_prompt_only", split="train")
    assert chat[0]["prompt"][0]["role"] == "user"
    completion = offline_dataset("trl-internal-testing/zen", "conversational_prompt_completion", split="test")
    assert set(completion.column_names) == {"prompt", "completion"}


def test_offline_qwen_tokenizer_has_qwens_ids():
    """The upstream tool test decodes Qwen ids: the offline tokenizer must give them the same text."""
    from tests.trl_compat.offline_hub import QWEN25_SPECIALS, build_qwen_tokenizer

    tokenizer = build_qwen_tokenizer("{{ messages }}", QWEN25_SPECIALS)
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id) == (151643, 151645)
    ids = [151657, 198, 4913, 606, 788, 330, 64648, 22785, 497, 330, 16370, 788, 5212, 64, 788, 220, 18, 151658]
    assert tokenizer.decode(ids) == '<tool_call>\n{"name": "multiply_tool", "arguments": {"a": 3</tool_call>'

"""Per-turn AEM with TRL's own tools / environment_factory loop, checked at its boundary.

TRL's `_tool_call_loop` generates turn k+1 from `prompt + completion_so_far + tool_result` and returns one
row per rollout with `tool_mask` (1 = model token, 0 = tool output). The offline tiny model never emits a
tool call, so the loop's output is built here with exactly TRL's shapes; the batch's capture must find each turn's
sampling statistics by prompt prefix and give every model span its own alpha.
"""

import math

import torch

from trl_aem import AEMTrainer, aem_coefficients
from trl_aem.capture import RolloutCapture
from trl_aem.rollout.rows import RowGroups
from trl_aem.sampling import SampledSegment

from .conftest import length_reward


def test_tool_loop_rows_get_one_alpha_per_model_span(make_model, make_config, tokenizer, prompt_dataset):
    trainer = AEMTrainer(
        make_model(),
        config=make_config(num_generations=2),
        train_dataset=prompt_dataset,
        processing_class=tokenizer,
        reward_funcs=length_reward,
    )
    prompts = [[5, 6, 7], [5, 6, 8]]
    turn1 = [[10, 11, 12], [20, 21]]
    tools = [[40, 41], [42, 43, 44]]
    turn2 = [[13, 14], [22, 23, 24, 25]]
    segments, ent = [], {}
    generator = torch.Generator().manual_seed(0)
    for row in range(2):
        for k, (prefix, ids) in enumerate(
            ((prompts[row], turn1[row]), (prompts[row] + turn1[row] + tools[row], turn2[row]))
        ):
            e = torch.rand(len(ids), generator=generator) * 3 + row + k
            ent[row, k] = e
            segments.append(SampledSegment(prefix, ids, e, -e))
    completions = [turn1[r] + tools[r] + turn2[r] for r in range(2)]
    masks = [[1] * len(turn1[r]) + [0] * len(tools[r]) + [1] * len(turn2[r]) for r in range(2)]
    # what the trainer's hooks leave in the batch's capture (segments in any order)
    capture = RolloutCapture("sampler", segments=segments[::-1], rollout_ids=(prompts, completions, masks))
    width = max(map(len, completions))
    output = {
        "prompt_ids": torch.tensor(prompts),
        "prompt_mask": torch.ones(2, 3, dtype=torch.long),
        "completion_ids": torch.tensor([c + [0] * (width - len(c)) for c in completions]),
        "completion_mask": torch.tensor([[1] * len(c) + [0] * (width - len(c)) for c in completions]),
        "tool_mask": torch.tensor([m + [1] * (width - len(m)) for m in masks]),
        "advantages": torch.tensor([1.0, -1.0]),
    }
    stats = capture.token_statistics(output["completion_ids"])
    entropy = stats[0]
    for row in range(2):
        a, t = len(turn1[row]), len(tools[row])
        assert torch.allclose(entropy[row, :a], ent[row, 0])
        assert torch.isnan(entropy[row, a : a + t]).all()  # tool output: no statistic
        assert torch.allclose(entropy[row, a + t : a + t + len(turn2[row])], ent[row, 1])
    groups = RowGroups(group=torch.tensor([0, 0]), episode=torch.tensor([0, 1]))
    advantages = trainer._aem_advantages(output, groups, stats, "train").advantages
    means = torch.tensor([float(ent[r, k].mean()) for r in range(2) for k in range(2)])
    alpha = aem_coefficients(means, torch.zeros(4, dtype=torch.long))
    for row in range(2):
        a, t, b = len(turn1[row]), len(tools[row]), len(turn2[row])
        base = output["advantages"][row]
        assert torch.allclose(advantages[row, :a], base * alpha[2 * row])
        assert torch.allclose(advantages[row, a + t : a + t + b], base * alpha[2 * row + 1])
    assert not math.isclose(float(alpha[0]), float(alpha[1]))  # the two turns of one rollout differ

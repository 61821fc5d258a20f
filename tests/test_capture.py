"""The capture of a TRL-generated batch's token statistics, without a trainer: segments added per generate call and
aligned to the batch's rows, the recompute pass's tensors, one capture at a time, and where a trainer's statistic
comes from."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from trl_aem.capture import RolloutCapture, capturing, stats_source

NAN = float("nan")


def _padded(rows: list[list[int]], width: int) -> torch.Tensor:
    return torch.tensor([row + [0] * (width - len(row)) for row in rows])


def test_single_turn_samples_are_aligned_to_their_rows():
    capture = RolloutCapture("sampler")
    assert not capture.wants_recompute
    prompts = [[5, 6], [5, 6], [7]]  # a group of two completions of one prompt, and another prompt
    completions = [[10, 11, 12], [10, 13], [14]]
    entropies = torch.tensor([[0.1, 0.2, 0.3], [1.1, 1.2, 9.0], [2.1, 9.0, 9.0]])  # (rows, T) as generate pads
    logps = -entropies
    capture.add_samples(prompts, completions, entropies, logps)
    assert [len(s.completion_ids) for s in capture.segments] == [3, 2, 1]
    assert capture.segments[1].entropies.tolist() == pytest.approx([1.1, 1.2])  # cut to the completion
    capture.rollout_ids = (prompts, completions, None)  # what GRPOTrainer._generate returns (no tool mask)

    entropy, logp = capture.token_statistics(_padded(completions, 4))
    expected = torch.tensor([[0.1, 0.2, 0.3, NAN], [1.1, 1.2, NAN, NAN], [2.1, NAN, NAN, NAN]])
    torch.testing.assert_close(entropy, expected, equal_nan=True)
    torch.testing.assert_close(logp, -expected, equal_nan=True)


def test_a_tools_loop_row_gets_each_turns_statistics():
    """TRL's tools loop calls generate once per turn (turn 2 from the prompt, turn 1 and the tool output) and returns
    one row per rollout with ``tool_mask`` (0 = tool output)."""
    capture = RolloutCapture("sampler")
    prompts = [[5, 6, 7], [5, 6, 7]]
    turn1 = [[10, 11], [20, 21, 22]]
    tool = [[40, 41, 42], []]  # the second rollout called no tool: one turn
    turn2 = [[12, 13], []]
    e1 = torch.tensor([[0.1, 0.2, NAN], [0.3, 0.4, 0.5]])
    capture.add_samples(prompts, turn1, e1, -e1)
    e2 = torch.tensor([[1.1, 1.2]])
    capture.add_samples([prompts[0] + turn1[0] + tool[0]], [turn2[0]], e2, -e2)
    completions = [turn1[r] + tool[r] + turn2[r] for r in range(2)]
    masks = [[1, 1, 0, 0, 0, 1, 1], [1, 1, 1]]
    capture.rollout_ids = (prompts, completions, masks)

    entropy, logp = capture.token_statistics(_padded(completions, 8))
    expected = torch.full((2, 8), NAN)
    expected[0, :2], expected[0, 5:7] = e1[0, :2], e2[0]
    expected[1, :3] = e1[1]
    torch.testing.assert_close(entropy, expected, equal_nan=True)
    torch.testing.assert_close(logp, -expected, equal_nan=True)


def test_the_recompute_source_returns_the_passes_tensors():
    capture = RolloutCapture("recompute")
    assert capture.wants_recompute
    with pytest.raises(RuntimeError, match="TRL's old-log-prob pass did not run"):
        capture.token_statistics(torch.zeros(2, 3, dtype=torch.long))
    logps = torch.tensor([[-0.5, -1.0, -2.0], [-0.1, -0.2, -0.3]], dtype=torch.bfloat16)
    entropies = torch.tensor([[1.0, 2.0, 0.5], [0.25, 0.75, 1.5]], dtype=torch.bfloat16)
    capture.recomputed = (logps, entropies)  # as the old-log-prob pass returns them: log-probs first
    assert not capture.wants_recompute  # only the batch's first pass is asked for entropies
    entropy, logp = capture.token_statistics(torch.zeros(2, 3, dtype=torch.long))
    assert entropy.dtype == logp.dtype == torch.float32
    torch.testing.assert_close(entropy, entropies.float())
    torch.testing.assert_close(logp, logps.float())


def test_nothing_recorded_is_a_clear_error():
    completion_ids = torch.zeros(1, 2, dtype=torch.long)
    with pytest.raises(RuntimeError, match="no sampling statistics were recorded for this batch"):
        RolloutCapture("sampler").token_statistics(completion_ids)
    # ids without segments (a custom rollout_func that did not generate through the trainer) and segments without ids
    with pytest.raises(RuntimeError, match="custom `rollout_func`"):
        RolloutCapture("sampler", rollout_ids=([[1]], [[2, 3]], None)).token_statistics(completion_ids)
    with_segments = RolloutCapture("sampler")
    with_segments.add_samples([[1]], [[2, 3]], torch.ones(1, 2), torch.zeros(1, 2))
    with pytest.raises(RuntimeError, match="no sampling statistics"):
        with_segments.token_statistics(completion_ids)


def test_capturing_opens_one_capture_at_a_time():
    trainer = SimpleNamespace(_capture=None, _stats_source="sampler")
    with capturing(trainer) as capture:
        assert trainer._capture is capture and capture.source == "sampler" and capture.segments == []
        with pytest.raises(RuntimeError, match="already open"), capturing(trainer):
            pass
        assert trainer._capture is capture  # the refused one did not close the open one
    assert trainer._capture is None
    with pytest.raises(KeyError), capturing(trainer):
        raise KeyError("the batch failed")
    assert trainer._capture is None  # closed on errors too
    trainer._stats_source = "recompute"
    with capturing(trainer) as capture:
        assert capture.wants_recompute
    with capturing(trainer) as again:
        assert again is not capture  # a fresh capture per batch


def _trainer(*, vllm=False, batching=False, correction=True, use_aem=True, accumulation=4, steps=4, iterations=1):
    """What stats_source reads of a GRPOTrainer."""
    args = SimpleNamespace(use_aem=use_aem, gradient_accumulation_steps=accumulation, steps_per_generation=steps)
    return SimpleNamespace(
        use_vllm=vllm,
        use_transformers_continuous_batching=batching,
        vllm_importance_sampling_correction=correction,
        num_iterations=iterations,
        args=args,
    )


def test_stats_source():
    assert stats_source(_trainer()) == "sampler"
    assert stats_source(_trainer(correction=False, use_aem=False)) == "sampler"  # no vLLM: the sampler records
    assert stats_source(_trainer(vllm=True)) == "recompute"  # importance-sampling correction runs the pass
    assert stats_source(_trainer(vllm=True, correction=False, accumulation=3)) == "recompute"  # misaligned: runs too
    assert stats_source(_trainer(batching=True, accumulation=3)) == "recompute"
    # no pass and the control arm: no statistic, exactly GRPOTrainer
    assert stats_source(_trainer(vllm=True, correction=False, use_aem=False)) is None
    assert stats_source(_trainer(batching=True, use_aem=False)) is None


def test_aem_without_the_recompute_pass_is_refused_with_the_fix():
    with pytest.raises(
        ValueError, match=r"vLLM generation.*`vllm_importance_sampling_correction=True`.*use_aem=False"
    ):
        stats_source(_trainer(vllm=True, correction=False))
    with pytest.raises(ValueError, match=r"`gradient_accumulation_steps` \(8\).*\(4 \* 2\)"):
        stats_source(_trainer(vllm=True, correction=False, accumulation=8, iterations=2))
    with pytest.raises(ValueError, match=r"continuous batching.*`use_transformers_continuous_batching=False`"):
        stats_source(_trainer(batching=True))

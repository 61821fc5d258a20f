"""The statistic recorded while ``generate`` samples: the recorder on hand-made logits, on a real tiny-model
``generate`` (checked against one forward pass over the sampled sequences), and the alignment of recorded segments
with a batch's completion tokens."""

from __future__ import annotations

import pytest
import torch

from trl_aem.modulation import token_entropy, token_logprob
from trl_aem.sampling import (
    SampledSegment,
    SamplingStatsRecorder,
    align_segments,
    record_sampling_stats,
    runs_of_ones,
)
from trl_aem.tiny import build_model, build_tokenizer

NAN = float("nan")


def _feed(recorder: SamplingStatsRecorder, logits: list[torch.Tensor], prompt: torch.Tensor) -> torch.Tensor:
    """Run ``recorder`` as ``generate`` does: step ``k`` sees the sequence so far and the scores of step ``k``; the
    token sampled at step ``k`` is appended before step ``k + 1``. Returns the final sequences."""
    generator = torch.Generator().manual_seed(0)
    sequences = prompt
    for scores in logits:
        returned = recorder(sequences, scores)
        assert returned is scores  # the scores pass through unchanged
        token = torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=generator)
        sequences = torch.cat([sequences, token], dim=1)
    return sequences


@pytest.mark.parametrize("temperature", [1.0, 0.7, 1.6])
def test_recorder_gives_the_entropy_and_sampled_log_prob_of_the_tempered_policy(temperature):
    torch.manual_seed(0)
    logits = [torch.randn(3, 11) * 3 for _ in range(4)]
    logits[2][1, 5] = -float("inf")  # a suppressed token contributes 0, not NaN
    recorder = SamplingStatsRecorder(temperature)
    sequences = _feed(recorder, logits, prompt=torch.tensor([[1, 2], [1, 3], [4, 4]]))
    sampled = sequences[:, 2:]

    expected_entropy = torch.stack([token_entropy(scores, temperature) for scores in logits], dim=1)
    assert recorder.entropies().shape == (3, 4)
    torch.testing.assert_close(recorder.entropies(), expected_entropy)
    assert torch.isfinite(recorder.entropies()).all()

    # the last step's token is sampled after the last logits processor call: it waits for `finish`
    expected_logp = torch.stack([token_logprob(s, sampled[:, k], temperature) for k, s in enumerate(logits)], dim=1)
    torch.testing.assert_close(recorder.logps(), expected_logp[:, :3])
    recorder.finish(sequences)
    torch.testing.assert_close(recorder.logps(), expected_logp)
    recorder.finish(sequences)  # closed: a second finish adds nothing
    assert recorder.logps().shape == (3, 4)


def test_recorder_refuses_a_non_positive_temperature():
    for temperature in (0.0, -1.0):
        with pytest.raises(ValueError, match="temperature must be > 0"):
            SamplingStatsRecorder(temperature)


def test_statistics_pad_with_nan_and_give_nothing_when_the_rows_do_not_match():
    torch.manual_seed(1)
    logits = [torch.randn(2, 7) for _ in range(3)]
    recorder = SamplingStatsRecorder()
    empty_entropy, empty_logp = recorder.statistics(2, 4)  # nothing recorded yet
    assert torch.isnan(empty_entropy).all() and torch.isnan(empty_logp).all()

    sequences = _feed(recorder, logits, prompt=torch.tensor([[1], [2]]))
    entropy, logp = recorder.statistics(2, 5)  # unfinished: the last step has no log-prob yet
    assert entropy.shape == logp.shape == (2, 5)
    torch.testing.assert_close(entropy[:, :3], recorder.entropies())
    assert torch.isnan(entropy[:, 3:]).all()
    assert torch.isfinite(logp[:, :2]).all() and torch.isnan(logp[:, 2:]).all()

    recorder.finish(sequences)
    entropy, logp = recorder.statistics(2, 2)  # shorter than what was recorded: cut
    torch.testing.assert_close(entropy, recorder.entropies()[:, :2])
    torch.testing.assert_close(logp, recorder.logps()[:, :2])

    # beam search keeps num_beams rows per sequence: the recorded rows are not the output's rows
    beams = SamplingStatsRecorder()
    beam_sequences = _feed(beams, logits, prompt=torch.tensor([[1], [2]]))
    beams.finish(beam_sequences[:1])  # one output row for two beams: not closed as if rows matched
    assert beams.logps().shape == (2, 2)
    entropy, logp = beams.statistics(1, 3)
    assert entropy.shape == (1, 3) and torch.isnan(entropy).all() and torch.isnan(logp).all()


@pytest.fixture(scope="module")
def tiny():
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, seed=0).eval()
    return model, tokenizer


@pytest.mark.parametrize(
    "sampling",
    [
        dict(temperature=1.0),
        dict(temperature=0.7, top_k=20, repetition_penalty=1.5),  # warpers and penalties come after the recorder
    ],
)
def test_generate_records_the_entropy_of_the_models_own_logits(tiny, sampling):
    model, tokenizer = tiny
    temperature = sampling["temperature"]
    prompt = torch.tensor([tokenizer.encode("go to countertop 1")[:5], tokenizer.encode("open fridge 1 now")[:5]])
    assert prompt.shape == (2, 5)
    new_tokens = 7
    attributes = set(vars(model))
    torch.manual_seed(0)
    with torch.no_grad(), record_sampling_stats(model, temperature) as recorder:
        sequences = model.generate(
            input_ids=prompt,
            attention_mask=torch.ones_like(prompt),
            do_sample=True,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,  # every row samples every step (EOS suppressed after the recorder)
            pad_token_id=tokenizer.pad_token_id,
            **sampling,
        )
    assert set(vars(model)) == attributes  # generate and _get_logits_processor unwrapped again
    assert "generate" not in vars(model) and "_get_logits_processor" not in vars(model)

    sampled = sequences[:, prompt.size(1) :]
    assert sampled.shape == (2, new_tokens)
    assert recorder.entropies().shape == recorder.logps().shape == (2, new_tokens)  # one per generated token
    with torch.no_grad():  # the logits that produced each generated token, recomputed in one pass
        logits = model(sequences).logits[:, prompt.size(1) - 1 : -1].float()
    torch.testing.assert_close(recorder.entropies(), token_entropy(logits, temperature), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(recorder.logps(), token_logprob(logits, sampled, temperature), atol=1e-4, rtol=1e-4)
    entropy, logp = recorder.statistics(2, new_tokens)
    assert torch.isfinite(entropy).all() and torch.isfinite(logp).all()


def test_one_generate_call_per_block(tiny):
    model, tokenizer = tiny
    prompt = torch.tensor([tokenizer.encode("submit")])
    settings = dict(do_sample=True, max_new_tokens=2, pad_token_id=tokenizer.pad_token_id)
    with torch.no_grad(), record_sampling_stats(model, 1.0):
        model.generate(input_ids=prompt, **settings)
        with pytest.raises(RuntimeError, match="one generate call per block"):
            model.generate(input_ids=prompt, **settings)
    assert "generate" not in vars(model)
    model.generate(input_ids=prompt, **settings)  # outside a block: plain generate again


def test_a_peft_model_is_recorded_through_its_base_model(tiny):
    from peft import LoraConfig, get_peft_model

    model, tokenizer = tiny
    peft_model = get_peft_model(
        build_model(tokenizer, seed=1), LoraConfig(r=2, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    ).eval()
    base = peft_model.get_base_model()
    attributes = (set(vars(peft_model)), set(vars(base)))
    prompt = torch.tensor([tokenizer.encode("look around")[:3]])
    with torch.no_grad(), record_sampling_stats(peft_model, 1.0) as recorder:
        assert "_get_logits_processor" in vars(base)  # the model that runs the sampling loop
        sequences = peft_model.generate(
            input_ids=prompt, do_sample=True, max_new_tokens=4, min_new_tokens=4, pad_token_id=tokenizer.pad_token_id
        )
    assert (set(vars(peft_model)), set(vars(base))) == attributes
    with torch.no_grad():
        logits = peft_model(sequences).logits[:, prompt.size(1) - 1 : -1].float()
    torch.testing.assert_close(recorder.entropies(), token_entropy(logits), atol=1e-4, rtol=1e-4)


def test_a_model_without_transformers_sampling_loop_is_refused():
    refused = pytest.raises(RuntimeError, match="Linear has no `_get_logits_processor`")
    with refused, record_sampling_stats(torch.nn.Linear(2, 2), 1.0):
        pass


def test_runs_of_ones():
    assert runs_of_ones([]) == [] and runs_of_ones([0, 0]) == []
    assert runs_of_ones([1, 1, 1]) == [(0, 3)]
    assert runs_of_ones([1, 1, 0, 0, 1, 0, 1]) == [(0, 2), (4, 1), (6, 1)]
    assert runs_of_ones([0, 1, 1, 0]) == [(1, 2)]


def test_align_segments_on_tools_loop_rows_in_any_order():
    """Two rows of one GRPO group (the same prompt): row 0 is a tools-loop row (model, tool output, model), row 1 a
    single model run; one segment per generate call, each keyed by the exact tokens it was generated from."""
    prompt = [5, 6, 7]
    turn1, tool, turn2 = [10, 11, 12], [40, 41], [13, 14]
    other = [10, 20, 21, 22]  # starts like row 0's first turn: told apart by its tokens, not its prompt
    e_turn1, e_turn2 = torch.tensor([0.1, 0.2, 0.3]), torch.tensor([1.1, 1.2])
    e_other = torch.tensor([2.1, 2.2, 2.3, 2.4, 2.5])  # one token more than the row keeps (truncated completion)
    segments = [  # not in row order
        SampledSegment(prompt + turn1 + tool, turn2, e_turn2, -e_turn2),
        SampledSegment(prompt, other + [77], e_other, -e_other),
        SampledSegment(prompt, turn1, e_turn1, -e_turn1),
    ]
    completions = [turn1 + tool + turn2, other]
    masks = [[1, 1, 1, 0, 0, 1, 1], [1, 1, 1, 1]]
    entropy, logp = align_segments(segments, [prompt, prompt], completions, masks, (2, 8))

    expected = torch.full((2, 8), NAN)
    expected[0, :3] = e_turn1
    expected[0, 5:7] = e_turn2
    expected[1, :4] = e_other[:4]
    torch.testing.assert_close(entropy, expected, equal_nan=True)
    torch.testing.assert_close(logp, -expected, equal_nan=True)
    # without tool masks a row is one run: its first turn is found, the tool output and turn 2 stay NaN
    entropy, _ = align_segments(segments, [prompt, prompt], completions, None, (2, 8))
    torch.testing.assert_close(entropy[0, :3], e_turn1)
    assert torch.isnan(entropy[0, 3:]).all()
    # a row whose prompt no segment has keeps NaN
    entropy, logp = align_segments(segments, [[1, 2]], [turn1], None, (1, 3))
    assert torch.isnan(entropy).all() and torch.isnan(logp).all()

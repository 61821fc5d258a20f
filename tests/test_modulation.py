import math

import pytest
import torch

from trl_aem import aem_coefficients
from trl_aem.modulation import (
    broadcast_to_tokens,
    compute_aem,
    conditioning_keys,
    entropy_drift,
    response_spans,
    shuffle_within_groups,
    span_means,
    span_sums,
    token_entropy,
    token_logprob,
)


def ids(*values):
    return torch.tensor(values, dtype=torch.long)


def test_hand_computed_values():
    # Htil = [0, 0.5, 1]; w = [1, e^-0.5, e^-1]; mean(w) = (1 + 0.606531 + 0.367879) / 3 = 0.658137
    alpha = aem_coefficients(torch.tensor([2.0, 2.5, 3.0]), ids(0, 0, 0))
    assert torch.allclose(alpha, torch.tensor([1.519441, 0.921588, 0.558971]), atol=1e-5)
    w = [math.exp(-h) for h in (0.0, 0.5, 1.0)]
    expected = torch.tensor([x / (sum(w) / 3) for x in w])
    assert torch.allclose(alpha, expected, atol=1e-6)


def test_lambda_two_and_unordered_input():
    stat = torch.tensor([1.0, 0.2, 0.6, 0.2])  # min 0.2, range 0.8
    alpha = aem_coefficients(stat, ids(5, 5, 5, 5), lam=2.0)
    h = (stat - 0.2) / 0.8
    w = torch.exp(-2.0 * h)
    assert torch.allclose(alpha, w / w.mean(), atol=1e-6)
    assert alpha[1] == alpha[3]


def test_noise_guard():
    stat = torch.tensor([1.0, 1.05, 1.09])  # range 0.09 < 0.1
    result = compute_aem(stat, ids(0, 0, 0))
    assert torch.equal(result.alpha, torch.ones(3))
    assert result.guarded.all() and result.group_guarded.all()
    # range exactly at the guard is modulated (the guard is `range < min_range`)
    alpha = aem_coefficients(torch.tensor([1.0, 1.5]), ids(0, 0), min_range=0.5)
    assert not torch.allclose(alpha, torch.ones(2))
    # min_range = 0 modulates any spread but still leaves identical statistics at 1
    assert torch.equal(aem_coefficients(torch.tensor([3.0, 3.0]), ids(0, 0), min_range=0.0), torch.ones(2))
    assert not torch.allclose(aem_coefficients(torch.tensor([3.0, 3.001]), ids(0, 0), min_range=0.0), torch.ones(2))


def test_groups_are_independent():
    a, b = torch.tensor([0.1, 0.9, 0.5]), torch.tensor([2.0, 4.0])
    joint = aem_coefficients(torch.cat([a, b]), ids(0, 0, 0, 1, 1))
    assert torch.allclose(joint[:3], aem_coefficients(a, ids(0, 0, 0)))
    assert torch.allclose(joint[3:], aem_coefficients(b, ids(0, 0)))
    # interleaved group labels give the same result as contiguous ones
    inter = aem_coefficients(torch.tensor([0.1, 2.0, 0.9, 4.0, 0.5]), ids(7, 3, 7, 3, 7))
    assert torch.allclose(inter[[0, 2, 4]], joint[:3]) and torch.allclose(inter[[1, 3]], joint[3:])


def test_scope_is_just_group_ids():
    stat = torch.tensor([0.1, 0.9, 0.5, 2.0])
    batch = aem_coefficients(stat, torch.zeros(4, dtype=torch.long))
    per_item = aem_coefficients(stat, torch.arange(4))
    assert torch.allclose(batch.mean(), torch.tensor(1.0))
    assert torch.equal(per_item, torch.ones(4))  # trajectory scope with one response each: singletons


def test_reversed_lambda_up_weights_uncertain():
    stat = torch.tensor([0.0, 0.4, 1.0])
    forward, reverse = aem_coefficients(stat, ids(0, 0, 0)), aem_coefficients(stat, ids(0, 0, 0), lam=-1.0)
    assert forward[0] > forward[1] > forward[2]
    assert reverse[0] < reverse[1] < reverse[2]
    assert torch.allclose(reverse.mean(), torch.tensor(1.0))


@pytest.mark.parametrize("lam", [0.3, 1.0, 2.5, -1.0])
def test_invariants_random(lam):
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        n = int(torch.randint(2, 20, (1,), generator=gen))
        stat = torch.rand(n, generator=gen) * 3
        groups = torch.randint(0, 4, (n,), generator=gen)
        result = compute_aem(stat, groups, lam=lam, min_range=0.1)
        alpha = result.alpha
        assert torch.isfinite(alpha).all()
        bound = math.exp(abs(lam))
        assert (alpha >= 1 / bound - 1e-5).all() and (alpha <= bound + 1e-5).all()
        for g in groups.unique():
            sel = groups == g
            assert torch.allclose(alpha[sel].mean(), torch.tensor(1.0), atol=1e-5)
            s, a = stat[sel], alpha[sel]
            order = torch.argsort(s)
            diffs = a[order].diff()
            if lam > 0:
                assert (diffs <= 1e-6).all(), "alpha must not increase with entropy"
            else:
                assert (diffs >= -1e-6).all()
        advantages = torch.randn(n, generator=gen)
        assert torch.equal(torch.sign(advantages * alpha), torch.sign(advantages))


def test_lambda_zero_is_identity():
    stat = torch.tensor([0.0, 1.0, 3.0])
    assert torch.equal(aem_coefficients(stat, ids(0, 0, 0), lam=0.0), torch.ones(3))


def test_degenerate_inputs():
    # singleton group
    assert torch.equal(aem_coefficients(torch.tensor([5.0]), ids(0)), torch.ones(1))
    # empty batch
    assert aem_coefficients(torch.zeros(0), torch.zeros(0, dtype=torch.long)).numel() == 0
    # NaN / inf members get alpha 1 and do not distort their group
    stat = torch.tensor([0.0, float("nan"), 1.0, float("inf"), -float("inf")])
    alpha = aem_coefficients(stat, ids(0, 0, 0, 0, 0))
    assert torch.isfinite(alpha).all()
    assert alpha[1] == 1 and alpha[3] == 1 and alpha[4] == 1
    assert torch.allclose(alpha[[0, 2]], aem_coefficients(torch.tensor([0.0, 1.0]), ids(0, 0)))
    # a group with only non-finite statistics
    assert torch.equal(aem_coefficients(torch.tensor([float("nan")] * 3), ids(1, 1, 1)), torch.ones(3))
    # dtype is kept
    assert aem_coefficients(torch.tensor([0.0, 1.0], dtype=torch.float64), ids(0, 0)).dtype == torch.float64


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(lam=float("nan")), "finite"),
        (dict(lam=float("inf")), "finite"),
        (dict(min_range=-0.1), ">= 0"),
        (dict(min_range=float("nan")), "finite"),
    ],
)
def test_bad_hyperparameters(kwargs, error):
    with pytest.raises(ValueError, match=error):
        aem_coefficients(torch.tensor([0.0, 1.0]), ids(0, 0), **kwargs)


def test_bad_shapes_and_dtypes():
    with pytest.raises(ValueError, match="1-D"):
        aem_coefficients(torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="entries"):
        aem_coefficients(torch.zeros(3), ids(0, 0))
    with pytest.raises(TypeError, match="floating"):
        aem_coefficients(torch.tensor([1, 2]), ids(0, 0))
    with pytest.raises(TypeError, match="integer"):
        aem_coefficients(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.0]))


def test_shuffle_within_groups_keeps_each_groups_values():
    values = torch.arange(12, dtype=torch.float32)
    groups = ids(0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2)
    changed = False
    for seed in range(5):
        out = shuffle_within_groups(values, groups, torch.Generator().manual_seed(seed))
        for g in range(3):
            assert sorted(out[groups == g].tolist()) == sorted(values[groups == g].tolist())
        changed |= not torch.equal(out, values)
    assert changed
    assert torch.equal(
        shuffle_within_groups(values, groups, torch.Generator().manual_seed(3)),
        shuffle_within_groups(values, groups, torch.Generator().manual_seed(3)),
    )


def test_response_spans_and_means():
    mask = torch.tensor([[1, 1, 0, 0, 1, 0], [0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]])
    spans = response_spans(mask)
    assert spans.num_spans == 3
    assert spans.row.tolist() == [0, 0, 2]
    assert spans.start.tolist() == [0, 4, 0]
    assert spans.length.tolist() == [2, 1, 6]
    assert spans.span_id[0].tolist() == [0, 0, -1, -1, 1, -1]
    values = torch.tensor([[1.0, 3.0, 9.0, 9.0, 5.0, 9.0], [0.0] * 6, [1.0, float("nan"), 1.0, 1.0, 1.0, 4.0]])
    means = span_means(values, spans)
    assert torch.allclose(means, torch.tensor([2.0, 5.0, 1.6]))
    out = broadcast_to_tokens(torch.tensor([10.0, 20.0, 30.0]), spans, fill=1.0)
    assert out[0].tolist() == [10.0, 10.0, 1.0, 1.0, 20.0, 1.0]
    assert out[1].tolist() == [1.0] * 6
    # a span whose values are all NaN has no statistic
    assert torch.isnan(span_means(torch.full((1, 2), float("nan")), response_spans(torch.ones(1, 2))))[0]


def test_token_entropy_and_logprob():
    v = 50
    assert torch.allclose(token_entropy(torch.zeros(v)), torch.tensor(math.log(v)))
    peaked = torch.full((v,), -float("inf"))
    peaked[3] = 0.0
    assert token_entropy(peaked) == 0.0
    logits = torch.randn(4, v)
    p = torch.softmax(logits / 0.7, dim=-1)
    assert torch.allclose(token_entropy(logits, 0.7), -(p * p.log()).sum(-1), atol=1e-5)
    tokens = torch.tensor([0, 1, 2, 3])
    assert torch.allclose(token_logprob(logits, tokens, 0.7), p.log()[torch.arange(4), tokens], atol=1e-5)
    with pytest.raises(ValueError):
        token_entropy(logits, 0.0)


def test_entropy_drift_is_the_leave_one_out_covariance_per_state():
    a = torch.tensor([1.0, -1.0, 2.0, 0.5, 3.0])
    s = torch.tensor([3.0, 1.0, float("nan"), 4.0, 2.0])
    state = torch.tensor([0, 0, 0, 1, 2])  # state 1 and 2 hold one response each: no estimate of H(s)
    # state 0 (the NaN response dropped): A_0 (S_0 - S_1) and A_1 (S_1 - S_0)
    assert entropy_drift(a, s, state) == pytest.approx((1.0 * 2.0 + -1.0 * -2.0) / 2)
    assert torch.isnan(entropy_drift(a[3:], s[3:], state[3:]))
    assert torch.isnan(entropy_drift(torch.zeros(0), torch.zeros(0), torch.zeros(0, dtype=torch.long)))
    x = torch.randn(16, dtype=torch.float64)
    y = torch.randn(16, dtype=torch.float64)
    assert entropy_drift(x, y, torch.zeros(16, dtype=torch.long)) == pytest.approx(
        float(torch.cov(torch.stack([x, y]))[0, 1])
    )


def test_span_sums_and_conditioning_keys():
    mask = torch.tensor([[1, 1, 0, 1], [1, 1, 1, 0], [0, 1, 1, 0]])
    spans = response_spans(mask)
    values = torch.arange(12, dtype=torch.float32).view(3, 4)
    assert span_sums(values, spans).tolist() == [1.0, 3.0, 15.0, 19.0]
    values[0, 3] = float("nan")
    assert torch.isnan(span_sums(values, spans)[1])
    # rows 0 and 1 share prompt and first completion tokens: their first spans answer the same state
    prompt = torch.tensor([[0, 5, 6], [0, 5, 6], [5, 6, 7]])
    prompt_mask = torch.tensor([[0, 1, 1], [0, 1, 1], [1, 1, 1]])
    completion = torch.tensor([[1, 2, 9, 3], [1, 2, 3, 0], [4, 4, 4, 0]])
    keys = conditioning_keys(prompt, prompt_mask, completion, spans).tolist()
    assert keys[0] == keys[2] and len(set(keys)) == 3 and all(0 <= k < 2**48 for k in keys)
    shifted = conditioning_keys(prompt + 1, prompt_mask, completion, spans).tolist()
    assert not set(shifted) & set(keys)

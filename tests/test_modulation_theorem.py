"""Numerical check of AEM's theorem on a small categorical policy.

For a softmax policy pi = softmax(theta) and a natural-gradient step on the sampled objective
A(a) * log pi(a), the first-order change of the policy entropy is eta * A(a) * (S(a) - H), with
S(a) = -log pi(a) and H = E[S]. Averaged over a ~ pi: eta * E[A * (S - H)].
"""

import itertools

import pytest
import torch

from trl_aem.modulation import aem_coefficients, entropy_drift


def entropy(theta: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(theta, dim=-1)
    return -(logp.exp() * logp).sum()


def natural_gradient_step(theta: torch.Tensor, objective_grad: torch.Tensor, eta: float) -> torch.Tensor:
    """theta + eta * F^+ g with the Fisher information F computed by autograd."""
    k = theta.numel()
    jac = torch.autograd.functional.jacobian(
        lambda t: torch.log_softmax(t, dim=-1), theta
    )  # (K, K): d logpi_b / d theta
    pi = torch.softmax(theta, dim=-1)
    fisher = sum(pi[b] * torch.outer(jac[b], jac[b]) for b in range(k))
    return theta + eta * torch.linalg.pinv(fisher, hermitian=True) @ objective_grad


def sample_grad(theta: torch.Tensor, action: int, advantage: float) -> torch.Tensor:
    t = theta.clone().requires_grad_(True)
    (advantage * torch.log_softmax(t, dim=-1)[action]).backward()
    return t.grad


def test_per_response_entropy_change_matches_theorem():
    torch.manual_seed(0)
    theta = torch.randn(7, dtype=torch.float64) * 1.5
    pi = torch.softmax(theta, dim=-1)
    surprisal = -torch.log(pi)
    h = entropy(theta)
    advantages = torch.randn(7, dtype=torch.float64)
    for a in range(7):
        errors = []
        for eta in (1e-4, 5e-5):
            new_theta = natural_gradient_step(theta, sample_grad(theta, a, float(advantages[a])), eta)
            measured = entropy(new_theta) - h
            predicted = eta * advantages[a] * (surprisal[a] - h)
            assert torch.sign(measured) == torch.sign(predicted)
            assert abs(measured - predicted) <= 0.02 * abs(predicted) + 1e-12
            errors.append(abs(measured - predicted))
        # the residual is second order: halving eta divides it by about 4
        assert errors[1] < errors[0] / 3


def test_expected_entropy_change_matches_covariance():
    torch.manual_seed(1)
    theta = torch.randn(9, dtype=torch.float64)
    pi = torch.softmax(theta, dim=-1)
    surprisal = -torch.log(pi)
    h = entropy(theta)
    advantages = torch.randn(9, dtype=torch.float64)
    expected_grad = sum(pi[a] * sample_grad(theta, a, float(advantages[a])) for a in range(9))
    eta = 1e-3
    measured = entropy(natural_gradient_step(theta, expected_grad, eta)) - h
    predicted = eta * (pi * advantages * (surprisal - h)).sum()
    assert torch.isclose(measured, predicted, rtol=0.02)


def test_four_quadrants():
    """Positive low-surprisal and negative high-surprisal responses lower entropy; the others raise it."""
    theta = torch.tensor([2.0, 0.0, -1.0], dtype=torch.float64)
    h = entropy(theta)
    likely, unlikely = 0, 2  # S(likely) < H < S(unlikely)
    surprisal = -torch.log_softmax(theta, dim=-1)
    assert surprisal[likely] < h < surprisal[unlikely]
    eta = 1e-3
    for action, advantage, sign in [(likely, 1.0, -1), (unlikely, -1.0, -1), (likely, -1.0, 1), (unlikely, 1.0, 1)]:
        change = entropy(natural_gradient_step(theta, sample_grad(theta, action, advantage), eta)) - h
        assert torch.sign(change) == sign


# ------------------------------------------------------------------ the theorem on AEM itself
# A two-token autoregressive policy: first token a1 in {0, 1, 2}, then a2 in {0, 1, 2} from a table row
# chosen by a1. Its responses are the 9 pairs, pi(a) = pi1(a1) * pi2(a2 | a1).
RESPONSES = list(itertools.product(range(3), range(3)))


def policy_logps(theta: torch.Tensor) -> torch.Tensor:
    """``(9,)`` log pi(a) of every response; ``theta`` = 3 first-token logits, then the 3 x 3 second-token table."""
    first = torch.log_softmax(theta[:3], dim=-1)
    second = torch.log_softmax(theta[3:].view(3, 3), dim=-1)
    return torch.stack([first[a] + second[a, b] for a, b in RESPONSES])


def response_entropy(theta: torch.Tensor) -> torch.Tensor:
    logp = policy_logps(theta)
    return -(logp.exp() * logp).sum()


def mean_token_entropy(theta: torch.Tensor) -> torch.Tensor:
    """``(9,)`` Hbar(a): the mean of the full-vocabulary token entropies along each response (AEM's statistic)."""
    first = torch.log_softmax(theta[:3], dim=-1)
    second = torch.log_softmax(theta[3:].view(3, 3), dim=-1)
    h1 = -(first.exp() * first).sum()
    h2 = -(second.exp() * second).sum(dim=-1)
    return torch.stack([(h1 + h2[a]) / 2 for a, _ in RESPONSES])


def two_token_theta(first: list[float], confident: list[float]) -> torch.Tensor:
    """First-token probabilities ``first``; after token 0 the ``confident`` second-token distribution, after
    tokens 1 and 2 a uniform one (uncertain responses)."""
    second = torch.tensor([confident, [1 / 3] * 3, [1 / 3] * 3], dtype=torch.float64)
    return torch.cat([torch.tensor(first, dtype=torch.float64).log(), second.log().flatten()])


def natural_gradient_update(theta: torch.Tensor, weights: torch.Tensor, eta: float) -> torch.Tensor:
    """``theta + eta * F^+ grad sum_a weights(a) log pi(a)``, the Fisher ``F`` taken over the 9 responses."""
    t = theta.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad((weights * policy_logps(t)).sum(), t)
    jac = torch.autograd.functional.jacobian(policy_logps, theta)  # (9, 12)
    pi = policy_logps(theta).exp()
    fisher = (pi[:, None, None] * jac[:, :, None] * jac[:, None, :]).sum(dim=0)
    return theta + eta * torch.linalg.pinv(fisher, hermitian=True) @ grad


def test_drift_metric_is_an_unbiased_estimate_of_the_theorems_drift():
    """``entropy_drift`` (logged as ``aem/drift``) has the theorem's drift ``E[A (S - H)]`` as its exact
    expectation over groups of i.i.d. responses to one state, and that drift is the entropy change of a
    natural-gradient step. The former metric, ``A * (Sbar - Hbar)`` with per-token means, is not."""
    theta = two_token_theta([0.5, 0.3, 0.2], [0.8, 0.15, 0.05])
    logp = policy_logps(theta)
    pi, surprisal = logp.exp(), -logp
    h = response_entropy(theta)
    advantage = torch.tensor([1.0, -0.5, 0.3, -1.0, 0.7, 0.2, -0.4, 0.9, -0.8], dtype=torch.float64)
    theorem = float((pi * advantage * (surprisal - h)).sum())

    # the estimator's exact expectation over every ordered group of 2 and of 3 responses (no sampling noise)
    for size in (2, 3):
        expected = 0.0
        for group in itertools.product(range(9), repeat=size):
            index = torch.tensor(group)
            estimate = entropy_drift(advantage[index], surprisal[index], torch.zeros(size, dtype=torch.long))
            expected += float(pi[index].prod()) * float(estimate)
        assert expected == pytest.approx(theorem, abs=1e-6)

    eta = 1e-4
    changed = response_entropy(natural_gradient_update(theta, pi * advantage, eta)) - h
    assert float(changed) == pytest.approx(eta * theorem, rel=0.02)

    old_metric = float((pi * advantage * (surprisal / 2 - mean_token_entropy(theta))).sum())
    assert abs(old_metric - theorem) > 0.5 * abs(theorem)


def _entropy_change(theta: torch.Tensor, reward, lam: float | None, group_size: int) -> float:
    """Entropy change of one natural-gradient GRPO step on a group whose responses occur exactly in proportion to
    pi (so the group update is the expected update), with AEM's alpha from ``trl_aem`` (``lam=None``: base GRPO)."""
    pi = policy_logps(theta).exp()
    counts = (pi * group_size).round().long()
    assert torch.allclose(counts.double() / group_size, pi), "group_size must make every pi(a) * size an integer"
    members = torch.repeat_interleave(torch.arange(9), counts)
    rewards = torch.tensor([reward(*RESPONSES[int(m)]) for m in members], dtype=torch.float64)
    advantages = rewards - rewards.mean()
    alpha = torch.ones_like(advantages)
    if lam is not None:
        stat = mean_token_entropy(theta)[members]
        alpha = aem_coefficients(stat, torch.zeros_like(members), lam=lam, min_range=0.1)
    weights = torch.zeros(9, dtype=torch.float64).index_add_(0, members, alpha * advantages) / group_size
    return float(response_entropy(natural_gradient_update(theta, weights, 1e-3)) - response_entropy(theta))


@pytest.mark.parametrize("lam", [1.0, -1.0])
def test_aem_moves_the_entropy_change_as_the_paper_states_and_where_that_holds(lam):
    """The paper: with AEM, entropy stays higher than under the base update while failures dominate and drops faster
    once successes dominate. On a policy whose confident responses (token 0, then a peaked second token) hold 35%
    of the probability, that is what AEM's alpha does; the reversed ablation (``lam=-1``) does the opposite.

    To first order the difference is ``-lam * Cov_pi(|alpha - 1| |S - H|, A)``: it depends on where successes sit,
    not on the success rate itself. When the confident responses hold most of the probability (80% below), the
    same two phases move the other way; a user reading AEM's entropy curves should know this.
    """
    fail_when_confident = lambda a1, a2: float(a1 != 0 and a2 == 0)  # noqa: E731 (success only in the tail)
    succeed_when_confident = lambda a1, a2: float(a1 == 0 or a2 == 0)  # noqa: E731
    sign = 1.0 if lam > 0 else -1.0

    minority = two_token_theta([0.35, 0.325, 0.325], [0.9, 0.05, 0.05])  # the paper's picture
    base_f = _entropy_change(minority, fail_when_confident, None, 1200)
    aem_f = _entropy_change(minority, fail_when_confident, lam, 1200)
    base_s = _entropy_change(minority, succeed_when_confident, None, 1200)
    aem_s = _entropy_change(minority, succeed_when_confident, lam, 1200)
    assert base_f > 0 > base_s  # failures dominate (success rate 0.22): GRPO raises entropy; then it lowers it
    assert sign * (aem_f - base_f) > 0.05 * abs(base_f)  # AEM keeps entropy higher while failures dominate
    assert sign * (aem_s - base_s) < -0.05 * abs(base_s)  # and lowers it faster once successes dominate (0.57)

    dominant = two_token_theta([0.8, 0.1, 0.1], [0.9, 0.05, 0.05])
    base_f = _entropy_change(dominant, fail_when_confident, None, 600)
    aem_f = _entropy_change(dominant, fail_when_confident, lam, 600)
    base_s = _entropy_change(dominant, succeed_when_confident, None, 600)
    aem_s = _entropy_change(dominant, succeed_when_confident, lam, 600)
    assert sign * (aem_f - base_f) < 0 < sign * (aem_s - base_s)

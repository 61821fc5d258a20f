"""The AEM step of one batch without a trainer: rows -> responses (one per span), alpha per scope with the aem/*
metrics, the control arm, the shuffled ablation, per-span advantages, and the form the processes exchange."""

from __future__ import annotations

import pytest
import torch

from trl_aem import aem_coefficients
from trl_aem.aem import (
    AEMStep,
    Responses,
    aem_step,
    collect_responses,
    modulate_batch,
    modulated_advantages,
    scope_ids,
)
from trl_aem.modulation import entropy_drift, response_spans

NAN = float("nan")


def _batch():
    """Two rows of one task group answering the same prompt: row 0 a two-turn row (model, observation, model), row 1
    one response followed by padding."""
    loss_mask = torch.tensor([[1, 1, 0, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    entropy = torch.tensor([[0.5, 1.5, 9.0, 2.0, 2.5, 3.0], [0.2, 0.4, 0.6, 0.8, 9.0, 9.0]])
    logp = -torch.tensor([[1.0, 3.0, 9.0, 0.5, 0.5, 2.0], [0.1, 0.2, 0.3, 0.4, 9.0, 9.0]])
    return dict(
        loss_mask=loss_mask,
        advantages=torch.tensor([0.75, -0.75]),
        token_entropy=entropy,
        token_logp=logp,
        prompt_ids=torch.tensor([[0, 3, 4], [3, 4, 4]]),  # left padding: row 0's prompt is (3, 4) and so is...
        prompt_mask=torch.tensor([[0, 1, 1], [1, 1, 0]]),  # ...row 1's (the mask picks the real tokens)
        completion_ids=torch.tensor([[10, 11, 50, 12, 13, 14], [10, 15, 16, 17, 0, 0]]),
        row_group=torch.tensor([7, 7]),
        row_episode=torch.tensor([3, 4]),
    )


def test_collect_responses_gives_one_entry_per_span():
    responses, spans = collect_responses(**_batch())
    assert len(responses) == 3
    assert spans.row.tolist() == [0, 0, 1] and spans.start.tolist() == [0, 3, 0] and spans.length.tolist() == [2, 3, 4]
    torch.testing.assert_close(responses.entropy, torch.tensor([1.0, 2.5, 0.5]))  # span means
    torch.testing.assert_close(responses.surprisal, torch.tensor([2.0, 1.0, 0.25]))  # mean of -log p
    torch.testing.assert_close(responses.response_surprisal, torch.tensor([4.0, 3.0, 1.0]))  # sum of -log p
    assert responses.advantage.tolist() == [0.75, 0.75, -0.75]  # each span carries its row's advantage
    assert responses.group.tolist() == [7, 7, 7] and responses.episode.tolist() == [3, 3, 4]
    # first responses of both rows answered the same state (the same unpadded prompt); turn 2 of row 0 another
    state = responses.state.tolist()
    assert state[0] == state[2] != state[1] and all(0 <= key < 2**48 for key in state)


def _responses(entropy, group, episode, advantage=None, surprisal=None, state=None) -> Responses:
    entropy = torch.tensor(entropy)
    n = entropy.numel()
    advantage = torch.tensor(advantage) if advantage is not None else torch.linspace(-1.0, 1.0, n)
    surprisal = torch.tensor(surprisal) if surprisal is not None else entropy.flip(0) * 2
    return Responses(
        entropy=entropy,
        surprisal=surprisal,
        response_surprisal=surprisal * 3,
        advantage=advantage,
        group=torch.tensor(group),
        episode=torch.tensor(episode),
        state=torch.tensor(state) if state is not None else torch.tensor(group) * 1000,
    )


GROUP = [0, 0, 0, 0, 1, 1, 1, 1]
EPISODE = [0, 0, 1, 1, 2, 2, 3, 3]
ENTROPY = [0.2, 1.4, 0.9, 0.5, 2.0, 0.1, 1.0, 1.6]


@pytest.mark.parametrize(
    ("scope", "ids"), [("group", GROUP), ("trajectory", EPISODE), ("batch", [0] * 8)], ids=["group", "traj", "batch"]
)
@pytest.mark.parametrize("statistic", ["entropy", "surprisal"])
def test_alpha_is_aem_coefficients_in_the_configured_scope(scope, ids, statistic):
    responses = _responses(ENTROPY, GROUP, EPISODE)
    assert scope_ids(responses, scope).tolist() == ids
    step = aem_step(responses, scope=scope, statistic=statistic, lam=1.5, min_range=0.05)
    assert isinstance(step, AEMStep)
    stat = responses.entropy if statistic == "entropy" else responses.surprisal
    torch.testing.assert_close(step.alpha, aem_coefficients(stat, torch.tensor(ids), lam=1.5, min_range=0.05))
    assert step.metrics["aem/alpha_mean"] == pytest.approx(float(step.alpha.mean()))
    assert step.metrics["aem/alpha_max"] == pytest.approx(float(step.alpha.max()))


def test_an_unknown_scope_is_refused():
    with pytest.raises(ValueError, match="aem_scope must be 'group', 'trajectory' or 'batch', got 'task'"):
        aem_step(_responses(ENTROPY, GROUP, EPISODE), scope="task")


def test_metrics_and_the_control_arm():
    entropy = [*ENTROPY[:7], NAN]  # one response without a recorded statistic
    state = [1, 1, 1, 2, 2, 3, 4, 4]  # three states answered more than once
    responses = _responses(entropy, GROUP, EPISODE, state=state)
    step = aem_step(responses)
    documented = {
        "aem/alpha_mean",
        "aem/alpha_std",
        "aem/alpha_min",
        "aem/alpha_max",
        "aem/guarded_frac",
        "aem/response_entropy",
        "aem/drift",
        "aem/drift_base",
    }
    assert documented <= set(step.metrics)
    assert set(step.metrics) == documented | {"aem/missing_frac", "aem/drift_coverage"}
    assert step.metrics["aem/missing_frac"] == pytest.approx(1 / 8)
    assert step.metrics["aem/response_entropy"] == pytest.approx(sum(ENTROPY[:7]) / 7, rel=1e-6)
    assert step.metrics["aem/drift_coverage"] == pytest.approx(7 / 8)  # the response alone in state 3 does not count
    assert float(step.alpha[7]) == 1.0  # no statistic: alpha 1
    finite = step.alpha[:7]
    assert step.metrics["aem/alpha_min"] == pytest.approx(float(finite.min()))
    assert step.metrics["aem/alpha_std"] == pytest.approx(float(finite.std(unbiased=False)))
    assert step.metrics["aem/guarded_frac"] == 0.0
    base_drift = float(entropy_drift(responses.advantage, responses.response_surprisal, responses.state))
    drift = float(
        entropy_drift(responses.advantage * step.alpha.double(), responses.response_surprisal, responses.state)
    )
    assert step.metrics["aem/drift_base"] == pytest.approx(base_drift)
    assert step.metrics["aem/drift"] == pytest.approx(drift) and drift != pytest.approx(base_drift)

    control = aem_step(responses, use_aem=False)
    assert control.alpha is None
    assert control.metrics["aem/drift"] == pytest.approx(base_drift)  # the control arm's drift is the base drift
    assert not any(key.startswith("aem/alpha") for key in control.metrics) and "aem/drift_base" not in control.metrics
    for key in ("aem/missing_frac", "aem/response_entropy", "aem/drift_coverage"):
        assert control.metrics[key] == step.metrics[key]


def test_a_batch_without_repeated_states_logs_no_drift():
    responses = _responses(ENTROPY, GROUP, EPISODE, state=list(range(8)))
    step = aem_step(responses)
    assert "aem/drift" not in step.metrics and "aem/drift_base" not in step.metrics  # NaN is not logged
    assert step.metrics["aem/drift_coverage"] == 0.0


def test_the_shuffle_permutes_alpha_within_groups():
    responses = _responses(ENTROPY, GROUP, EPISODE)
    alpha = aem_step(responses).alpha
    changed = False
    for seed in range(5):
        shuffled = aem_step(responses, shuffle_generator=torch.Generator().manual_seed(seed)).alpha
        for group in (0, 1):
            members = responses.group == group
            assert sorted(shuffled[members].tolist()) == pytest.approx(sorted(alpha[members].tolist()))
        changed |= not torch.equal(shuffled, alpha)
    assert changed
    again = aem_step(responses, shuffle_generator=torch.Generator().manual_seed(3)).alpha
    assert torch.equal(again, aem_step(responses, shuffle_generator=torch.Generator().manual_seed(3)).alpha)


def test_modulated_advantages_put_each_spans_alpha_on_its_tokens():
    mask = torch.tensor([[1, 1, 0, 1, 1, 0], [0, 1, 1, 1, 0, 0]])
    spans = response_spans(mask)
    base = torch.tensor([2.0, -1.0])
    alpha = torch.tensor([0.5, 1.5, 0.8], dtype=torch.float64)
    advantages = modulated_advantages(base, alpha, spans)
    expected = torch.tensor([[1.0, 1.0, 2.0, 3.0, 3.0, 2.0], [-1.0, -0.8, -0.8, -0.8, -1.0, -1.0]])
    assert advantages.dtype == base.dtype
    torch.testing.assert_close(advantages, expected)  # outside spans the base advantage (masked by the loss)


def test_the_exchange_matrix_round_trips_exactly():
    responses = Responses(
        entropy=torch.tensor([0.123456789, NAN, 3.0]),
        surprisal=torch.tensor([1.0, 2.5, -0.0]),
        response_surprisal=torch.tensor([10.0, 7.25, 0.0]),
        advantage=torch.tensor([-1.5, 0.0, 2.0]),
        group=torch.tensor([0, 12345, 2**31 + 7]),
        episode=torch.tensor([9, 10, 2**40 + 1]),
        state=torch.tensor([2**48 - 1, 2**47 + 12345, 1]),  # conditioning keys are 48-bit
    )
    matrix = responses.as_matrix()
    assert matrix.shape == (3, 7) and matrix.dtype == torch.float64
    back = Responses.from_matrix(matrix)
    for name in ("group", "episode", "state"):
        assert getattr(back, name).dtype == torch.int64
        assert torch.equal(getattr(back, name), getattr(responses, name)), name
    for name in ("entropy", "surprisal", "response_surprisal", "advantage"):
        torch.testing.assert_close(getattr(back, name), getattr(responses, name).double(), equal_nan=True)
    assert len(back) == 3
    assert len(Responses.from_matrix(torch.zeros(0, 7))) == 0


def test_modulate_batch_runs_the_three_steps_on_trl_rows():
    """modulate_batch on TRL's row layout equals collect -> aem_step -> modulated_advantages done by hand, takes this
    process's share of a gathered batch, and leaves the base advantages alone for the control arm."""
    b = _batch()
    rows = {
        "prompt_ids": b["prompt_ids"],
        "prompt_mask": b["prompt_mask"],
        "completion_ids": b["completion_ids"],
        "completion_mask": torch.ones_like(b["loss_mask"]),
        "tool_mask": b["loss_mask"],  # the loss mask is completion_mask * tool_mask
        "advantages": b["advantages"],
    }
    stats = (b["token_entropy"], b["token_logp"])
    config = type("Config", (), dict(use_aem=True, aem_lambda=1.0, aem_min_range=0.1, aem_scope="group",
                                     aem_statistic="entropy"))  # fmt: skip
    result = modulate_batch(rows, b["row_group"], b["row_episode"], stats, config)
    responses, spans = collect_responses(
        b["loss_mask"], b["advantages"], *stats, b["prompt_ids"], b["prompt_mask"], b["completion_ids"],
        b["row_group"], b["row_episode"],
    )  # fmt: skip
    exchanged = Responses.from_matrix(responses.as_matrix())  # what the processes exchange (float64)
    alpha = aem_step(exchanged).alpha
    assert torch.equal(result.alpha, alpha)
    assert torch.equal(result.advantages, modulated_advantages(b["advantages"], alpha, spans))
    assert result.metrics == aem_step(exchanged).metrics

    # another process holds two responses first: this process's alpha is the slice after them
    other = Responses(*(getattr(responses, f)[:2] for f in ("entropy", "surprisal", "response_surprisal", "advantage",
                                                          "group", "episode", "state")))  # fmt: skip
    other.entropy = other.entropy + 5.0  # widen the group's range: alpha changes for everyone

    def gather(local):
        return torch.cat([other.as_matrix(), local]), 2

    gathered = modulate_batch(rows, b["row_group"], b["row_episode"], stats, config, gather=gather)
    full = Responses.from_matrix(torch.cat([other.as_matrix(), responses.as_matrix()]))
    assert torch.equal(gathered.alpha, aem_step(full).alpha[2:])

    config.use_aem = False
    control = modulate_batch(rows, b["row_group"], b["row_episode"], stats, config)
    assert control.alpha is None and control.advantages is b["advantages"] and "aem/drift" in control.metrics

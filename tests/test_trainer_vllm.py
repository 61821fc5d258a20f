"""The vLLM server path, with TRL's VLLMClient faked at its HTTP boundary (vLLM cannot run on CPU)."""

import math

import pytest

from trl_aem import AEMTrainer

from .conftest import length_reward
from .fake_vllm import FakeVLLMClient


@pytest.fixture
def fake_vllm(monkeypatch, make_model, tokenizer):
    import trl.generation.vllm_generation as vllm_generation

    monkeypatch.setattr(vllm_generation, "is_vllm_available", lambda *a, **k: True)
    monkeypatch.setattr(vllm_generation, "VLLMClient", FakeVLLMClient)
    FakeVLLMClient.instances.clear()
    FakeVLLMClient.policy = make_model(seed=5)
    FakeVLLMClient.eos_token_id = tokenizer.eos_token_id
    return FakeVLLMClient


def test_server_mode_takes_entropies_from_trls_recompute_pass(
    fake_vllm, make_model, make_config, tokenizer, prompt_dataset
):
    config = make_config(use_vllm=True, vllm_mode="server", max_steps=2)
    trainer = AEMTrainer(
        make_model(seed=5),
        config=config,
        train_dataset=prompt_dataset,
        processing_class=tokenizer,
        reward_funcs=length_reward,
    )
    assert trainer._stats_source == "recompute"
    forward_calls = [0]
    trainer.model.register_forward_pre_hook(lambda *_: forward_calls.__setitem__(0, forward_calls[0] + 1))
    trainer.train()
    client = fake_vllm.instances[0]
    assert client.generate_calls and client.weight_syncs >= 1
    history = trainer.state.log_history
    assert all(math.isfinite(h["loss"]) for h in history if "loss" in h)
    assert [h["aem/missing_frac"] for h in history if "aem/missing_frac" in h] == [0.0, 0.0]
    assert max(h["aem/alpha_std"] for h in history if "aem/alpha_std" in h) > 0
    # entropies of the recompute pass equal the training forward's on the first step (same weights)
    assert history[0]["aem/response_entropy"] == pytest.approx(history[0]["entropy"], abs=1e-4)
    # TRL runs one no-grad recompute forward and one training forward per step; AEM adds none
    assert forward_calls[0] == 2 * config.max_steps


def test_vllm_without_recompute_pass_is_refused_with_aem_and_trains_without(
    fake_vllm, make_model, make_config, tokenizer, prompt_dataset
):
    config = make_config(use_vllm=True, vllm_mode="server", vllm_importance_sampling_correction=False)
    with pytest.raises(ValueError, match="vllm_importance_sampling_correction=True.*use_aem=False"):
        AEMTrainer(make_model(seed=5), length_reward, config, prompt_dataset, processing_class=tokenizer)
    # the control arm accepts every configuration GRPOTrainer accepts: no statistic, no extra forward pass
    config = make_config(
        use_vllm=True, vllm_mode="server", vllm_importance_sampling_correction=False, use_aem=False, max_steps=1
    )
    trainer = AEMTrainer(make_model(seed=5), length_reward, config, prompt_dataset, processing_class=tokenizer)
    assert trainer._stats_source is None
    trainer.train()
    log = trainer.state.log_history[0]
    assert math.isfinite(log["loss"]) and not any(key.startswith("aem/") for key in log)


@pytest.mark.parametrize("mode", ["trajectory", "step"])
def test_multiturn_episodes_on_the_vllm_server_path(fake_vllm, make_model, make_config, tokenizer, mode):
    from .fake_envs import FixedTurnsEnv

    config = make_config(
        use_vllm=True,
        vllm_mode="server",
        max_steps=1,
        rollout_mode=mode,
        max_turns=3,
        max_turn_tokens=10,
        max_completion_length=96,
    )
    trainer = AEMTrainer(make_model(seed=5), FixedTurnsEnv, config, processing_class=tokenizer)
    trainer.train()
    calls = fake_vllm.instances[0].generate_calls
    episodes = trainer.last_episodes
    # one batched call per turn and wave (rollout_waves=2: episodes 0, 2, 4.. and 1, 3, 5..), for the
    # episodes still running, each response capped at max_turn_tokens
    waves = [episodes[0::2], episodes[1::2]]
    expected = [
        sum(len(e.turns) > t for e in waves[w]) for t in range(max(len(e.turns) for e in episodes)) for w in (0, 1)
    ]
    assert [c["num_prompts"] for c in calls] == [n for n in expected if n]
    assert all(c["max_tokens"] <= 10 for c in calls) and calls[0]["max_tokens"] == 10
    # vLLM's sampled log-probs reach TRL's importance-sampling correction; entropies come from its recompute pass
    assert all(turn.sampling_logps is not None for e in episodes for turn in e.turns)
    history = trainer.state.log_history[0]
    assert history["aem/missing_frac"] == 0.0 and history["aem/alpha_std"] > 0
    assert math.isfinite(history["loss"])

"""AEMTrainer on single-turn completions: correctness against GRPOTrainer and against recomputed entropies."""

import inspect
import math

import pytest
import torch
from trl import GRPOTrainer

from trl_aem import AEMTrainer, aem_coefficients
from trl_aem.modulation import entropy_drift, response_spans, span_means, span_sums, token_entropy

from .conftest import length_reward


def logged(trainer, key):
    return [h[key] for h in trainer.state.log_history if key in h]


def test_trains_with_alpha_varying_and_entropy_matching_trl(make_model, make_config, tokenizer, prompt_dataset):
    config = make_config(max_steps=3)
    trainer = AEMTrainer(
        make_model(),
        config=config,
        train_dataset=prompt_dataset,
        processing_class=tokenizer,
        reward_funcs=length_reward,
    )
    trainer.train()
    assert all(math.isfinite(x) for x in logged(trainer, "loss"))
    assert max(logged(trainer, "aem/alpha_std")) > 0.05
    assert min(logged(trainer, "aem/alpha_min")) < 1 < max(logged(trainer, "aem/alpha_max"))
    assert all(abs(m - 1) < 1e-5 for m in logged(trainer, "aem/alpha_mean"))
    assert logged(trainer, "aem/missing_frac") == [0.0] * 3
    for key in ("aem/guarded_frac", "aem/drift", "aem/drift_base", "aem/response_entropy"):
        assert len(logged(trainer, key)) == 3
    # Entropies recorded while sampling equal the ones TRL's training forward computes on the first step
    # (same weights, same temperature): the recorder measures the policy itself, with no extra forward.
    first = trainer.state.log_history[0]
    assert first["aem/response_entropy"] == pytest.approx(first["entropy"], abs=1e-3)
    assert trainer._tag_names == ["trl", "grpo", "aem"] and trainer._name == "AEM"
    assert "2605.00425" in trainer._paper["citation"]


def _one_batch(trainer, dataset, n_prompts):
    rows = [dataset[i] for i in range(n_prompts) for _ in range(trainer.num_generations)]
    trainer.model.train()
    with torch.no_grad():
        return trainer._generate_and_score_completions(rows)


@pytest.mark.parametrize("statistic", ["entropy", "surprisal"])
def test_advantages_are_base_times_alpha_of_the_policy_entropy(
    make_model, make_config, tokenizer, prompt_dataset, statistic
):
    config = make_config(temperature=0.8, aem_statistic=statistic, aem_lambda=1.5, max_completion_length=16)
    trainer = AEMTrainer(
        make_model(),
        config=config,
        train_dataset=prompt_dataset,
        processing_class=tokenizer,
        reward_funcs=length_reward,
    )
    out = _one_batch(trainer, prompt_dataset, 2)
    base = torch.tensor(list(trainer._logs["advantages"])[-8:])
    assert out["advantages"].shape == out["completion_ids"].shape

    # Recompute every token's entropy/log-prob with an ordinary forward pass of the policy.
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
    mask = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
    with torch.no_grad():
        logits = trainer.model(input_ids=ids, attention_mask=mask).logits
    t = out["completion_ids"].size(1)
    completion_logits = logits[:, -t - 1 : -1]
    ent = token_entropy(completion_logits, 0.8)
    logp = torch.log_softmax(completion_logits.float() / 0.8, -1).gather(-1, out["completion_ids"][..., None])[..., 0]
    spans = response_spans(out["completion_mask"])
    stat = span_means(ent if statistic == "entropy" else -logp, spans)
    alpha = aem_coefficients(stat, spans.row // 4, lam=1.5)
    assert alpha.std() > 0.01
    expected = base[:, None] * alpha[:, None]
    m = out["completion_mask"].bool()
    assert torch.allclose(out["advantages"][m], expected.expand_as(m)[m], atol=1e-4)
    # aem/drift: the theorem's drift estimated with response-level surprisals, per prompt (same state)
    surprisal = span_sums(-logp, spans)
    metrics = trainer._metrics["train"]
    state = spans.row // 4
    assert metrics["aem/drift_base"][-1] == pytest.approx(float(entropy_drift(base, surprisal, state)), rel=1e-3)
    assert metrics["aem/drift"][-1] == pytest.approx(float(entropy_drift(base * alpha, surprisal, state)), rel=1e-3)
    assert metrics["aem/drift_coverage"][-1] == 1.0


def _train_pair(make_model, make_config, make_grpo_config, tokenizer, dataset, **aem_overrides):
    config = make_config(max_steps=3, **aem_overrides)
    ref = GRPOTrainer(
        make_model(seed=3),
        reward_funcs=length_reward,
        args=make_grpo_config(max_steps=3),
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    ref.train()
    aem = AEMTrainer(
        make_model(seed=3),
        config=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        reward_funcs=length_reward,
    )
    aem.train()
    return ref, aem


@pytest.mark.parametrize("overrides", [dict(use_aem=False), dict(use_aem=True, aem_lambda=0.0)])
def test_control_arm_reproduces_grpo_exactly(
    make_model, make_config, make_grpo_config, tokenizer, prompt_dataset, overrides
):
    ref, aem = _train_pair(make_model, make_config, make_grpo_config, tokenizer, prompt_dataset, **overrides)
    assert logged(ref, "loss") == logged(aem, "loss")
    for (name, p), (_, q) in zip(ref.model.named_parameters(), aem.model.named_parameters(), strict=True):
        assert torch.equal(p, q), name
    assert logged(aem, "aem/response_entropy")  # the control arm still measures entropy


def test_aem_changes_the_update(make_model, make_config, make_grpo_config, tokenizer, prompt_dataset):
    ref, aem = _train_pair(make_model, make_config, make_grpo_config, tokenizer, prompt_dataset, aem_lambda=2.0)
    assert logged(ref, "loss") != logged(aem, "loss")


def test_no_additional_forward_calls(make_model, make_config, make_grpo_config, tokenizer, prompt_dataset):
    counts = {}
    for name in ("grpo", "aem"):
        model = make_model(seed=1)
        calls = [0]

        def count_call(*_, calls=calls):
            calls[0] += 1

        model.register_forward_pre_hook(count_call)
        config = make_config(max_steps=2)
        if name == "grpo":
            trainer = GRPOTrainer(
                model,
                reward_funcs=length_reward,
                args=make_grpo_config(max_steps=2),
                train_dataset=prompt_dataset,
                processing_class=tokenizer,
            )
        else:
            trainer = AEMTrainer(
                model,
                config=config,
                train_dataset=prompt_dataset,
                processing_class=tokenizer,
                reward_funcs=length_reward,
            )
        trainer.train()
        counts[name] = calls[0]
    assert counts["aem"] == counts["grpo"] > 0


BASE_ALGORITHMS = {
    "grpo": dict(loss_type="grpo"),
    "bnpo": dict(loss_type="bnpo"),
    "dr_grpo": dict(loss_type="dr_grpo", scale_rewards="none"),
    "dapo": dict(loss_type="dapo", epsilon_high=0.28),
    "cispo": dict(loss_type="cispo", epsilon_high=5.0),
    "sapo": dict(loss_type="sapo"),
    "luspo": dict(loss_type="luspo", importance_sampling_level="sequence"),
    "vespo": dict(loss_type="vespo"),
    "gspo": dict(loss_type="grpo", importance_sampling_level="sequence"),
    "scale_batch": dict(scale_rewards="batch"),
    # DeepSWE's loss settings; its mask_truncated_completions=True is tested in tests/trl_compat (this random tiny
    # model seldom ends a completion within the test's budget, so here it masks every row and nothing updates)
    "deepswe_style": dict(loss_type="dapo", scale_rewards="none", epsilon_high=0.28, beta=0.0),
    "kl_beta": dict(beta=0.04),
    "num_iterations": dict(num_iterations=2, max_steps=4),
    "grad_accum": dict(gradient_accumulation_steps=2, per_device_train_batch_size=4),
    "misaligned_accum": dict(gradient_accumulation_steps=2, per_device_train_batch_size=4, steps_per_generation=1),
}


@pytest.mark.parametrize("name", list(BASE_ALGORITHMS))
def test_composes_with_base_algorithms(model_path, make_model, make_config, tokenizer, prompt_dataset, name):
    config = make_config(**BASE_ALGORITHMS[name])
    before = {n: p.detach().clone() for n, p in make_model(seed=2).named_parameters()}
    trainer = AEMTrainer(
        model_path, config=config, train_dataset=prompt_dataset, processing_class=tokenizer, reward_funcs=length_reward
    )
    trainer.train()
    losses = logged(trainer, "loss")
    assert losses and all(math.isfinite(x) for x in losses)
    assert any(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters())
    assert logged(trainer, "aem/alpha_std"), "alpha metrics must be logged"
    # alpha is computed once per generation batch, however many optimisation passes reuse it
    generations = math.ceil(
        config.max_steps * config.gradient_accumulation_steps / (config.steps_per_generation * config.num_iterations)
    )
    assert trainer._aem_round == generations


def test_scopes_and_shuffle(make_model, make_config, tokenizer, prompt_dataset):
    # single-turn: a trajectory is one response, so trajectory scope leaves every alpha at 1
    trainer = AEMTrainer(
        make_model(),
        config=make_config(aem_scope="trajectory"),
        train_dataset=prompt_dataset,
        processing_class=tokenizer,
        reward_funcs=length_reward,
    )
    trainer.train()
    assert logged(trainer, "aem/guarded_frac") == [1.0, 1.0]
    assert logged(trainer, "aem/alpha_std") == [0.0, 0.0]
    for scope in ("batch",):
        trainer = AEMTrainer(
            make_model(),
            config=make_config(aem_scope=scope, aem_shuffle=True),
            train_dataset=prompt_dataset,
            processing_class=tokenizer,
            reward_funcs=length_reward,
        )
        trainer.train()
        assert max(logged(trainer, "aem/alpha_std")) > 0


def test_eval_logs_aem_metrics(make_model, make_config, tokenizer, prompt_dataset):
    config = make_config(eval_strategy="steps", eval_steps=2, per_device_eval_batch_size=8)
    trainer = AEMTrainer(
        make_model(),
        config=config,
        train_dataset=prompt_dataset,
        eval_dataset=prompt_dataset.select(range(4)),
        processing_class=tokenizer,
        reward_funcs=length_reward,
    )
    trainer.train()
    evals = [h for h in trainer.state.log_history if "eval_loss" in h]
    assert evals and "eval_aem/alpha_std" in evals[0] and "eval_aem/response_entropy" in evals[0]


def test_clear_errors(make_model, make_config, tokenizer, prompt_dataset):
    model = make_model()
    with pytest.raises(ValueError, match="reward_funcs"):
        AEMTrainer(model, config=make_config(), train_dataset=prompt_dataset, processing_class=tokenizer)
    with pytest.raises(TypeError, match="once"):
        AEMTrainer(
            model,
            args=make_config(),
            config=make_config(),
            train_dataset=prompt_dataset,
            processing_class=tokenizer,
            reward_funcs=length_reward,
        )
    with pytest.raises(TypeError, match="AEMConfig or a trl.GRPOConfig"):
        AEMTrainer(model, length_reward, {"learning_rate": 1e-3}, prompt_dataset, processing_class=tokenizer)


def test_takes_grpo_trainer_arguments_by_name_and_position(
    make_model, make_config, make_grpo_config, tokenizer, prompt_dataset
):
    """A TRL user changes one import: GRPOTrainer's keywords, its positional order and a plain GRPOConfig work."""
    with pytest.warns(UserWarning, match="converted the GRPOConfig to an AEMConfig"):
        by_name = AEMTrainer(
            model=make_model(),
            reward_funcs=length_reward,
            args=make_grpo_config(max_steps=1),
            train_dataset=prompt_dataset,
            processing_class=tokenizer,
        )
    assert by_name.args.use_aem and by_name.args.aem_lambda == 1.0 and by_name.args.max_steps == 1
    by_name.train()
    assert logged(by_name, "aem/alpha_std")

    positional = AEMTrainer(make_model(), length_reward, make_config(), prompt_dataset, None, tokenizer)
    assert positional.env_factory is None and positional.reward_func_names == ["length_reward"]
    assert positional.train_dataset is prompt_dataset


def test_the_environment_form_still_works(make_model, make_config, tokenizer):
    from trl_aem.envs import KeywordEnv

    config = make_config(max_turns=2, rollout_mode="step", max_turn_tokens=8)
    for env in (KeywordEnv, lambda: KeywordEnv()):
        trainer = AEMTrainer(make_model(), env, config, processing_class=tokenizer)
        assert trainer.env_factory is env and trainer.reward_func_names == ["env_return"]
    trainer = AEMTrainer(make_model(), env=KeywordEnv, args=config, processing_class=tokenizer)
    assert trainer.env_factory is KeywordEnv
    with pytest.raises(TypeError, match="get_env"):
        AEMTrainer(make_model(), "keyword", config, processing_class=tokenizer)
    with pytest.raises(TypeError, match="multiple values for argument 'args'"):
        AEMTrainer(make_model(), KeywordEnv, config, args=config, processing_class=tokenizer)
    with pytest.raises(TypeError, match="unexpected keyword argument 'enviroment'"):
        AEMTrainer(make_model(), enviroment=KeywordEnv, args=config, processing_class=tokenizer)
    parameters = list(inspect.signature(AEMTrainer.__init__).parameters)
    assert parameters[:4] == ["self", "model", "reward_funcs", "args"] and parameters[-2:] == ["env", "config"]


def test_tiny_is_a_model_built_offline(make_config, tokenizer, prompt_dataset, tmp_path, monkeypatch):
    """``AEMTrainer("tiny", env, config)`` downloads nothing: the tiny model, its tokenizer trained on the environment's
    text (the environment has an expert) and passed as processing_class; sized for a tokenizer given; the default
    tokenizer for single-turn training; a local folder named ``tiny`` is still loaded as a folder."""
    from trl_aem.envs import KeywordEnv

    config = make_config(max_turns=2, rollout_mode="step", max_turn_tokens=8, max_steps=1)
    trainer = AEMTrainer("tiny", KeywordEnv, config)
    observation = KeywordEnv().reset(KeywordEnv().tasks("train")[0])
    assert len(trainer.processing_class(observation).input_ids) < len(tokenizer(observation).input_ids)
    assert trainer.model.config.vocab_size == len(trainer.processing_class)
    trainer.train()
    assert trainer.state.global_step == 1 and logged(trainer, "env/success_rate")

    given = AEMTrainer("tiny", KeywordEnv, config, processing_class=tokenizer)
    assert given.processing_class is tokenizer and given.model.config.vocab_size == len(tokenizer)
    single = AEMTrainer("tiny", length_reward, config, prompt_dataset)
    assert single.env_factory is None and single.model.config.vocab_size == len(tokenizer)

    single.model.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    monkeypatch.chdir(tmp_path)
    saved = AEMTrainer("tiny", length_reward, config, prompt_dataset)
    assert saved.model.config.name_or_path == "tiny"


def test_continuous_batching_control_arm_trains_and_aem_uses_trls_recompute_pass(
    make_model, make_config, tokenizer, prompt_dataset
):
    cb = dict(use_transformers_continuous_batching=True, max_steps=1)
    with pytest.raises(ValueError, match="use_transformers_continuous_batching=False.*use_aem=False"):
        AEMTrainer(make_model(), length_reward, make_config(**cb), prompt_dataset, processing_class=tokenizer)
    control = AEMTrainer(
        make_model(), length_reward, make_config(use_aem=False, **cb), prompt_dataset, processing_class=tokenizer
    )
    control.train()
    assert control._stats_source is None and not logged(control, "aem/drift")
    assert all(math.isfinite(x) for x in logged(control, "loss"))
    # misaligned accumulation makes TRL run its old-log-prob pass: AEM takes its entropies from there
    aem = AEMTrainer(
        make_model(),
        length_reward,
        make_config(steps_per_generation=2, per_device_train_batch_size=4, **cb),
        prompt_dataset,
        processing_class=tokenizer,
    )
    assert aem._stats_source == "recompute"
    aem.train()
    assert logged(aem, "aem/missing_frac") == [0.0] and logged(aem, "aem/alpha_std")[0] > 0


@pytest.mark.parametrize("model_kind", ["plain", "peft"])
def test_recorded_statistics_are_the_policys_under_repetition_penalty(
    make_model, make_config, tokenizer, prompt_dataset, model_kind
):
    """transformers applies ``repetition_penalty`` to the logits it samples from; the recorder reads the policy's own
    distribution (what TRL's loss and the vLLM recompute pass use), so recorded entropies equal the training
    forward's."""
    peft_config = None
    if model_kind == "peft":
        from peft import LoraConfig

        peft_config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    config = make_config(repetition_penalty=3.0, max_steps=1, temperature=0.9)
    trainer = AEMTrainer(
        make_model(), length_reward, config, prompt_dataset, processing_class=tokenizer, peft_config=peft_config
    )
    trainer.train()
    first = trainer.state.log_history[0]
    assert first["aem/response_entropy"] == pytest.approx(first["entropy"], abs=1e-4)  # penalised: 2e-3 off

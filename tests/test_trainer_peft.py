"""AEM with LoRA and 4-bit QLoRA (real PEFT, real bitsandbytes on CPU)."""

import math

import torch
from peft import LoraConfig

from trl_aem import AEMTrainer

from .conftest import length_reward


def _logged(trainer, key):
    return [h[key] for h in trainer.state.log_history if key in h]


def test_lora(make_model, make_config, tokenizer, prompt_dataset):
    peft_config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    trainer = AEMTrainer(
        make_model(),
        config=make_config(learning_rate=1e-2, beta=0.04),
        train_dataset=prompt_dataset,
        processing_class=tokenizer,
        reward_funcs=length_reward,
        peft_config=peft_config,
    )
    lora_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_B" in n}
    base_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora" not in n}
    trainer.train()
    params = dict(trainer.model.named_parameters())
    assert any(not torch.equal(lora_before[n], params[n]) for n in lora_before), "LoRA weights must train"
    assert all(torch.equal(base_before[n], params[n]) for n in base_before), "base weights must stay frozen"
    assert max(_logged(trainer, "aem/alpha_std")) > 0
    assert _logged(trainer, "aem/missing_frac") == [0.0, 0.0]
    assert all(math.isfinite(k) for k in _logged(trainer, "kl"))


def test_qlora_4bit(model_path, make_config, tokenizer, prompt_dataset):
    from transformers import BitsAndBytesConfig

    quantization = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32
    )
    peft_config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    config = make_config(learning_rate=1e-2, model_init_kwargs={"dtype": torch.float32})
    trainer = AEMTrainer(
        model_path,
        config=config,
        train_dataset=prompt_dataset,
        processing_class=tokenizer,
        reward_funcs=length_reward,
        peft_config=peft_config,
        quantization_config=quantization,
    )
    import bitsandbytes as bnb

    assert any(isinstance(m, bnb.nn.Linear4bit) for m in trainer.model.modules()), "base layers must be 4-bit"
    lora_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_B" in n}
    trainer.train()
    params = dict(trainer.model.named_parameters())
    assert any(not torch.equal(lora_before[n], params[n]) for n in lora_before)
    assert max(_logged(trainer, "aem/alpha_std")) > 0
    assert all(math.isfinite(x) for x in _logged(trainer, "loss"))

"""AEMTrainer and AEMConfig: drop-in GRPO behaviour, the AEM math, statistic sources, PEFT, vLLM, DDP."""

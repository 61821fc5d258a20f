"""The rollout package: the multi-turn engine, prompts, settings, playing episodes, step and trajectory rows, and
the capture of the token statistics of TRL-generated batches."""

"""The multi-turn engine, prompts and multi-turn training through AEMTrainer."""

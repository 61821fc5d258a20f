"""AlfWorldEnv: the environment and its offline game generator."""

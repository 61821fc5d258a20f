"""Environments: the contract, the worker pool, the registry and every built-in environment."""

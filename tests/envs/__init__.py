"""Environments: the worker pool, ALFWorld, WebShop and SWE."""

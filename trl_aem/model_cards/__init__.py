"""Model card templates shipped as package data (read with ``importlib.resources``); see ``SPEC.md``."""

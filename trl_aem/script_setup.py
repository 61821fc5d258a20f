"""Imported first by trl_aem's example scripts and benchmarks, before ``trl`` / ``trl_aem``'s trainer::

    import trl_aem.script_setup  # noqa: F401  (known third-party noise off, torch threads; see trl_aem.runtime)

Runs :func:`trl_aem.runtime.setup_process` once, on import: the filters must be in place before ``trl`` imports
``peft`` (and with it bitsandbytes, which prints at import), and the thread count before the first torch op.
"""

from __future__ import annotations

from .runtime import setup_process

THREADS = setup_process()

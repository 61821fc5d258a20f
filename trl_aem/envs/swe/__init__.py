"""Software-engineering agents: ``SWEEnv``, its sandbox, offline SWE-smith-style tasks and real instances.

- :mod:`.env`: :class:`SWEEnv` (the TextEnv) and its tool-call format;
- :mod:`.sandbox`: :class:`Sandbox`, the local jail for untrusted commands;
- :mod:`.generator` / :mod:`.tasks`: offline bug-injection tasks and loaders in the SWE-bench schema;
- :mod:`.workspace` / :mod:`.docker`: the local and Docker back ends.
"""

from .env import SYSTEM_PROMPT, SWEEnv, parse_action
from .sandbox import CommandResult, PathEscape, Sandbox, SandboxError, SandboxLimits, SandboxUnavailable
from .tasks import SCHEMA, load_tasks, normalize_task, offline_tasks

__all__ = [
    "SCHEMA",
    "SYSTEM_PROMPT",
    "CommandResult",
    "PathEscape",
    "SWEEnv",
    "Sandbox",
    "SandboxError",
    "SandboxLimits",
    "SandboxUnavailable",
    "load_tasks",
    "normalize_task",
    "offline_tasks",
    "parse_action",
]

"""Process set-up for trl_aem's commands, examples and benchmarks: known third-party noise off, sane torch threads.

``trl-aem`` (``cli.main``), the example scripts and the benchmarks call :func:`setup_process` before anything else
(the scripts through ``import trl_aem.script_setup``, which must come before their first ``trl`` import:
bitsandbytes prints its line while ``trl`` imports ``peft``). ``import trl_aem`` installs the noise filters only
(so a script that imports ``trl_aem`` before ``trl`` starts quiet too); a library user's torch threads are left
alone unless the script calls :func:`configure_threads` itself.

* :func:`quiet_third_party` installs narrowly targeted filters, each for one known message that says nothing about
  the user's run (listed in :data:`NOISE`, with why it is noise here). Every other warning and log line is kept.
* :func:`configure_threads` picks torch's intra-op thread count so that a run does not oversubscribe the CPU (see
  ``docs/cpu.md`` for the measurements behind the default). ``OMP_NUM_THREADS`` or ``TRL_AEM_THREADS`` override it.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from dataclasses import dataclass

__all__ = ["NOISE", "Noise", "configure_threads", "default_threads", "quiet_third_party", "setup_process"]

THREADS_ENV = "TRL_AEM_THREADS"


@dataclass(frozen=True)
class Noise:
    """One known third-party message that is dropped: from ``source`` (a logger name, or ``"warnings"`` for a Python
    warning of ``category`` raised in a module matching ``module``), whose text matches ``pattern``."""

    source: str
    pattern: str
    why: str
    category: type[Warning] | None = None
    module: str = ""
    action: str = "drop"  # or "shorten": the record is kept, its text cut to the first line and a summary


NOISE: tuple[Noise, ...] = (
    Noise(
        "bitsandbytes.backends.cpu.ops",
        r"Failed to load CPU gemm_4bit_forward from kernels-community",
        "bitsandbytes, imported by peft whenever trl is, tries to fetch an optional CPU kernel from the Hub "
        "(kernels-community/quantization-bitsandbytes) on CPUs with AVX512-BF16 and falls back to its own CPU code "
        "when it cannot (offline, or the publisher's trust cannot be checked). 4-bit and 8-bit loading, QLoRA and "
        "AdamW8bit work with the fallback (tests/test_trainer_peft.py); the line asks for `pip install kernels`, "
        "which would not change that, and comes before anything the command does.",
    ),
    Noise(
        "kernels._internals.hf_hub",
        r"Skipping publisher trust check for 'kernels-community/quantization-bitsandbytes'",
        "the same fetch seen from the `kernels` package when HF_HUB_OFFLINE=1. Only this repository's line is "
        "dropped: a kernel the user asks for keeps its trust message.",
    ),
    Noise(
        "warnings",
        r"`(is_)?gradient_checkpointing(_enable|_disable|_kwargs)?` is deprecated and will be removed in v6",
        "transformers 5 renamed gradient checkpointing to activation checkpointing. TRL's configs declare the old "
        "`gradient_checkpointing` field with a default (trl/trainer/base_config.py), so every GRPOConfig / SFTConfig "
        "warns whatever the user passed, and TRL's generation path (trl/models/utils.py) calls the old model "
        "methods at every generation batch. Neither is in the user's (nor trl_aem's) code.",
        category=FutureWarning,
        module=r"transformers\.",
    ),
    Noise(
        "trl.trainer.grpo_trainer",
        r"(\[RANK \d+\] )?All reward functions returned None for the following kwargs",
        "with an environment, a reward of None is how trl_aem marks a faulted episode (an environment error or "
        "timeout): it is counted in env/errors and env/timeouts, and three all-faulted batches stop the run with the "
        "first error. TRL's warning (through accelerate's logger, hence the '[RANK n]' prefix) then prints the whole "
        "row: the prompt messages, the completion, the task as JSON (task_json) and the Episode. It is shortened to "
        "the row's keys and the episode's one-line repr, not dropped, as it is TRL's word for a single-turn reward "
        "function that returned None too.",
        action="shorten",
    ),
)

_ROW_CHARS = 300  # a row dump longer than this is summarised


class _NoiseFilter(logging.Filter):
    """Drops the records of one logger whose raw message (before %-formatting) starts with ``pattern``."""

    def __init__(self, pattern: str):
        super().__init__()
        self.pattern = re.compile(pattern)

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.match(str(record.msg))


class _ShortNoneRewardWarning(_NoiseFilter):
    """Keeps TRL's "All reward functions returned None" warning but replaces the dump of the row (hundreds of token
    ids and the whole conversation) with the row's keys and, with an environment, the episode's short repr."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        match = self.pattern.match(text)
        if match and "\n" in text:
            rank = match.group(1) or ""
            row = text.split("\n", 2)[1]
            keys = ", ".join(dict.fromkeys(_top_level_keys(row)))
            summary = row if len(row) <= _ROW_CHARS else f"a row with keys {keys}"
            episode = re.search(r"'episode': (Episode\(.*?\))(?:, '|}$)", row)
            if episode and len(row) > _ROW_CHARS:
                summary += f"; {episode.group(1)}"
            record.msg = (
                f"{rank}All reward functions returned None for {summary}. With an environment this is a faulted episode "
                "(counted in env/errors, env/timeouts); otherwise make at least one reward function return a reward."
            )
            record.args = ()
        return True


def _top_level_keys(text: str) -> list[str]:
    """The keys of the outermost dict in ``text`` (a dict's repr), skipping nested containers and strings."""
    keys: list[str] = []
    depth, quote, i = 0, "", 0
    while i < len(text):
        char = text[i]
        if quote:
            if char == "\\":
                i += 1
            elif char == quote:
                quote = ""
        elif char in "'\"":
            key = re.match(r"""(['"])(\w+)\1: """, text[i:]) if depth == 1 else None
            if key:
                keys.append(key.group(2))
            quote = char
        elif char in "{[(":
            depth += 1
        elif char in "}])":
            depth -= 1
        i += 1
    return keys


_INSTALLED: dict[str, logging.Filter] = {}
_TORCH_DEFAULT: int | None = None  # torch's thread count before this module changed it


def quiet_third_party() -> None:
    """Install the filters of :data:`NOISE` (idempotent). Logging filters sit on the named loggers (created here if
    the library is not imported yet, so they are in place before its import prints); a warning filter matches the
    message, the category and the module that raises it."""
    for noise in NOISE:
        if noise.source == "warnings":
            warnings.filterwarnings("ignore", message=noise.pattern, category=noise.category, module=noise.module)
            continue
        key = f"{noise.source}:{noise.pattern}"
        if key not in _INSTALLED:
            _INSTALLED[key] = (
                _ShortNoneRewardWarning(noise.pattern) if noise.action == "shorten" else _NoiseFilter(noise.pattern)
            )
            logging.getLogger(noise.source).addFilter(_INSTALLED[key])


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _cgroup_cpu_limit() -> float | None:
    """The container's CPU quota in cores (cgroup v2 ``cpu.max`` or v1 ``cfs_quota_us / cfs_period_us``), if any."""
    candidates = [("/sys/fs/cgroup/cpu.max", None), ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "cpu.cfs_period_us")]
    for path, period_name in candidates:
        try:
            with open(path) as f:
                fields = f.read().split()
            if period_name is None:
                quota, period = fields[0], fields[1]
            else:
                with open(os.path.join(os.path.dirname(path), period_name)) as f:
                    quota, period = fields[0], f.read().strip()
            if quota not in ("max", "-1") and int(period) > 0:
                return int(quota) / int(period)
        except (OSError, ValueError, IndexError):
            continue
    return None


def default_threads() -> int:
    """torch threads per process when nothing overrides them. The cores this process may use (torch's own default,
    the physical cores, bounded by the CPU affinity and a container's quota) are shared among the processes of this
    machine (``LOCAL_WORLD_SIZE`` under torchrun / accelerate); with more than two per process one is left to the
    environment workers, the rollout loop and the rest of the machine; with two or fewer, one thread. On 2 cores
    that is 1: measured in docs/cpu.md, two threads made a run several times slower as soon as anything else was
    busy, and gained little on an idle machine."""
    global _TORCH_DEFAULT
    if _TORCH_DEFAULT is None:
        import torch

        _TORCH_DEFAULT = torch.get_num_threads()
    cores = float(min(_TORCH_DEFAULT, _available_cores()))
    quota = _cgroup_cpu_limit()
    if quota is not None:
        cores = min(cores, max(1.0, quota))
    try:
        local_world = max(1, int(os.environ.get("LOCAL_WORLD_SIZE") or 1))
    except ValueError:
        local_world = 1
    per_process = int(cores) // local_world
    return per_process - 1 if per_process > 2 else 1


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads and return the count in use. ``threads`` wins; else ``TRL_AEM_THREADS``; else,
    when ``OMP_NUM_THREADS`` is set, torch's own choice from it is kept; else :func:`default_threads`."""
    import torch

    if threads is None and os.environ.get(THREADS_ENV):
        try:
            threads = int(os.environ[THREADS_ENV])
        except ValueError:
            raise SystemExit(
                f"{THREADS_ENV} must be a whole number of threads, got {os.environ[THREADS_ENV]!r}"
            ) from None
    if threads is None and os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    threads = default_threads() if threads is None else threads
    if threads < 1:
        raise SystemExit(f"torch threads must be at least 1, got {threads}")
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def setup_process(threads: int | None = None) -> int:
    """:func:`quiet_third_party` then :func:`configure_threads`; returns the thread count."""
    quiet_third_party()
    return configure_threads(threads)

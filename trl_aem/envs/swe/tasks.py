"""SWE task sources, all in the SWE-bench instance schema.

Fields: ``instance_id``, ``repo``, ``base_commit``, ``problem_statement``, ``patch`` (the gold fix),
``test_patch``, ``FAIL_TO_PASS`` and ``PASS_TO_PASS`` (lists of test ids; SWE-bench's datasets store them
as JSON strings, which :func:`normalize_task` decodes).

- :func:`offline_tasks`: bugs injected into the shipped projects (see :mod:`.generator`); extra fields
  ``source="offline"``, ``project``, ``bug_patch`` (the diff that injects the bug), ``mutation``.
- :func:`load_tasks`: real instances (SWE-bench-Verified, SWE-Gym, R2E-Gym, ...) with
  ``datasets.load_dataset`` from a Hub name or a local ``.json``/``.jsonl``/``.parquet`` file; they run
  in their Docker images (:mod:`.docker`).

R2E-Gym rows (R2E-Gym-Lite/-Subset/-Full) have another schema: ``repo_name``, ``docker_image``, ``commit_hash``,
``parsed_commit_content`` (the fix commit, tests included), ``problem_statement``, ``expected_output_json`` (the
status of every hidden test after the fix) and no ``instance_id``/``repo``/``patch``/``FAIL_TO_PASS``. A row is
one when :func:`.r2egym.is_r2egym_instance` says so (an ``expected_output_json``, an image that is not a SWE-bench
one); :func:`normalize_task` then fills the schema's names from R2E-Gym's (see :func:`_normalize_r2egym`), and the
row is graded by R2E-Gym's rule (:mod:`.r2egym`).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from functools import lru_cache

from . import r2egym
from .generator import Mutant, load_validated, mutants

__all__ = ["SCHEMA", "load_tasks", "normalize_task", "offline_tasks", "problem_statement"]

SCHEMA = (
    "instance_id",
    "repo",
    "base_commit",
    "problem_statement",
    "patch",
    "test_patch",
    "FAIL_TO_PASS",
    "PASS_TO_PASS",
)
MAX_LISTED_FAILURES = 5


def problem_statement(project: str, failures: dict[str, str]) -> str:
    """An issue written from the failing behaviour: which tests fail and with which assertion."""
    lines = [
        f"Some tests of `{project}` fail on the current code.",
        "",
        "Failing tests and their errors:",
    ]
    for test, message in list(failures.items())[:MAX_LISTED_FAILURES]:
        lines.append(f"- `{test}`: {message or 'fails'}")
    if len(failures) > MAX_LISTED_FAILURES:
        lines.append(f"- ... and {len(failures) - MAX_LISTED_FAILURES} more")
    lines += [
        "",
        "The rest of the suite passes. Find the bug in the package's source code and fix it so that these tests "
        "pass and the other tests keep passing. Do not modify the tests.",
    ]
    return "\n".join(lines)


def _content_hash(files: dict[str, str]) -> str:
    digest = hashlib.sha1()
    for name in sorted(files):
        digest.update(f"{name}\0{files[name]}\0".encode())
    return digest.hexdigest()


@lru_cache(maxsize=4)
def _all_offline(allow_network: bool = False) -> tuple[dict, ...]:
    """Every validated offline task, in the generator's fixed order (read-only; copied by callers)."""
    document = load_validated(allow_network=allow_network)
    tasks = []
    for project, info in sorted(document["projects"].items()):
        by_key: dict[str, Mutant] = {m.key: m for m in mutants(project)}
        all_tests = info["tests"]
        for number, entry in enumerate(info["kept"]):
            mutant = by_key.get(entry["key"])
            if mutant is None:  # the cache and the projects disagree: fingerprint() should have caught it
                raise RuntimeError(f"offline task cache names an unknown mutant {entry['key']}")
            failing = entry["fail"]
            tasks.append(
                {
                    "instance_id": f"trl-aem__{project}-{number:04d}",
                    "repo": f"trl-aem/{project}",
                    "base_commit": _content_hash({mutant.file: mutant.source, "project": project}),
                    "problem_statement": problem_statement(project, failing),
                    "patch": mutant.gold_patch,
                    "test_patch": "",
                    "FAIL_TO_PASS": list(failing),
                    "PASS_TO_PASS": [t for t in all_tests if t not in failing],
                    "source": "offline",
                    "project": project,
                    "bug_patch": mutant.bug_patch,
                    "mutation": mutant.kind,
                }
            )
    return tuple(tasks)


def offline_tasks(
    split: str = "train", *, seed: int = 0, eval_fraction: float = 0.2, allow_network: bool = False
) -> list[dict]:
    """The offline tasks of ``split`` (``"train"`` or ``"eval"``): a seeded partition of every validated
    bug, so the splits are disjoint and together hold every task; the order within a split is seeded too."""
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
    tasks = [dict(t) for t in _all_offline(allow_network)]
    random.Random(seed).shuffle(tasks)
    cut = max(1, round(len(tasks) * eval_fraction))
    return tasks[:cut] if split == "eval" else tasks[cut:]


def _decode_test_lists(task: dict) -> None:
    for key in ("FAIL_TO_PASS", "PASS_TO_PASS"):
        value = task.get(key, [])
        if isinstance(value, str):
            value = json.loads(value) if value.strip() else []
        task[key] = list(value or [])


_ISSUE = re.compile(r"\[ISSUE\](.*)\[/ISSUE\]", re.DOTALL)


def _normalize_r2egym(task: dict) -> dict:
    """An R2E-Gym row in the schema: ``instance_id`` = its ``docker_image`` (one image per row), ``repo`` = its
    ``repo_name``, the issue text inside ``[ISSUE]...[/ISSUE]`` when so wrapped (as R2E-Gym shows it to its
    agent), ``patch`` empty unless given (the fix is in ``parsed_commit_content``, not rebuilt here: no expert
    action), ``base_commit`` empty (the image's ``HEAD`` is the commit before the fix). Needs a ``docker_image``
    and a non-empty ``expected_output_json`` object."""
    task["instance_id"] = task.get("instance_id") or task.get("docker_image")
    task["repo"] = task.get("repo") or task.get("repo_name")
    task["patch"] = task.get("patch") or ""
    issue = _ISSUE.search(task.get("problem_statement") or "")
    if issue:
        task["problem_statement"] = issue.group(1).strip()
    missing = [k for k in ("instance_id", "repo", "problem_statement", "docker_image") if not task.get(k)]
    if missing:
        raise ValueError(f"R2E-Gym task {task.get('instance_id', '?')} is missing {missing}")
    if not r2egym.expected_status(task):
        raise ValueError(f"R2E-Gym task {task['instance_id']} has an empty expected_output_json")
    return task


def normalize_task(row: dict) -> dict:
    """A task dict in the schema: list fields decoded from JSON strings, missing optional fields filled,
    required ones checked. R2E-Gym rows (module docstring) need no FAIL_TO_PASS: their tests are in the image."""
    task = dict(row)
    _decode_test_lists(task)
    task.setdefault("test_patch", "")
    task.setdefault("base_commit", "")
    if r2egym.is_r2egym_instance(task):
        return _normalize_r2egym(task)
    missing = [k for k in ("instance_id", "repo", "problem_statement", "patch") if not task.get(k)]
    if missing:
        raise ValueError(f"task {task.get('instance_id', '?')} is missing {missing} (SWE-bench schema: {SCHEMA})")
    if not task["FAIL_TO_PASS"]:
        raise ValueError(f"task {task['instance_id']} has no FAIL_TO_PASS tests")
    return task


def load_tasks(source: str, split: str = "test", *, limit: int | None = None, **kwargs) -> list[dict]:
    """Real SWE tasks from a Hub dataset (``"princeton-nlp/SWE-bench_Verified"``, ``"SWE-Gym/SWE-Gym"``,
    ``"R2E-Gym/R2E-Gym-Subset"``, ...) or a local ``.json``/``.jsonl``/``.parquet`` file, normalized."""
    from datasets import load_dataset

    if os.path.isfile(source):
        extension = os.path.splitext(source)[1].lower().lstrip(".")
        builder = {"jsonl": "json", "json": "json", "parquet": "parquet"}.get(extension)
        if builder is None:
            raise ValueError(f"{source}: expected a .json, .jsonl or .parquet file")
        dataset = load_dataset(builder, data_files={split: source}, split=split, **kwargs)
    else:
        dataset = load_dataset(source, split=split, **kwargs)
    rows = dataset if limit is None else dataset.select(range(min(limit, len(dataset))))
    return [normalize_task(row) for row in rows]

"""SWE tasks: offline splits in the SWE-bench schema (the gold patch undoes the bug) and real instances from a file."""

from __future__ import annotations

import pytest

from trl_aem.envs import SWEEnv
from trl_aem.envs.swe import SCHEMA, generator, load_tasks, offline_tasks
from trl_aem.envs.swe.patch import apply_patch

from .instances import real_rows, write_instances


def test_splits_are_disjoint_seeded_and_deterministic():
    train, evaluation = offline_tasks("train", seed=0), offline_tasks("eval", seed=0)
    assert not {t["instance_id"] for t in train} & {t["instance_id"] for t in evaluation}
    assert not {t["bug_patch"] for t in train} & {t["bug_patch"] for t in evaluation}
    assert len(evaluation) == round(0.2 * (len(train) + len(evaluation)))
    assert offline_tasks("train", seed=0) == train  # same seed, same tasks in the same order
    other = offline_tasks("eval", seed=1)
    assert {t["instance_id"] for t in other} != {t["instance_id"] for t in evaluation}
    # the enumeration of bugs itself is deterministic
    assert [m.key for m in generator.mutants("numkit")] == [m.key for m in generator.mutants("numkit")]
    with pytest.raises(ValueError):
        offline_tasks("validation")


def test_tasks_follow_the_swe_bench_schema():
    for task in offline_tasks("eval"):
        for key in SCHEMA:
            assert key in task, key
        assert task["FAIL_TO_PASS"] and task["PASS_TO_PASS"]
        assert not set(task["FAIL_TO_PASS"]) & set(task["PASS_TO_PASS"])
        assert len(task["base_commit"]) == 40 and task["repo"] == f"trl-aem/{task['project']}"
        assert all(test.split("::")[-1] in task["problem_statement"] for test in task["FAIL_TO_PASS"][:5])
        # the gold patch undoes the injected bug exactly
        files = generator.project_files(task["project"])
        (path,) = {p for p in apply_patch(files, task["bug_patch"])}
        buggy = apply_patch(files, task["bug_patch"])[path]
        assert buggy != files[path]
        assert apply_patch({path: buggy}, task["patch"])[path] == files[path]


def test_real_tasks_load_from_a_local_jsonl_file(tmp_path):
    path = tmp_path / "instances.jsonl"
    write_instances(path, real_rows())
    tasks = load_tasks(str(path))
    assert [t["instance_id"] for t in tasks] == ["django__django-11099", "psf__requests-2317"]
    assert tasks[0]["FAIL_TO_PASS"] == ["test_ascii_validator (auth_tests.test_validators.UsernameValidatorsTests)"]
    assert tasks[1]["PASS_TO_PASS"] == [] and tasks[0]["version"] == "3.0"
    assert load_tasks(str(path), limit=1)[0]["instance_id"] == "django__django-11099"
    env = SWEEnv(dataset=str(path), dataset_splits={"train": "test", "eval": "test"}, num_eval_tasks=1)
    assert [t["instance_id"] for t in env.tasks("eval")] == ["django__django-11099"]
    broken = tmp_path / "broken.jsonl"
    write_instances(broken, [{**real_rows()[0], "FAIL_TO_PASS": "[]"}])
    with pytest.raises(ValueError, match="FAIL_TO_PASS"):
        load_tasks(str(broken))

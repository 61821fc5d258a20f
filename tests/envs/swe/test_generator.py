"""The offline bug-injection generator: hundreds of distinct validated bugs, and the shipped cache is a rerun's."""

from __future__ import annotations

import json
import random

from trl_aem.envs.swe import generator, offline_tasks


def test_generator_produces_hundreds_of_distinct_valid_tasks():
    train, evaluation = offline_tasks("train"), offline_tasks("eval")
    ids = [t["instance_id"] for t in train + evaluation]
    assert len(ids) == len(set(ids)) >= 300
    assert len({t["bug_patch"] for t in train + evaluation}) == len(ids)  # distinct bugs, not just names
    assert {t["project"] for t in train + evaluation} == set(generator.projects()) and len(generator.projects()) >= 3
    for project in generator.projects():
        assert 10 <= len(generator.test_ids(project)) <= 30
    kinds = {t["mutation"] for t in train + evaluation}
    assert kinds >= {"flip_comparison", "off_by_one", "wrong_operator", "removed_branch", "swapped_arguments"}


def test_shipped_cache_matches_the_projects_and_a_rerun():
    document = json.loads(generator.SHIPPED_CACHE.read_text())
    assert document["fingerprint"] == generator.fingerprint()  # a fresh clone does not re-validate
    # re-validate a sample (some kept, some rejected) for real: the same verdicts
    kept = {entry["key"]: entry for entry in document["projects"]["shopcart"]["kept"]}
    all_keys = [m.key for m in generator.mutants("shopcart")]
    rng = random.Random(0)
    sample = set(rng.sample(sorted(kept), 6)) | set(rng.sample([k for k in all_keys if k not in kept], 4))
    fresh = generator.validate(["shopcart"], keys=sample)["projects"]["shopcart"]["kept"]
    assert {e["key"]: e["fail"] for e in fresh} == {k: kept[k]["fail"] for k in sample if k in kept}

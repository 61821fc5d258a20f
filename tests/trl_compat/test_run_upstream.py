"""``run_upstream.py`` must be able to fail (issue 23 item 12): a module that does not import (a ``testing_utils`` name
the harness lacks) or a run that collects no test exits non-zero with the reason, instead of "0 regressions"; a test
that needs a model the offline cache does not hold is reported as skipped, with the reason. Each case runs the real
runner (pytest in a subprocess with the harness's plugin) on a tiny fake upstream module, against an empty offline
cache."""

from __future__ import annotations

import json
import textwrap

import pytest

from tests.trl_compat import run_upstream
from tests.trl_compat.offline_hub import _cache_key

MODULES = {
    # what TRL's test_grpo_trainer.py from v1.6 on did to the harness before is_ampere_or_newer was added
    "collection_error": """
        from .testing_utils import TrlTestCase, require_peft, not_in_the_harness


        class TestGRPOTrainer(TrlTestCase):
            def test_training(self):
                pass
    """,
    "no_tests": """
        from .testing_utils import TrlTestCase, is_ampere_or_newer


        class TestGRPOTrainer(TrlTestCase):
            pass
    """,
    "missing_models": """
        import pytest
        from transformers import AutoModelForCausalLM

        from .testing_utils import TrlTestCase, is_ampere_or_newer, is_bf16_supported, require_peft


        class TestGRPOTrainer(TrlTestCase):
            def test_runs(self):
                assert self.tmp_dir and not is_ampere_or_newer() and not is_bf16_supported()

            def test_loads_a_model_the_cache_lacks(self):
                AutoModelForCausalLM.from_pretrained("trl-internal-testing/tiny-NoStandInForCausalLM")

            @pytest.mark.parametrize("model_id", ["trl-internal-testing/tiny-NoStandInEither"])
            def test_parametrised_with_one(self, model_id):
                raise AssertionError("never run")
    """,
}


def _run(tmp_path, case: str, capsys) -> tuple[int, str, dict]:
    upstream = tmp_path / "trl" / "tests" / "test_grpo_trainer.py"
    upstream.parent.mkdir(parents=True)
    upstream.write_text(textwrap.dedent(MODULES[case]), encoding="utf-8")
    hub_root = tmp_path / "hub"
    home = hub_root / _cache_key()
    home.mkdir(parents=True)  # an offline cache that holds no model (nothing to build for these modules)
    (home / "trl_compat_manifest.json").write_text(json.dumps({"built": [], "failed": {}}), encoding="utf-8")
    out = tmp_path / "reports"
    status = run_upstream.main(
        ["--trl-tests", str(upstream.parent), "--arms", "grpo", "--out", str(out), "--hub-cache", str(hub_root)]
    )
    captured = capsys.readouterr()
    report = json.loads((out / "grpo.json").read_text()) if (out / "grpo.json").exists() else {}
    return status, captured.out + captured.err, report


@pytest.mark.parametrize(
    "case, reason",
    [
        ("collection_error", "'not_in_the_harness' is missing from tests/trl_compat/upstream_support.py"),
        ("no_tests", "no test was collected"),
    ],
)
def test_a_run_that_proves_nothing_fails(tmp_path, capsys, case, reason):
    status, output, _ = _run(tmp_path, case, capsys)
    assert status == 2, output
    assert "trl_compat: FAILED" in output and reason in output, output
    assert "Passing on `grpo`" not in output  # no comparison, no "0 regressions"


def test_tests_needing_models_the_cache_lacks_are_skipped_with_the_reason(tmp_path, capsys):
    status, output, report = _run(tmp_path, "missing_models", capsys)
    assert status == 0, output
    tests = report["tests"]
    assert report["counts"] == {"passed": 1, "skipped": 2}, tests
    for name in ("test_loads_a_model_the_cache_lacks", "test_parametrised_with_one[trl-internal-testing/tiny-"):
        entry = next(e for key, e in tests.items() if name in key)
        assert entry["outcome"] == "skipped" and "is not in the offline cache" in entry["message"], entry

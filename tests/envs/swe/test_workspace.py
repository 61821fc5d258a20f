"""The local back end runs only the offline tasks: a real instance needs Docker."""

from __future__ import annotations

import pytest

from trl_aem.envs.swe import normalize_task
from trl_aem.envs.swe.workspace import LocalWorkspace


def test_local_backend_refuses_real_instances():
    real = normalize_task(
        {
            "instance_id": "astropy__astropy-12907",
            "repo": "astropy/astropy",
            "problem_statement": "x",
            "patch": "--- a/x\n+++ b/x\n",
            "FAIL_TO_PASS": '["t1"]',
            "PASS_TO_PASS": "[]",
        }
    )
    with pytest.raises(ValueError, match="docker"):
        LocalWorkspace(real)

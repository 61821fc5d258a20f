"""Real SWE-bench-style instances (two rows as the Hub dataset has them) for the loader and Docker tests."""

from __future__ import annotations

import json


def write_instances(path, rows):
    with open(path, "w") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")


def real_rows():
    return [
        {
            "instance_id": "django__django-11099",
            "repo": "django/django",
            "base_commit": "d26b2424437dabeeca94d7900b37d2df4410da0c",
            "problem_statement": "UsernameValidator allows trailing newline in usernames",
            "patch": "diff --git a/django/contrib/auth/validators.py b/django/contrib/auth/validators.py\n",
            "test_patch": "diff --git a/tests/auth_tests/test_validators.py b/tests/auth_tests/test_validators.py\n"
            "--- a/tests/auth_tests/test_validators.py\n+++ b/tests/auth_tests/test_validators.py\n",
            "FAIL_TO_PASS": json.dumps(["test_ascii_validator (auth_tests.test_validators.UsernameValidatorsTests)"]),
            "PASS_TO_PASS": json.dumps(["test_help_text (auth_tests.test_validators.UserAttributeSimilarityTests)"]),
            "version": "3.0",
        },
        {
            "instance_id": "psf__requests-2317",
            "repo": "psf/requests",
            "base_commit": "091991be0da19de9108dbe5e3752917fea3d7fdc",
            "problem_statement": "method = builtin_str(method) problem",
            "patch": "diff --git a/requests/sessions.py b/requests/sessions.py\n",
            "test_patch": "",
            "FAIL_TO_PASS": json.dumps(["test_requests.py::RequestsTestCase::test_HTTP_200_OK_GET_ALTERNATIVE"]),
            "PASS_TO_PASS": json.dumps([]),
            "version": "2.4",
        },
    ]

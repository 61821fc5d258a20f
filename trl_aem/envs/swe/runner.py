"""Test runner copied into a sandbox to evaluate offline tasks (standard library only).

    python -I -S runner.py MARKER [TEST_ID ...]     # run these tests
    python -I -S runner.py MARKER --all             # run every test under tests/

Test ids are pytest-style node ids of unittest tests (``tests/test_core.py::TestClass::test_name``). One
line per test, ``MARKER {"id": ..., "status": "passed" | "failed" | "error", "message": ...}``, printed as
each test finishes, so a run cut by its timeout still reports the tests that finished. ``-I -S``: the
repository goes at the *end* of ``sys.path``, so files in it cannot shadow the standard library.
"""

import json
import os
import sys
import unittest


def _node_id(test: unittest.TestCase) -> str:
    module, cls, method = test.id().rsplit(".", 2)
    return f"{module.replace('.', '/')}.py::{cls}::{method}"


def _dotted(node_id: str) -> str:
    path, cls, method = node_id.split("::")
    if not path.endswith(".py"):
        raise ValueError(f"not a test file: {path}")
    return ".".join([path[: -len(".py")].replace("/", "."), cls, method])


def _iterate(suite):
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from _iterate(item)
        else:
            yield item


def _message(error) -> str:
    text = error[1]
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:500] if lines else ""


def main(argv: list[str]) -> int:
    marker, ids = argv[0], argv[1:]
    sys.path.append(os.getcwd())
    loader = unittest.TestLoader()
    if ids == ["--all"]:
        tests = list(_iterate(loader.discover("tests", top_level_dir=".")))
        targets = [(_node_id(t), t) for t in tests]
    else:
        targets = []
        for node_id in ids:
            try:
                suite = loader.loadTestsFromName(_dotted(node_id))
                found = list(_iterate(suite))
                targets.append((node_id, found[0] if found else None))
            except Exception as error:  # noqa: BLE001 - a test that cannot load has failed
                targets.append((node_id, f"{type(error).__name__}: {error}"))
    for node_id, test in targets:
        if test is None or isinstance(test, str):
            record = {"id": node_id, "status": "error", "message": test or "test not found"}
        elif getattr(test, "_testMethodName", None) is None:  # unittest's placeholder for an import failure
            record = {"id": node_id, "status": "error", "message": "could not load the test"}
        else:
            result = unittest.TestResult()
            test.run(result)
            if result.errors:
                record = {"id": node_id, "status": "error", "message": _message(result.errors[0])}
            elif result.failures:
                record = {"id": node_id, "status": "failed", "message": _message(result.failures[0])}
            elif result.skipped or result.unexpectedSuccesses:
                record = {"id": node_id, "status": "failed", "message": "skipped"}
            else:
                record = {"id": node_id, "status": "passed", "message": ""}
        sys.stdout.write(f"\n{marker} {json.dumps(record)}\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

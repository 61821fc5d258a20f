"""Test runner copied into a sandbox to evaluate offline tasks (standard library only).

    python -I -S -B runner.py MARKER SECONDS [TEST_ID ...]     # run these tests
    python -I -S -B runner.py MARKER SECONDS --all             # run every test under tests/

Test ids are pytest-style node ids of unittest tests (``tests/test_core.py::TestClass::test_name``). One
line per test, ``MARKER {"id": ..., "status": "passed" | "failed" | "error" | "timeout", "message": ...}``,
printed as each test finishes. A test running longer than SECONDS is interrupted (``SIGALRM``) and reported
as ``timeout``, so one endless loop does not cost the other tests their result. ``-I -S``: the
repository goes at the *end* of ``sys.path``, so files in it cannot shadow the standard library.
"""

import json
import os
import signal
import sys
import unittest


class _TestTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise _TestTimeout("trl-aem: the test ran past its time limit")


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
    """The exception line of a formatted traceback (``AssertionError: 3 != 4``), not its detail lines."""
    lines = [line for line in error[1].strip().splitlines() if line.strip()]
    for line in lines[1:]:
        if not line[0].isspace():
            return line[:300]
    return lines[-1][:300] if lines else ""


def main(argv: list[str]) -> int:
    marker, seconds, ids = argv[0], float(argv[1]), argv[2:]
    signal.signal(signal.SIGALRM, _alarm)
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
            signal.setitimer(signal.ITIMER_REAL, seconds)
            try:
                test.run(result)
            except _TestTimeout as error:  # raised outside the test method (setUp/tearDown bookkeeping)
                result.errors.append((test, f"_TestTimeout: {error}"))
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            if any("trl-aem: the test ran past its time limit" in text for _, text in result.errors):
                record = {"id": node_id, "status": "timeout", "message": "the test ran past its time limit"}
            elif result.errors:
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

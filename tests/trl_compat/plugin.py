"""pytest plugin that runs TRL's GRPO test module against one arm (loaded by ``run_upstream.py`` with ``-p``).

Environment (set by ``run_upstream.py``):

* ``TRL_COMPAT_ARM``: ``grpo`` | ``aem`` | ``aem_off`` (see :mod:`tests.trl_compat.arms`).
* ``TRL_COMPAT_REPORT``: where the JSON report of this run is written.
* ``TRL_COMPAT_TIMEOUT``: seconds one test may run before it is failed (default 900; 0 disables).
* ``TRL_COMPAT_AEM_MIN_RANGE``: optional ``aem_min_range`` for the ``aem`` arm.
* ``HF_HOME`` / ``HF_HUB_OFFLINE``: the offline cache built by :func:`tests.trl_compat.offline_hub.ensure_hub`.

At configure time the plugin replaces ``datasets.load_dataset`` (TRL's test datasets come from
:mod:`tests.trl_compat.offline_hub`) and ``trl.GRPOTrainer`` / ``trl.GRPOConfig`` (the arm), before the test module
is imported. Tests that need a model the offline cache does not hold (it failed to build, or the harness has no
stand-in for it) are reported as skipped with the reason, not failed: parametrised with one at collection, or when
``from_pretrained`` misses the cache while the test runs. Collection errors (a module that does not import) are
recorded in the report, and ``run_upstream.py`` fails the run on them.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import signal
import time
from pathlib import Path
from typing import Any

import pytest

# Names that TRL's test module imports at module level but that some TRL releases lack (the stored upstream module
# and the installed TRL need not be the same release). Without them the whole module fails to import on every arm;
# with a stub only the tests that call them fail, on every arm alike.
IMPORT_SHIMS: dict[str, list[str]] = {"trl.trainer.utils": ["get_kbit_device_map"]}

_RESULTS: dict[str, dict[str, Any]] = {}
_CURRENT: dict[str, str] = {}  # the test being run, for the AEM metrics recorder
_AEM_KEYS = ("aem/alpha_std", "aem/guarded_frac", "aem/missing_frac")
_STARTED = time.time()
_UNBUILDABLE: dict[str, str] = {}
_BUILT: set[str] = set()
_COLLECTION_ERRORS: dict[str, str] = {}
_STAND_IN_PREFIX = "trl-internal-testing/tiny-"  # the test models the harness builds stand-ins for


def _short_nodeid(nodeid: str) -> str:
    """``pkg/test_x.py::Class::test[param]`` -> ``test_x.py::Class::test[param]`` (same across arms)."""
    head, sep, rest = nodeid.partition("::")
    return f"{Path(head).name}{sep}{rest}"


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("HF_HUB_OFFLINE") != "1" or not os.environ.get("HF_HOME"):
        raise pytest.UsageError("trl_compat plugin: run through tests/trl_compat/run_upstream.py (offline HF_HOME)")
    config.addinivalue_line("markers", "slow: TRL's slow tests")
    from trl_aem.runtime import quiet_third_party

    quiet_third_party()  # before trl imports peft (and bitsandbytes): the logs keep only the tests' own output
    from trl_aem.runtime import configure_threads

    threads = os.environ.get("TRL_COMPAT_THREADS")
    configure_threads(int(threads) if threads else None)  # default: trl_aem's (one thread on 2 cores)

    from tests.trl_compat.arms import install_arm
    from tests.trl_compat.offline_hub import install_dataset_patch

    install_dataset_patch()
    _install_import_shims()
    min_range = os.environ.get("TRL_COMPAT_AEM_MIN_RANGE")
    trainer_class, _ = install_arm(os.environ["TRL_COMPAT_ARM"], float(min_range) if min_range else None)
    if os.environ["TRL_COMPAT_ARM"] != "grpo":
        _record_aem_metrics(trainer_class)
    manifest = Path(os.environ["HF_HOME"]) / "trl_compat_manifest.json"
    if manifest.exists():
        built = json.loads(manifest.read_text(encoding="utf-8"))
        _UNBUILDABLE.update(built.get("failed", {}))
        _BUILT.update(built.get("built", []))


def _install_import_shims() -> None:
    import importlib

    for module_name, names in IMPORT_SHIMS.items():
        module = importlib.import_module(module_name)
        for name in names:
            if not hasattr(module, name):

                def missing(*args, _name=f"{module_name}.{name}", **kwargs):
                    raise NotImplementedError(f"{_name} does not exist in the installed TRL (trl_compat stub)")

                setattr(module, name, missing)


def _record_aem_metrics(trainer_class: type) -> None:
    """Keep, per test, what AEM logged (did alpha move? was the noise guard on? were statistics missing?)."""
    original = trainer_class.log

    def log(self, logs, *args, **kwargs):
        result = original(self, logs, *args, **kwargs)
        # GRPOTrainer.log merges its metrics (aem/* among them) into what Trainer appends to log_history
        entry = self.state.log_history[-1] if self.state.log_history else {}
        name = _CURRENT.get("test")
        if name is not None and any(key in entry for key in _AEM_KEYS):
            seen = _RESULTS.setdefault(name, {"outcome": None, "duration": 0.0, "message": ""}).setdefault("aem", {})
            for key in _AEM_KEYS:
                if key in entry:
                    seen.setdefault(key, []).append(round(float(entry[key]), 6))
        return result

    trainer_class.log = log


def pytest_runtest_setup(item: pytest.Item) -> None:
    _CURRENT["test"] = _short_nodeid(item.nodeid)


def _not_in_cache(repo: str) -> str:
    """Why the offline cache has no ``repo``."""
    if repo in _UNBUILDABLE:
        return f"offline stand-in for {repo} could not be built: {_UNBUILDABLE[repo]}"
    return f"{repo} is not in the offline cache (tests/trl_compat/offline_hub.py has no stand-in for it)"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        for value in params.values():
            missing = isinstance(value, str) and (
                value in _UNBUILDABLE or (value.startswith(_STAND_IN_PREFIX) and value not in _BUILT)
            )
            if missing:
                item.add_marker(pytest.mark.skip(reason=_not_in_cache(value)))
                break


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed:
        _COLLECTION_ERRORS[_short_nodeid(report.nodeid) or "<session>"] = str(report.longrepr)[-3000:]


def _missing_model(excinfo: pytest.ExceptionInfo) -> str | None:
    """The repository id a failed ``from_pretrained`` (or hub download) looked for, when the failure is a miss of the
    offline cache for a repository the harness did not build; else ``None``."""
    error: BaseException | None = excinfo.value
    chain = []
    while error is not None and len(chain) < 10:
        chain.append(error)
        error = error.__cause__ or error.__context__
    offline_miss = any(
        type(e).__name__ in ("LocalEntryNotFoundError", "OfflineModeIsEnabled")
        or (isinstance(e, OSError) and ("offline mode" in str(e) or "couldn't connect to" in str(e)))
        for e in chain
    )
    if not offline_miss:
        return None
    names = ("path_or_repo_id", "pretrained_model_name_or_path", "repo_id")
    for entry in reversed(excinfo.traceback):
        local_vars = entry.frame.f_locals
        for name in names:
            value = local_vars.get(name)
            if isinstance(value, str) and value.count("/") == 1 and value not in _BUILT and not os.path.exists(value):
                return value
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if report.failed and report.when in ("setup", "call") and call.excinfo is not None:
        repo = _missing_model(call.excinfo)
        if repo is not None:  # a model this machine cannot have: not the trainer's failure, on any arm
            report.outcome = "skipped"
            report.longrepr = (str(item.path), (item.location[1] or 0) + 1, f"Skipped: {_not_in_cache(repo)}")


@pytest.fixture(autouse=True)
def _trl_compat_collect_garbage():
    yield
    gc.collect()


class _TestTimeout(Exception):
    pass


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item):
    limit = int(os.environ.get("TRL_COMPAT_TIMEOUT", "900"))
    if limit <= 0 or not hasattr(signal, "SIGALRM"):
        yield
        return

    def expire(signum, frame):
        raise _TestTimeout(f"trl_compat: test exceeded {limit} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(limit)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _message(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        return f"{crash.message.strip()} ({Path(crash.path).name}:{crash.lineno})"[:1500]
    if isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:  # skip: (path, line, reason)
        return str(report.longrepr[2])[:1500]
    return str(report.longrepr or "")[-1500:]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    key = _short_nodeid(report.nodeid)
    entry = _RESULTS.setdefault(key, {"outcome": None, "duration": 0.0, "message": ""})
    entry["duration"] = round(entry["duration"] + report.duration, 3)
    xfail = hasattr(report, "wasxfail")
    if report.when == "setup":
        if report.failed:
            entry.update(outcome="error", message=_message(report))
        elif report.skipped:
            entry.update(outcome="xfailed" if xfail else "skipped", message=_message(report))
    elif report.when == "call":
        if report.passed:
            entry.update(outcome="xpassed" if xfail else "passed", message="")
        elif report.skipped:
            entry.update(outcome="xfailed" if xfail else "skipped", message=_message(report))
        else:
            entry.update(outcome="failed", message=_message(report))
    elif report.when == "teardown" and report.failed and entry["outcome"] in ("passed", None):
        entry.update(outcome="error", message=_message(report))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = os.environ.get("TRL_COMPAT_REPORT")
    if not path:
        return
    import torch
    import transformers
    import trl

    import trl_aem

    counts: dict[str, int] = {}
    for entry in _RESULTS.values():
        counts[entry["outcome"] or "unknown"] = counts.get(entry["outcome"] or "unknown", 0) + 1
    report = {
        "arm": os.environ.get("TRL_COMPAT_ARM"),
        "aem_min_range": os.environ.get("TRL_COMPAT_AEM_MIN_RANGE") or None,
        "upstream_file": os.environ.get("TRL_COMPAT_UPSTREAM_FILE"),
        "upstream_sha256": os.environ.get("TRL_COMPAT_UPSTREAM_SHA256"),
        "versions": {
            "trl": trl.__version__,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "trl_aem_path": str(Path(trl_aem.__file__).parent),
        "wall_seconds": round(time.time() - _STARTED, 1),
        "exitstatus": int(exitstatus),
        "collected": int(getattr(session, "testscollected", 0)),
        "collection_errors": dict(_COLLECTION_ERRORS),
        "counts": dict(sorted(counts.items())),
        "unbuildable_models": _UNBUILDABLE,
        "tests": dict(sorted(_RESULTS.items())),
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(report, indent=2), encoding="utf-8")

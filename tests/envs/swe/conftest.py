"""Fixtures of the Docker back end's tests against a real daemon (see :mod:`.docker_daemon`)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from . import docker_daemon as dd


@dataclass
class DockerSetup:
    daemon: dd.Daemon
    task: dict  # the calc instance, in its task image
    base_image: str
    timings: dict[str, float]


@pytest.fixture(scope="session")
def docker_setup():
    """A private dockerd for the session (stopped at the end), the base image (built once, then loaded from
    the cache folder) and the task image; ``DOCKER_HOST`` points at it meanwhile. Skips, with the reason,
    where no daemon can start or the base image cannot be built (no root, no dockerd, no apt mirror)."""
    reason = dd.unavailable_reason()
    if reason:
        pytest.skip(f"no Docker daemon for the Docker back end's tests: {reason}")
    timings, started = {}, time.perf_counter()
    try:
        daemon = dd.start_daemon()
    except (OSError, RuntimeError) as error:
        pytest.skip(f"no Docker daemon for the Docker back end's tests: {error}")
    timings["daemon_s"] = time.perf_counter() - started
    with dd.serving(daemon):
        started = time.perf_counter()
        try:
            base, how = dd.ensure_base_image(daemon)
        except (OSError, RuntimeError) as error:
            pytest.skip(f"the Docker tests' base image could not be built: {error}")
        timings["base_image_s"] = time.perf_counter() - started
        started = time.perf_counter()
        image, commit = dd.ensure_task_image(daemon)
        timings["task_image_s"] = time.perf_counter() - started
        print(f"\ndocker tests: daemon {daemon.host}; base image {how}; timings {timings}")
        yield DockerSetup(daemon, dd.calc_task(image, commit), base, timings)

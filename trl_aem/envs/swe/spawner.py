"""The thread that starts every sandboxed command, carrying the seccomp filter (:mod:`.seccomp`).

A seccomp filter cannot be installed between ``fork`` and ``exec`` without ``preexec_fn`` (unsafe in the
trainer's threaded environment workers), and a helper program per command would cost its start-up time on
every command. A filter installed on one thread applies to that thread and to every process it forks,
never to the trainer's other threads. So one long-lived daemon thread installs the filter once, then runs
``subprocess.Popen`` for every command; the other threads hand their requests over through a queue.

The thread lives as long as the process, which matters for ``setpriv --pdeathsig``: the parent-death signal
fires when the *thread* that forked the child exits, so a command started by a short-lived worker thread
would be killed with it. After a ``fork`` the child process starts its own thread on first use.
"""

from __future__ import annotations

import os
import queue
import subprocess
import threading
from concurrent.futures import Future

from .seccomp import SeccompUnavailable, install

__all__ = ["Spawner", "spawner"]


class Spawner:
    """A daemon thread that installs the filter, then starts the processes it is asked to start."""

    def __init__(self, *, block_user_namespaces: bool):
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        ready: Future = Future()
        self._thread = threading.Thread(
            target=self._serve, args=(ready, block_user_namespaces), name="trl-aem-sandbox-spawner", daemon=True
        )
        self._thread.start()
        #: what the filter refuses, or why there is none (``applied`` False)
        self.applied, self.description = ready.result()

    def popen(self, argv: list[str], **kwargs) -> subprocess.Popen:
        """``subprocess.Popen(argv, **kwargs)``, started from the filtered thread."""
        future: Future = Future()
        self._requests.put((argv, kwargs, future))
        return future.result()

    def _serve(self, ready: Future, block_user_namespaces: bool) -> None:
        try:
            ready.set_result((True, install(block_user_namespaces=block_user_namespaces)))
        except SeccompUnavailable as error:
            ready.set_result((False, str(error)))
        except Exception as error:  # noqa: BLE001 - the waiting constructor must hear of any failure
            ready.set_result((False, f"{type(error).__name__}: {error}"))
        while True:
            argv, kwargs, future = self._requests.get()
            try:
                future.set_result(subprocess.Popen(argv, **kwargs))
            except BaseException as error:  # noqa: BLE001 - handed to the caller, the thread must go on
                future.set_exception(error)


_spawners: dict[tuple[int, bool], Spawner] = {}
_lock = threading.Lock()


def spawner(*, block_user_namespaces: bool) -> Spawner:
    """This process's spawner for that filter (one per process: a forked child starts its own)."""
    key = (os.getpid(), block_user_namespaces)
    with _lock:
        if key not in _spawners:
            _spawners[key] = Spawner(block_user_namespaces=block_user_namespaces)
        return _spawners[key]

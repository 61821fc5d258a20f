"""Uploads that survive the Hub being down: retried with backoff in the background, reported, never fatal.

``transformers.Trainer`` already pushes checkpoints asynchronously (``Trainer._push_from_checkpoint`` submits
``hf_api().upload_folder(..., run_as_future=True)`` and moves on), but a failed future is never looked at and a
failed blocking ``push_to_hub`` raises. :class:`ResilientHubApi` is the ``HfApi`` those calls go through in
:class:`~trl_aem.AEMTrainer` (see :func:`trainer_hub_api`): every upload is retried with exponential backoff on
the upload thread, a final failure becomes a warning and a counter instead of an exception, and a folder whose
upload failed is uploaded again before the next one, so the Hub catches up once it answers again. Local files
are only ever read.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from huggingface_hub import HfApi, snapshot_download

__all__ = ["PushStats", "ResilientHubApi", "download_checkpoint", "fetch_file", "trainer_hub_api"]

logger = logging.getLogger(__name__)


@dataclass
class PushStats:
    """Counters of one trainer's uploads (cumulative; logged as ``hub/*``)."""

    pushes: int = 0  # uploads that reached the Hub
    retries: int = 0  # failed attempts that were retried
    failures: int = 0  # uploads given up after every retry (their folder is queued for the next push)
    last_error: str | None = None

    def metrics(self) -> dict[str, float]:
        return {
            "hub/pushes": float(self.pushes),
            "hub/push_retries": float(self.retries),
            "hub/push_failures": float(self.failures),
        }


class ResilientHubApi(HfApi):
    """``HfApi`` whose ``upload_folder`` never raises because the Hub is unreachable; it creates the repository
    first when no earlier call did (the trainer's ``create_repo`` at start-up may have failed).

    Args:
        retries: attempts after the first one (each attempt already includes ``huggingface_hub``'s own
            short retries of 5xx answers and connection errors).
        backoff: seconds before the first retry, doubled for each further one.
        retry_budget: seconds of backoff this client may spend waiting over its whole life; once spent, and while
            the Hub is known to be unreachable (a transient failure with no success since), uploads are tried once,
            so an outage costs a run seconds, not minutes.
        sleep: how to wait (tests pass a fast one).
        **kwargs: ``HfApi`` arguments (``endpoint``, ``token``, ...).
    """

    def __init__(
        self,
        *,
        retries: int = 3,
        backoff: float = 10.0,
        retry_budget: float = 120.0,
        sleep: Callable[[float], None] = time.sleep,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.retries, self.backoff, self.retry_budget, self.sleep = retries, backoff, retry_budget, sleep
        self._waited = 0.0  # seconds spent in backoff so far
        self._unreachable = False  # the last attempt failed transiently and nothing went through since
        self.stats = PushStats()
        self._lock = threading.Lock()
        self._created: set[str] = set()
        # uploads that failed for good, replayed (if their folder still exists) before the next upload
        self._failed: dict[tuple[str, str], dict[str, Any]] = {}
        self._uploaded: set[tuple[str, str]] = set()  # (folder, path_in_repo) that reached the Hub
        # folders whose upload was submitted and has not finished yet (a count: the same folder may be queued twice)
        self._in_flight: dict[str, int] = {}

    # ------------------------------------------------------------------ retry core
    def _attempts(self, what: str, call: Callable[[], Any], retries: int | None = None) -> tuple[bool, Any]:
        """Run ``call`` until it succeeds or the retries are spent; ``(ok, result_or_error)``. Only transient
        failures (network, 5xx, 408, 429) are retried, and only while the Hub is not known to be down and the retry
        budget lasts: a bad token or a wrong argument fails at once."""
        retries = self.retries if retries is None else retries
        if self._unreachable:
            retries = 0  # the Hub was down at the last try: one attempt, no backoff
        delay = self.backoff
        for attempt in range(retries + 1):
            try:
                result = call()
            except Exception as error:  # never the trainer's problem: reported by the caller, not raised
                transient = _transient(error)
                with self._lock:
                    self._unreachable = self._unreachable or transient
                    out_of_budget = self._waited + delay > self.retry_budget
                if attempt == retries or not transient or out_of_budget:
                    return False, error
                with self._lock:
                    self.stats.retries += 1
                    self._waited += delay
                logger.warning(
                    "Hub: %s failed (%s: %s); retry %d/%d in %.1f s",
                    what,
                    type(error).__name__,
                    error,
                    attempt + 1,
                    retries,
                    delay,
                )
                self.sleep(delay)
                delay *= 2
            else:
                with self._lock:
                    self._unreachable = False
                return True, result
        raise AssertionError("unreachable")

    @property
    def reachable(self) -> bool:
        """False after a transient failure (network down, 5xx) until an upload goes through again."""
        with self._lock:
            return not self._unreachable

    def _ensure_repo(self, repo_id: str, token, private: bool | None) -> str:
        if repo_id in self._created:
            return repo_id
        url = super().create_repo(repo_id, token=token, private=private, exist_ok=True)
        self._created.add(url.repo_id)
        return url.repo_id

    def upload_folder(self, *, repo_id: str, folder_path: str | os.PathLike, run_as_future: bool = False, **kwargs):  # type: ignore[override]
        """``HfApi.upload_folder`` that retries and, on final failure, warns, counts and queues the folder for
        the next upload instead of raising. With ``run_as_future=True`` everything (retries and backoff
        included) happens on the ``HfApi`` upload thread, in submission order."""
        job = {"repo_id": repo_id, "folder_path": str(folder_path), **kwargs}
        folder = os.path.abspath(job["folder_path"])
        with self._lock:  # in flight from submission on: the upload thread may start it much later
            self._in_flight[folder] = self._in_flight.get(folder, 0) + 1
        if run_as_future:
            return self.run_as_future(self._upload_job, job)
        return self._upload_job(job)

    def _upload_job(self, job: dict[str, Any]):
        try:
            return self._upload_with_replays(job)
        finally:
            folder = os.path.abspath(job["folder_path"])
            with self._lock:
                left = self._in_flight.get(folder, 0) - 1
                if left > 0:
                    self._in_flight[folder] = left
                else:
                    self._in_flight.pop(folder, None)

    def _upload_with_replays(self, job: dict[str, Any]):
        with self._lock:
            replay = [j for key, j in self._failed.items() if key != _job_key(job)]
        for old in replay:  # an earlier folder that never reached the Hub (e.g. all_checkpoints' checkpoint-N)
            if os.path.isdir(old["folder_path"]):
                self._upload_once(old, retries=0, replay=True)  # one try: the new job must not wait a backoff again
            else:
                with self._lock:
                    self._failed.pop(_job_key(old), None)
        return self._upload_once(job)

    def _upload_once(self, job: dict[str, Any], retries: int | None = None, replay: bool = False):
        job = dict(job)
        repo_id, token, private = job.pop("repo_id"), job.get("token"), job.pop("private", None)
        where = f"{job['folder_path']} -> {repo_id}/{job.get('path_in_repo') or ''}"

        def call():
            target = self._ensure_repo(repo_id, token, private)
            return super(ResilientHubApi, self).upload_folder(repo_id=target, **job)

        ok, result = self._attempts(f"upload of {where}", call, retries)
        key = _job_key({"repo_id": repo_id, **job})
        with self._lock:
            failed_before = key in self._failed
            if ok:
                self.stats.pushes += 1
                self._failed.pop(key, None)
                self._uploaded.add((os.path.abspath(job["folder_path"]), job.get("path_in_repo") or ""))
            else:
                self._failed[key] = {"repo_id": repo_id, "private": private, **job}
        if ok:
            return result
        if replay:  # a queued upload tried again on the way: already reported
            logger.warning("Hub: upload of %s still failing (%s: %s)", where, type(result).__name__, result)
            return None
        self._report(
            f"upload of {where} failed; the local files are kept and will be pushed again with the next checkpoint",
            result,
            count=not failed_before,  # a folder that keeps failing counts once
        )
        return None

    def _report(self, message: str, error: BaseException, count: bool = True) -> None:
        if not _transient(error):
            message += "; this error is not transient (check the token, the repository id and the arguments)"
        with self._lock:
            self.stats.failures += int(count)
            self.stats.last_error = f"{type(error).__name__}: {error}"
        warnings.warn(
            f"Hub: {message} ({type(error).__name__}: {error})",
            RuntimeWarning,
            stacklevel=2,
        )

    def was_uploaded(self, folder: str | os.PathLike, path_in_repo: str = "") -> bool:
        """Whether an upload of ``folder`` to ``path_in_repo`` went through."""
        with self._lock:
            return (os.path.abspath(folder), path_in_repo) in self._uploaded

    @property
    def pending_failures(self) -> list[str]:
        """Folders whose last upload failed and that are waiting for the next push."""
        with self._lock:
            return [job["folder_path"] for job in self._failed.values()]

    @property
    def pending_uploads(self) -> list[str]:
        """Absolute paths of the folders that have not reached the Hub yet and must stay on disk: those whose last
        upload failed (queued for the next push) and those whose upload is submitted or running."""
        with self._lock:
            failed = {os.path.abspath(job["folder_path"]) for job in self._failed.values()}
            return sorted(failed | set(self._in_flight))

    def flush_failed(self) -> None:
        """Retry every queued failed upload now (blocking)."""
        with self._lock:
            jobs = list(self._failed.values())
        for job in jobs:
            if os.path.isdir(job["folder_path"]):
                self._upload_once(job)


def _job_key(job: dict[str, Any]) -> tuple[str, str]:
    return job["repo_id"], job.get("path_in_repo") or ""


@contextlib.contextmanager
def trainer_hub_api(api: HfApi) -> Iterator[None]:
    """Make ``transformers.Trainer``'s Hub calls (``init_hf_repo``, ``_push_from_checkpoint``, ``push_to_hub``) go
    through ``api``. They fetch their client with ``transformers.trainer.hf_api()`` at call time; only the main
    thread calls them, and the uploads they submit keep the client they were given."""
    import transformers.trainer as trainer_module

    from ..trl_compat import temporarily

    with temporarily("hub_client", trainer_module, "hf_api", lambda: api):
        yield


def download_checkpoint(
    repo_id: str,
    *,
    subfolder: str = "last-checkpoint",
    revision: str | None = None,
    local_dir: str | os.PathLike | None = None,
    token: str | None = None,
) -> str:
    """Download a checkpoint folder pushed with ``hub_strategy="checkpoint"`` (``last-checkpoint``) or
    ``"all_checkpoints"`` (``checkpoint-N``) and return its local path, ready for
    ``trainer.train(resume_from_checkpoint=path)``."""
    root = snapshot_download(
        repo_id, revision=revision, allow_patterns=[f"{subfolder}/*"], local_dir=local_dir, token=token
    )
    path = os.path.join(root, subfolder)
    if not os.path.isfile(os.path.join(path, "trainer_state.json")):
        raise FileNotFoundError(f"{repo_id} has no checkpoint in {subfolder}/ (no trainer_state.json there)")
    return path


def fetch_file(model: str, filename: str, revision: str | None = None, token: str | None = None) -> str | None:
    """Local path of ``filename`` in a local model folder or a Hub repository (downloaded), ``None`` if absent."""
    if os.path.isdir(model):
        path = os.path.join(model, filename)
        return path if os.path.isfile(path) else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return hf_hub_download(model, filename, revision=revision, token=token)
    except EntryNotFoundError:
        return None


def _transient(error: BaseException) -> bool:
    """Whether retrying can help: network failures and HTTP 5xx / 408 / 429; not 4xx (a bad token, a missing or
    forbidden repository) and not programming errors."""
    response = getattr(error, "response", None)
    status = getattr(response, "status_code", None)
    if status is not None:
        return status >= 500 or status in (408, 429)
    if isinstance(error, OSError | TimeoutError):  # connection refused/reset, DNS, socket timeouts
        return True
    # the HTTP clients' own network errors (httpx/httpx2 TransportError, requests ConnectionError and Timeout)
    return any(cls.__name__ in _NETWORK_ERRORS for cls in type(error).__mro__)


_NETWORK_ERRORS = {"TransportError", "ConnectionError", "Timeout", "TimeoutException"}

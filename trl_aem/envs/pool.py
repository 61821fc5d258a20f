"""A fault-tolerant pool of environment instances, one per concurrently running episode ("slot").

Each slot owns one environment instance living in its own worker: a daemon thread (``"thread"``, cheap,
for thread-safe pure-Python environments) or a ``spawn``-ed process (``"process"``, for environments
that are not thread-safe, hold the GIL, or may crash their interpreter). The trainer hands the pool a
list of calls (``reset`` or ``step`` on some slots) and gets one :class:`EnvOutcome` per call:

- ``ok``: the call returned (``value`` is the observation or the :class:`StepResult`);
- ``error``: it raised, returned something malformed, or its process died (``error`` says what);
- ``timeout``: it ran past ``timeout`` seconds; the worker is abandoned (thread) or killed (process)
  and the slot gets a fresh worker and environment instance on its next call;
- ``contract``: it returned something the :class:`~trl_aem.envs.TextEnv` contract does not allow (a bug of the
  environment, not a fault of the episode; ``error`` says what): the rollout engine stops the run with it.

At most ``max_workers`` calls run at once. Nothing an environment does can raise out of :meth:`run`,
except a configuration error (an environment factory that cannot be pickled in process mode).

Every call of an environment goes through :func:`call_env`, the one place that checks what it returns against the
contract (and coerces what the contract accepts: a gym-like 4-tuple from ``step``): the trainer's rollouts,
``evaluate()`` and the expert demonstrations (:func:`trl_aem.rollout.collect_demonstrations`) all play through a
pool, so an environment behaves the same everywhere. :class:`EnvFailedError` is what a caller raises when an
environment fails every episode it is given (each one's ``reset`` or ``step`` raised or timed out).
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing as mp
import pickle
import queue
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .base import EnvContractError, StepResult

__all__ = [
    "DEFAULT_MAX_WORKERS",
    "DEFAULT_STEP_TIMEOUT",
    "DEFAULT_WORKER_TYPE",
    "WORKER_TYPES",
    "ENV_METHODS",
    "EnvCall",
    "EnvFailedError",
    "EnvOutcome",
    "EnvPool",
    "call_env",
    "coerce_step_result",
]

logger = logging.getLogger(__name__)

# the pool's defaults, and through RolloutSettings those of AEMConfig (num_env_workers, env_worker_type,
# env_step_timeout) and of evaluate() / `trl-aem eval`
WORKER_TYPES = ("thread", "process")
DEFAULT_WORKER_TYPE = "thread"
DEFAULT_MAX_WORKERS = 8
DEFAULT_STEP_TIMEOUT = 60.0  # seconds

_SHUTDOWN = None
# what a pool call may ask of an environment: the contract's reset and step, the expert's moves for demonstrations,
# and close
ENV_METHODS = ("reset", "step", "expert_action", "admissible_actions", "close")
STARTUP_SECONDS = 120.0  # a new worker process may take this long to import before its first call's clock starts


class EnvFailedError(RuntimeError):
    """The environment failed every episode it was given: each one's ``reset`` or ``step`` raised, timed out or
    killed its worker, so there is nothing to learn from (the trainer after three such generation batches, the expert
    demonstrations after all their episodes, ``evaluate()`` after all of its). The message is one line naming the
    first failure; a single faulted episode is not an error (it ends, and the others go on)."""


@dataclass
class EnvCall:
    """``method`` (one of :data:`ENV_METHODS`, usually ``"reset"`` or ``"step"``) to run on the environment of
    ``slot`` with ``arg`` (ignored by the methods that take no argument)."""

    slot: int
    method: str
    arg: Any


@dataclass
class EnvOutcome:
    status: str  # "ok" | "error" | "timeout" | "contract"
    value: Any = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def reason(self) -> str:
        """The first line of ``error`` (what went wrong, without the traceback), ``""`` for a call that returned."""
        return (self.error or "").strip().split("\n", 1)[0]


def coerce_step_result(value: Any) -> StepResult:
    """Accept a :class:`StepResult` (or a gym-like ``(observation, reward, done, info)`` tuple, read as one); reject
    anything else with an :class:`EnvContractError` naming what was returned and what to return instead. The result
    is normalised: ``reward`` a float, ``done`` a bool, ``info`` a dict (``None`` reads as ``{}``)."""
    if isinstance(value, tuple) and len(value) == 4:
        value = StepResult(*value)
    if isinstance(value, tuple) and len(value) == 5:
        raise EnvContractError(
            "env.step returned a 5-tuple, gymnasium's (observation, reward, terminated, truncated, info): wrap a "
            "gymnasium-style environment with trl_aem.envs.gym_text.GymTextEnv (as env: "
            "trl_aem.envs.gym_text.gymnasium_env(make_env)), or return "
            "trl_aem.envs.StepResult(observation, reward, done=terminated or truncated, info) instead"
        )
    if not isinstance(value, StepResult):
        raise EnvContractError(
            f"env.step must return trl_aem.envs.StepResult(observation, reward, done, info), got "
            f"{type(value).__name__} {_preview(value)}"
        )
    if not isinstance(value.observation, str):
        raise EnvContractError(f"StepResult.observation must be str, got {type(value.observation).__name__}")
    try:
        reward = float(value.reward)
    except (TypeError, ValueError) as error:
        raise EnvContractError(f"StepResult.reward must be a number, got {value.reward!r}") from error
    if reward != reward or reward in (float("inf"), float("-inf")):
        raise ValueError(f"StepResult.reward must be finite, got {value.reward!r}")
    if value.info is not None and not isinstance(value.info, Mapping):
        raise EnvContractError(
            f"StepResult.info must be a dict, got {type(value.info).__name__} {_preview(value.info)}"
        )
    return StepResult(value.observation, reward, bool(value.done), dict(value.info or {}))


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def call_env(env: Any, method: str, arg: Any = None) -> Any:
    """``env.<method>(...)`` checked against the :class:`~trl_aem.envs.TextEnv` contract: ``reset`` must return a
    ``str``, ``step`` a :class:`StepResult` (:func:`coerce_step_result`), ``expert_action`` a ``str`` or ``None``,
    ``admissible_actions`` a list of ``str``. A wrong type raises :class:`EnvContractError`; whatever the environment
    itself raises propagates."""
    if method == "reset":
        observation = env.reset(arg)
        if not isinstance(observation, str):
            raise EnvContractError(
                f"env.reset must return the first observation as str, got {type(observation).__name__} "
                f"{_preview(observation)}"
            )
        return observation
    if method == "step":
        return coerce_step_result(env.step(arg))
    if method == "expert_action":
        action = env.expert_action()
        if action is not None and not isinstance(action, str):
            raise EnvContractError(
                f"env.expert_action must return the action as str (or None: no move), got {type(action).__name__} "
                f"{_preview(action)}"
            )
        return action
    if method == "admissible_actions":
        returned = env.admissible_actions()
        actions = list(returned) if isinstance(returned, (list, tuple)) else None
        if actions is None or not all(isinstance(a, str) for a in actions):
            raise EnvContractError(f"env.admissible_actions must return a list of str, got {_preview(returned)}")
        return actions
    if method == "close":
        close = getattr(env, "close", None)
        return close() if callable(close) else None
    raise ValueError(f"unknown env method {method!r}")


def _describe(error: BaseException) -> str:
    frames = traceback.format_exception(type(error), error, error.__traceback__)
    return f"{type(error).__name__}: {error}\n{''.join(frames[-3:])}"


class _ThreadWorker:
    """One environment instance in one daemon thread (daemon: a hung step cannot block interpreter exit)."""

    def __init__(self, slot: int, factory: Callable[[], Any], results: queue.Queue, epoch: int):
        self.slot, self.epoch = slot, epoch
        self._requests: queue.Queue = queue.Queue()
        self._thread = threading.Thread(
            target=self._loop, args=(factory, results), name=f"trl-aem-env-{slot}", daemon=True
        )
        self._thread.start()

    def _loop(self, factory, results: queue.Queue) -> None:
        env = None
        while True:
            request = self._requests.get()
            if request is _SHUTDOWN:
                break
            method, arg = request
            try:
                if env is None:
                    env = factory()
                results.put((self.slot, self.epoch, "ok", call_env(env, method, arg)))
            except EnvContractError as error:
                results.put((self.slot, self.epoch, "contract", str(error)))
            except BaseException as error:  # noqa: BLE001 - an env fault must not escape its worker
                results.put((self.slot, self.epoch, "error", _describe(error)))
        if env is not None and callable(getattr(env, "close", None)):
            try:
                env.close()
            except Exception:  # noqa: BLE001
                logger.warning("env.close() raised in slot %d", self.slot, exc_info=True)

    def submit(self, method: str, arg: Any) -> None:
        self._requests.put((method, arg))

    def kill(self) -> None:
        # A Python thread cannot be killed: abandon it (its late result is dropped by epoch).
        self._requests.put(_SHUTDOWN)

    def close(self) -> None:
        self._requests.put(_SHUTDOWN)


def _process_main(factory_bytes: bytes, conn) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    env = None
    factory_error = ""
    try:
        factory = pickle.loads(factory_bytes)
    except BaseException as error:  # noqa: BLE001
        factory, factory_error = None, _describe(error)
    conn.send(("ready", None))  # start-up (imports) does not count against the first call's timeout
    while True:
        try:
            request = conn.recv()
        except EOFError:
            break
        if request is _SHUTDOWN:
            break
        method, arg = request
        try:
            if factory is None:
                raise RuntimeError(f"could not unpickle the environment factory: {factory_error}")
            if env is None:
                env = factory()
            reply = ("ok", call_env(env, method, arg))
        except EnvContractError as error:
            reply = ("contract", str(error))
        except BaseException as error:  # noqa: BLE001
            reply = ("error", _describe(error))
        try:
            conn.send(reply)
        except Exception as error:  # noqa: BLE001 - e.g. an unpicklable observation
            conn.send(("error", f"could not send the result back: {_describe(error)}"))
    if env is not None and callable(getattr(env, "close", None)):
        with contextlib.suppress(Exception):
            env.close()


class _ProcessWorker:
    """One environment instance in one spawned process; a reader thread forwards its replies."""

    _context = mp.get_context("spawn")

    def __init__(self, slot: int, factory_bytes: bytes, results: queue.Queue, epoch: int):
        self.slot, self.epoch = slot, epoch
        parent, child = self._context.Pipe()
        self._conn = parent
        self._process = self._context.Process(
            target=_process_main, args=(factory_bytes, child), name=f"trl-aem-env-{slot}", daemon=True
        )
        self._process.start()
        child.close()
        self._reader = threading.Thread(target=self._read, args=(results,), daemon=True)
        self._reader.start()

    def _read(self, results: queue.Queue) -> None:
        while True:
            try:
                status, value = self._conn.recv()
            except (EOFError, OSError):
                code = self._process.exitcode
                if code is None:
                    self._process.join(timeout=1.0)
                    code = self._process.exitcode
                results.put((self.slot, self.epoch, "crash", f"environment process died (exit code {code})"))
                return
            except Exception as error:  # noqa: BLE001 - a reply that does not unpickle
                results.put((self.slot, self.epoch, "error", f"unreadable reply: {_describe(error)}"))
                continue
            results.put((self.slot, self.epoch, status, value))

    def submit(self, method: str, arg: Any) -> None:
        self._conn.send((method, arg))

    def kill(self) -> None:
        self._process.kill()
        self._process.join(timeout=5.0)
        self._conn.close()

    def close(self) -> None:
        with contextlib.suppress(OSError, BrokenPipeError):
            self._conn.send(_SHUTDOWN)
        self._process.join(timeout=5.0)
        if self._process.is_alive():
            self._process.kill()
        self._conn.close()


class EnvPool:
    """Environment slots with parallel, time-bounded calls.

    Args:
        factory: zero-argument callable returning a fresh environment (picklable in process mode: a class
            or a module-level function).
        worker_type: ``"thread"`` or ``"process"``.
        max_workers: calls running at the same time.
        timeout: seconds a single ``reset``/``step`` may take before it is abandoned.
    """

    def __init__(
        self,
        factory: Callable[[], Any],
        *,
        worker_type: str = DEFAULT_WORKER_TYPE,
        max_workers: int = DEFAULT_MAX_WORKERS,
        timeout: float = DEFAULT_STEP_TIMEOUT,
    ):
        if worker_type not in WORKER_TYPES:
            raise ValueError(f"worker_type must be 'thread' or 'process', got {worker_type!r}")
        if not callable(factory):
            raise TypeError(f"env must be a zero-argument callable returning an environment, got {factory!r}")
        self.factory, self.worker_type = factory, worker_type
        self.max_workers, self.timeout = max_workers, timeout
        self._factory_bytes = None
        if worker_type == "process":
            try:
                self._factory_bytes = pickle.dumps(factory)
            except Exception as error:
                raise TypeError(
                    f"env_worker_type='process' needs a picklable environment factory (a class or a module-level "
                    f"function), but {factory!r} cannot be pickled: {error}. Use env_worker_type='thread' or "
                    "move the factory to module level."
                ) from error
        self._results: queue.Queue = queue.Queue()
        self._workers: dict[int, _ThreadWorker | _ProcessWorker] = {}
        self._epochs: dict[int, int] = {}
        self.replaced = 0  # workers replaced after a timeout or a crash, over the pool's life
        self._pending: deque[EnvCall] = deque()
        self._started: dict[int, float] = {}  # slot -> start time of its in-flight call
        self._booting: set[int] = set()  # slots whose new worker process has not said "ready" yet
        self._done: dict[int, EnvOutcome] = {}

    def _worker(self, slot: int):
        worker = self._workers.get(slot)
        if worker is None:
            epoch = self._epochs.get(slot, 0) + 1
            self._epochs[slot] = epoch
            if self.worker_type == "thread":
                worker = _ThreadWorker(slot, self.factory, self._results, epoch)
            else:
                worker = _ProcessWorker(slot, self._factory_bytes, self._results, epoch)
            self._workers[slot] = worker
        return worker

    def _retire(self, slot: int) -> None:
        worker = self._workers.pop(slot, None)
        if worker is not None:
            worker.kill()
            self.replaced += 1

    def run(self, calls: list[EnvCall]) -> list[EnvOutcome]:
        """Run ``calls`` (at most one per slot) in parallel; return their outcomes in the same order."""
        self.start(calls)
        return self.wait([call.slot for call in calls])

    def start(self, calls: list[EnvCall]) -> None:
        """Queue ``calls`` and return at once; :meth:`wait` collects them. Lets the rollout engine overlap
        one group of episodes' environment steps with generation for another."""
        slots = {call.slot for call in calls}
        busy = self._started.keys() | self._done.keys() | {c.slot for c in self._pending}
        if len(slots) != len(calls) or slots & busy:
            raise ValueError("EnvPool: at most one outstanding call per slot")
        self._pending.extend(calls)
        self._dispatch()

    def _dispatch(self) -> None:
        while self._pending and len(self._started) < self.max_workers:
            call = self._pending.popleft()
            self._started[call.slot] = time.monotonic()
            try:
                if self.worker_type == "process" and call.slot not in self._workers:
                    self._booting.add(call.slot)
                self._worker(call.slot).submit(call.method, call.arg)
            except Exception as error:  # noqa: BLE001 - e.g. an argument that does not pickle
                self._retire(call.slot)
                self._finish(call.slot, EnvOutcome("error", error=f"could not start the call: {_describe(error)}"))

    def _finish(self, slot: int, outcome: EnvOutcome) -> None:
        outcome.seconds = time.monotonic() - self._started.pop(slot)
        self._booting.discard(slot)
        self._done[slot] = outcome

    def _deadline(self, slot: int) -> float:
        return self._started[slot] + self.timeout + (STARTUP_SECONDS if slot in self._booting else 0.0)

    def wait(self, slots: list[int]) -> list[EnvOutcome]:
        """Block until the calls of ``slots`` (started with :meth:`start`) are done; outcomes in that order."""
        wanted = set(slots)
        while not wanted <= self._done.keys():
            self._dispatch()
            if not self._started:
                missing = sorted(wanted - self._done.keys())
                raise RuntimeError(f"EnvPool.wait: no call was started for slots {missing}")
            wait = max(0.0, min(self._deadline(s) for s in self._started) - time.monotonic())
            try:
                slot, epoch, status, value = self._results.get(timeout=None if math.isinf(wait) else wait)
            except queue.Empty:
                now = time.monotonic()
                for slot in list(self._started):
                    if now >= self._deadline(slot):
                        self._retire(slot)
                        self._finish(slot, EnvOutcome("timeout", error=f"no answer within {self.timeout:g} s"))
                continue
            if slot not in self._started or epoch != self._epochs.get(slot):
                continue  # a late answer from an abandoned worker
            if status == "ready":
                self._started[slot] = time.monotonic()
                self._booting.discard(slot)
            elif status == "ok":
                self._finish(slot, EnvOutcome("ok", value=value))
            elif status == "contract":
                self._finish(slot, EnvOutcome("contract", error=value))
            else:
                if status == "crash":
                    self._retire(slot)
                self._finish(slot, EnvOutcome("error", error=value))
        return [self._done.pop(slot) for slot in slots]

    def close(self) -> None:
        """Close every environment (``env.close()`` in its worker) and stop the workers."""
        for worker in self._workers.values():
            worker.close()
        self._workers.clear()

    def __del__(self):
        # plain try/except: at interpreter exit module globals such as `contextlib` may already be gone
        try:  # noqa: SIM105
            self.close()
        except Exception:
            pass

"""A local sandbox for untrusted shell commands: one temporary directory per episode, commands jailed.

Each :class:`Sandbox` owns a fresh directory ``root`` (``root/repo`` is the working copy, ``root/home``
and ``root/tmp`` are the command's ``HOME`` and ``TMPDIR``), a size-limited tmpfs when the parent is root.
Every command runs as ``prlimit ... unshare --mount --pid --ipc --uts --fork --mount-proc [--net] [--user]
sh -c JAIL`` where ``JAIL`` (which stays PID 1 of the namespace and runs the command as its child):

- joins the sandbox's cgroup (:mod:`.bounds`: memory and process count of the whole sandbox);
- hides the parent's temporary directories (``/tmp``, ``/var/tmp``, ``/dev/shm``: private size-limited
  tmpfs), ``/run`` (daemon sockets such as ``docker.sock``), the parent's home directory, the directory the
  sandboxes are made in (other episodes' sandboxes, wherever ``TMPDIR`` points), the source checkout
  trl_aem runs from, and any ``hide`` paths (empty read-only tmpfs, with only the Python interpreter's
  own directories and the sandbox bound back read-only), and masks trl_aem's own package directory (its
  offline task sources and gold patches would be an answer key);
- remounts every other mount read-only, except the sandbox's ``repo``, ``home`` and ``tmp``;
- drops to a fresh per-sandbox uid (when the parent is root) or stays the user-namespace root (when not,
  with ``user.max_user_namespaces=0`` so no nested user namespace can be made), with every capability
  dropped and ``no_new_privs`` set, so the mounts cannot be undone;
- runs ``bash -c COMMAND`` in ``root/repo`` with an environment built from an allowlist (nothing of the
  parent's environment, so ``HF_TOKEN`` & co. never reach it).

Every command is started by one thread of the parent that carries a seccomp filter (:mod:`.spawner`,
:mod:`.seccomp`): only unix and inet sockets (no vsock, netlink, ...), no io_uring, and (root mode) no new
user namespaces. The network namespace is new and empty (loopback down): nothing is reachable. IPC
(System V shared memory, semaphores, message queues) and the host name are private too. The PID namespace
is new: the command sees only its own processes (not the trainer's ``/proc/PID/environ``), and when its
``bash`` ends, or the timeout kills the namespace's PID 1, every process it started is killed (``setsid``,
double forks included) before :meth:`Sandbox.run` returns, so nothing outlives a command. Limits
(``prlimit``, not ``preexec_fn``, which is unsafe in the threaded environment workers): CPU seconds, address
space, file size and process count per process; memory (processes and tmpfs files) and processes of the
whole sandbox through its cgroup; the workspace's size and file count through its tmpfs; a wall-clock
timeout kills the command's whole PID namespace; output is read incrementally, truncated with a marker,
and the command is killed once it has printed ``kill_output_bytes``.

What a machine cannot give is replaced by the strongest bound it can, logged once as a warning and listed
in :attr:`Sandbox.bounds` (never silently): without a cgroup memory controller, at most
``fallback_processes`` processes of ``total_memory_bytes / fallback_processes`` address space each; without
root (no tmpfs mount), only the per-file size limit bounds the disk; without seccomp (other architectures,
old kernels), other socket families and io_uring stay open.

Where namespaces are unavailable (no ``unshare``, user namespaces disabled) a sandbox refuses to start
with :class:`SandboxUnavailable` unless ``allow_network=True`` is passed explicitly: then commands run
with the limits, the timeout and the scrubbed environment but without any namespace (no network or
filesystem isolation). The scrubbed environment then hides nothing that matters: a command runs as the
trainer's own uid and can read the trainer's secrets elsewhere, e.g. ``/proc/$PPID/environ`` (the
trainer's full environment, ``HF_TOKEN`` included), its files and its home directory; background
processes may outlive the command. See the README's SWE section for what is and is not contained.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import glob
import logging
import os
import random
import secrets
import selectors
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import weakref
from dataclasses import dataclass

from .bounds import Cgroup, make_cgroup, mount_tmpfs, unmount
from .cleanup import remove_tree, walk_paths
from .spawner import spawner

__all__ = [
    "CommandResult",
    "Sandbox",
    "SandboxError",
    "SandboxLimits",
    "SandboxUnavailable",
    "PathEscape",
    "isolation",
    "truncate",
]

logger = logging.getLogger(__name__)

PREFIX = "trl-aem-swe-"
LOCK_SUFFIX = ".lock"  # root + LOCK_SUFFIX: flock()ed by the owning process for the sandbox's lifetime
TRUNCATION_MARKER = "\n[... {n} characters truncated ...]\n"
_JAIL_FAILED = 125  # exit code of the jail script when it could not set itself up


class SandboxError(RuntimeError):
    """The sandbox could not run a command (set-up failure, not the command's own failure)."""


class SandboxUnavailable(SandboxError):
    """Namespaces are not available here; pass ``allow_network=True`` to run without isolation."""


class PathEscape(ValueError):
    """A path given to a file tool resolves outside the repository."""


@dataclass
class SandboxLimits:
    """Limits of one sandbox. ``timeout`` is wall-clock seconds per command; ``cpu_seconds``,
    ``memory_bytes`` (address space) and ``file_bytes`` are per process; ``total_memory_bytes`` (memory of all
    its processes and tmpfs files), ``processes``, ``disk_bytes`` and ``max_files`` (the workspace's size and
    inodes) are for the whole sandbox. Without a cgroup memory controller the total is kept by at most
    ``fallback_processes`` processes of ``total_memory_bytes / fallback_processes`` address space each."""

    timeout: float = 60.0
    cpu_seconds: int = 120
    memory_bytes: int = 2 << 30
    file_bytes: int = 64 << 20
    processes: int = 256
    output_chars: int = 10_000
    kill_output_bytes: int = 16 << 20
    tmpfs_bytes: int = 64 << 20  # size of the private /tmp, /var/tmp and /dev/shm of one command
    total_memory_bytes: int = 2 << 30
    disk_bytes: int = 256 << 20  # repo + home + tmp of the sandbox together
    max_files: int = 65536  # inodes of the workspace (each costs kernel memory, outside disk_bytes)
    fallback_processes: int = 16


@dataclass
class CommandResult:
    output: str
    exit_code: int | None  # None when the command was killed by the timeout or the output cap
    timed_out: bool = False
    output_truncated: bool = False
    seconds: float = 0.0
    killed_reason: str | None = None
    raw_bytes: int = 0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def truncate(text: str, limit: int) -> str:
    """``text`` if it fits in ``limit`` characters, else its head and tail around a truncation marker."""
    if len(text) <= limit:
        return text
    head = limit // 2
    tail = limit - head
    return text[:head] + TRUNCATION_MARKER.format(n=len(text) - limit) + text[-tail:]


# ---------------------------------------------------------------------------- isolation probe
@functools.lru_cache(maxsize=1)
def isolation() -> tuple[str | None, str]:
    """``("root" | "userns", "")`` when this process can build the jail, else ``(None, reason)``.

    ``root``: the parent is root; the jail uses plain namespaces and drops to a per-sandbox uid.
    ``userns``: an unprivileged user namespace maps the caller to root inside (``unshare --user``).
    """
    for tool in ("unshare", "prlimit", "setpriv", "findmnt", "mount", "bash", "find"):
        if shutil.which(tool) is None:
            return None, f"`{tool}` is not installed"
    mode = "root" if os.geteuid() == 0 else "userns"
    argv = ["unshare", "--mount", "--net", "--pid", "--fork", "--mount-proc", "--kill-child"]
    if mode == "userns":
        argv.insert(1, "--map-root-user")
    try:
        proc = subprocess.run(
            [*argv, "sh", "-c", "mount -t tmpfs probe /mnt 2>&1 || mount -t tmpfs probe /tmp"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError) as error:
        return None, f"unshare failed: {error}"
    if proc.returncode != 0:
        return None, f"`{' '.join(argv)}` failed: {(proc.stderr or proc.stdout).strip()[:300]}"
    return mode, ""


@functools.lru_cache(maxsize=1)
def _nested_userns_refusable() -> str:
    """'' if the jail of user-namespace mode can refuse nested user namespaces (``user.max_user_namespaces``
    is per user namespace and writable by its root), else why not."""
    argv = ["unshare", "--map-root-user", "--mount", "--pid", "--fork", "--mount-proc", "--kill-child"]
    script = "echo 0 > /proc/sys/user/max_user_namespaces || exit 3; unshare --user true 2>/dev/null || echo refused"
    try:
        proc = subprocess.run([*argv, "sh", "-c", script], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as error:
        return f"probe failed: {error}"
    if proc.returncode != 0 or "refused" not in proc.stdout:
        return f"user.max_user_namespaces cannot be set inside the jail: {(proc.stderr or proc.stdout).strip()[:200]}"
    return ""


# ---------------------------------------------------------------------------- stale directories
_swept: set[str] = set()


def _sweep_stale(base: str) -> None:
    """Remove sandbox directories left behind by processes that died without cleaning up (SIGKILL, OOM).

    Only those whose owner is provably gone: an owner holds ``flock`` on its ``root.lock`` for as long as it
    lives, and the kernel drops the lock when the process dies, whatever its PID namespace, container or
    boot (a PID says nothing across PID namespaces, and can be reused). Directories without a lock file
    (made by older versions) are never touched, nor files of other users."""
    if base in _swept:
        return
    _swept.add(base)
    for lock in glob.glob(os.path.join(glob.escape(base), PREFIX + "*" + LOCK_SUFFIX)):
        try:
            _sweep_one(lock)
        except Exception:  # noqa: BLE001 - a leftover is never worth failing a new sandbox for
            logger.warning("could not sweep the stale sandbox %s", lock[: -len(LOCK_SUFFIX)], exc_info=True)


def _sweep_one(lock: str) -> None:
    try:
        fd = os.open(lock, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return  # removed meanwhile, or not ours to open
    try:
        if os.fstat(fd).st_uid != os.geteuid():
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # its owner is alive
        root = lock[: -len(LOCK_SUFFIX)]
        if _release_root(root):
            _remove_recorded_cgroups(fd, os.path.basename(root))
            os.unlink(lock)
    finally:
        os.close(fd)


def _remove_recorded_cgroups(lock_fd: int, name: str) -> None:
    """Remove the cgroups a dead owner recorded in its lock file (they may lie under another process's
    cgroup than the sweeper's): only directories named after the sandbox that are cgroups."""
    with os.fdopen(os.dup(lock_fd), "r") as handle:
        handle.seek(0)
        recorded = handle.read(65536).splitlines()
    dirs = [d for d in recorded if os.path.isabs(d) and os.path.basename(d) == name]
    Cgroup([d for d in dirs if os.path.isfile(os.path.join(d, "cgroup.procs"))], "").remove()


def _release_root(root: str) -> bool:
    """Unmount ``root`` (if it is a mount point) and remove it; True when it is gone. Never raises."""
    try:
        if os.path.ismount(root):
            unmount(root)
        with contextlib.suppress(FileNotFoundError):
            if os.lstat(root).st_uid != os.geteuid():
                return False
        remove_tree(root)
    except Exception:  # noqa: BLE001 - cleanup must not fail its caller (a finalizer, reset(), a sweep)
        logger.warning("could not remove the sandbox %s", root, exc_info=True)
    return not os.path.lexists(root)


def _release(root: str, lock_fd: int, owned: dict) -> None:
    """The finalizer of a sandbox: remove everything, then give up the lock (the lock file stays when the
    directory could not be removed, so that a later sweep tries again)."""
    try:
        if owned.get("cgroup") is not None:
            owned["cgroup"].remove()
        if _release_root(root):
            with contextlib.suppress(OSError):
                os.unlink(root + LOCK_SUFFIX)
    finally:
        with contextlib.suppress(OSError):
            os.close(lock_fd)


def _claim(base: str) -> tuple[str, int]:
    """A fresh, locked sandbox name in ``base``: the lock file is made and locked before the directory, so a
    sweep never sees the directory without its owner's lock."""
    for _ in range(100):
        root = os.path.join(base, f"{PREFIX}{os.getpid()}-{secrets.token_hex(6)}")
        try:
            fd = os.open(root + LOCK_SUFFIX, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.mkdir(root, 0o700)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(root + LOCK_SUFFIX)
            raise
        return root, fd
    raise SandboxError(f"cannot make a sandbox directory in {base}")


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        logger.warning("SWE sandbox: %s", message)


def _package_dir() -> str | None:
    """trl_aem's own package directory (its offline task sources and gold patches: an answer key)."""
    package = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
    if os.path.basename(package) == "trl_aem" and os.path.isdir(os.path.join(package, "envs", "swe")):
        return package
    return None


def _source_checkout(package: str | None) -> str | None:
    """The source tree trl_aem runs from (an editable install or a checkout on ``sys.path``: its git history
    and build directories hold the task sources too); None for an installed package (site-packages)."""
    if package is None:
        return None
    parent = os.path.dirname(package)
    if parent == "/" or os.path.basename(parent) in ("site-packages", "dist-packages"):
        return None
    return parent


def _interpreter_dirs() -> list[str]:
    """Directories the Python interpreter needs (re-exposed read-only inside hidden directories)."""
    import site

    dirs = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    dirs.add(os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))))
    dirs.update(p for p in sys.path if p.endswith(("site-packages", "dist-packages")))  # not the script's dir
    if site.ENABLE_USER_SITE:
        dirs.add(site.getusersitepackages())
    return sorted({os.path.realpath(d) for d in dirs if d and os.path.isdir(d)})


def _children(pid: int) -> list[int]:
    """Pids of ``pid``'s child processes (``/proc/PID/task/PID/children``, else a scan of ``/proc``)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(child) for child in handle.read().split()]
    except (OSError, ValueError):
        pass
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if fields[1] == str(pid):  # fields after "(comm)": state, ppid, ...
                children.append(int(entry))
    return children


def _under(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


# ---------------------------------------------------------------------------- the sandbox
class Sandbox:
    """A temporary directory holding a copy of ``source`` in which commands run jailed (module docstring).

    Args:
        source: directory copied to ``root/repo`` (``None``: an empty repo directory).
        limits: :class:`SandboxLimits` (per command, per process, and for the whole sandbox).
        allow_network: explicit opt-out for machines without namespaces: run without isolation (commands run
            as the trainer's uid and can read its environment through ``/proc/$PPID/environ``, its files,
            the network).
        hide: extra host directories to hide from commands (e.g. a data directory with credentials).
        base_dir: where the temporary directory is made (default: the system temporary directory); hidden
            from commands as a whole (other sandboxes live there too), so it must not be ``/``.
        env: extra environment variables for commands (added to the allowlist's).

    :attr:`bounds` says, mechanism by mechanism (memory, disk, syscalls, user_namespaces), what bounds this
    sandbox on this machine; :attr:`weakened` lists the ones only partly bounded (also logged once).

    Use it as a context manager or call :meth:`close`; the directory is also removed when the object is
    garbage collected, at interpreter exit, and by the next process that finds it orphaned (its owner's
    lock on ``root.lock`` released).
    """

    def __init__(
        self,
        source: str | os.PathLike | None = None,
        *,
        limits: SandboxLimits | None = None,
        allow_network: bool = False,
        hide: tuple[str, ...] = (),
        base_dir: str | None = None,
        env: dict[str, str] | None = None,
    ):
        self.limits = limits or SandboxLimits()
        self.allow_network = allow_network
        self.mode, reason = isolation()
        if self.mode is None and not allow_network:
            raise SandboxUnavailable(
                f"The SWE sandbox needs Linux namespaces (unshare) to cut the network and confine writes, and "
                f"they are not available here: {reason}. Commands written by a model are untrusted; to run them "
                "anyway without network or filesystem isolation (limits, timeout and scrubbed environment still "
                "apply, but commands run as this process's uid and can read its secrets, e.g. its whole "
                "environment through /proc/$PPID/environ, and its files), pass allow_network=True explicitly."
            )
        base = os.path.realpath(base_dir or tempfile.gettempdir())
        if base == "/":
            raise SandboxError("base_dir must not be '/': the sandboxes' directory is hidden from commands")
        _sweep_stale(base)
        self.root, lock_fd = _claim(base)
        self.bounds: dict[str, str] = {}  # what bounds this sandbox, mechanism by mechanism (see weakened)
        self.cgroup: Cgroup | None = None
        self._owned: dict = {"cgroup": None, "lock_fd": lock_fd}  # what the finalizer removes or closes
        self._finalizer = weakref.finalize(self, _release, self.root, lock_fd, self._owned)
        try:
            self._set_up(source, hide, env)
        except BaseException:
            self.close()
            raise

    def _set_up(self, source, hide: tuple[str, ...], env: dict[str, str] | None) -> None:
        self._bound_disk()
        os.chmod(self.root, 0o755)  # the parent's; commands may traverse it, never write it
        self.repo = os.path.join(self.root, "repo")
        self.home = os.path.join(self.root, "home")
        self.tmp = os.path.join(self.root, "tmp")
        if source is not None:
            shutil.copytree(source, self.repo, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            os.makedirs(self.repo)
        os.makedirs(self.home)
        os.makedirs(self.tmp)
        # Root parent: commands run as a uid of their own (files of other users are not theirs to read,
        # and RLIMIT_NPROC, which never applies to root, counts this sandbox's processes only).
        self.uid = random.SystemRandom().randrange(1 << 30, 1 << 31) if self.mode == "root" else None
        for directory in (self.repo, self.home, self.tmp):
            self.chown(directory)
        self._hide = tuple(hide)
        self._extra_env = dict(env or {})
        self._nonce = secrets.token_hex(8)
        self._bound_memory()
        self._bound_syscalls()
        self._jail = self._jail_script() if self.mode is not None else None

    @property
    def weakened(self) -> list[str]:
        """The bounds this machine could not apply in full (each also logged once as a warning)."""
        return [f"{name}: {text}" for name, text in self.bounds.items() if text.startswith("NOT BOUNDED")]

    def _bound_disk(self) -> None:
        """The workspace becomes a tmpfs of ``disk_bytes`` (root only): commands cannot fill the host's disk."""
        lim = self.limits
        reason = (
            "no namespaces (allow_network fallback)"
            if self.mode is None
            else mount_tmpfs(self.root, lim.disk_bytes, lim.max_files)
        )
        self._mounted = not reason
        if self._mounted:
            self.bounds["disk"] = f"tmpfs size={lim.disk_bytes}, nr_inodes={lim.max_files} (the whole workspace)"
        else:
            self.bounds["disk"] = (
                f"NOT BOUNDED as a whole ({reason}); each file at most {lim.file_bytes} bytes (RLIMIT_FSIZE)"
            )
            _warn_once(f"disk {self.bounds['disk']}")

    def _bound_memory(self) -> None:
        """A cgroup for the whole sandbox, else the documented fallback: few processes, less address space."""
        lim = self.limits
        self._nproc, self._address_space = lim.processes, lim.memory_bytes
        if self.mode is None:  # RLIMIT_NPROC then counts every process of the trainer's uid: no fallback
            self.bounds["memory"] = (
                "NOT BOUNDED: no namespaces (allow_network fallback), no cgroup; each process at most "
                f"{lim.memory_bytes} bytes of address space (RLIMIT_AS)"
            )
            _warn_once(f"memory {self.bounds['memory']}")
            return
        self.cgroup, reason = make_cgroup(os.path.basename(self.root), lim.total_memory_bytes, lim.processes)
        if self.cgroup is not None:
            self._owned["cgroup"] = self.cgroup
            # recorded for a sweep after a crash (the sweeper's own cgroup may be elsewhere)
            os.write(self._owned["lock_fd"], "".join(d + "\n" for d in self.cgroup.dirs).encode())
            self.bounds["memory"] = self.cgroup.description
            return
        self._nproc = max(1, min(lim.processes, lim.fallback_processes))
        self._address_space = min(lim.memory_bytes, lim.total_memory_bytes // self._nproc)
        # RLIMIT_NPROC counts this sandbox's processes only: its own uid (root mode), or uid 0 of its own user
        # namespace (the jail sets the limit inside the namespace, see _jail_script)
        self.bounds["memory"] = (
            f"NOT BOUNDED by a cgroup ({reason}); fallback: at most {self._nproc} processes (RLIMIT_NPROC) of "
            f"{self._address_space} bytes of address space each (RLIMIT_AS), {self._nproc * self._address_space} "
            "in all, plus the tmpfs files"
        )
        _warn_once(f"memory {self.bounds['memory']}")

    def _bound_syscalls(self) -> None:
        """The seccomp filter of the spawner thread; nested user namespaces by filter or by sysctl."""
        self._spawner = spawner(block_user_namespaces=self.mode != "userns")
        if self._spawner.applied:
            self.bounds["syscalls"] = self._spawner.description
        else:
            self.bounds["syscalls"] = (
                f"NOT BOUNDED: no seccomp filter ({self._spawner.description}); socket families other than "
                "unix/inet (vsock, netlink, ...) and io_uring are open to commands"
            )
            _warn_once(f"syscalls {self.bounds['syscalls']}")
        # user-namespace mode: the jail needs CLONE_NEWUSER itself, so its own namespace refuses nested ones
        reason = _nested_userns_refusable() if self.mode == "userns" else ""
        self._refuse_userns = self.mode == "userns" and not reason
        if self._refuse_userns:
            self.bounds["user_namespaces"] = "refused: user.max_user_namespaces=0 in the jail's user namespace"
        elif self.mode != "userns" and self._spawner.applied:
            self.bounds["user_namespaces"] = "refused by the seccomp filter"
        else:
            why = reason or "no seccomp filter"
            self.bounds["user_namespaces"] = f"NOT BOUNDED: commands may create user namespaces ({why})"
            _warn_once(f"user namespaces {self.bounds['user_namespaces']}")

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Remove the sandbox directory (idempotent)."""
        self._finalizer()

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ files (for the parent's file tools)
    def chown(self, path: str) -> None:
        """Give ``path`` (recursively) to the sandbox's uid, so commands can modify what the parent wrote."""
        if self.uid is None:
            return
        os.lchown(path, self.uid, self.uid)
        if os.path.isdir(path) and not os.path.islink(path):
            for child in walk_paths(path):  # iterative: no recursion limit, whatever the depth
                os.lchown(child, self.uid, self.uid)

    def private_dir(self, name: str) -> str:
        """A fresh directory ``root/name`` that commands can read but not modify (for the parent's files)."""
        path = os.path.join(self.root, name)
        remove_tree(path)
        os.makedirs(path)
        os.chmod(path, 0o755)
        return path

    def resolve(self, path: str) -> str:
        """The real path of ``path`` (relative to the repo, or absolute) after following symlinks; raises
        :class:`PathEscape` if it is not inside the repository."""
        if not isinstance(path, str) or not path.strip() or "\x00" in path:
            raise PathEscape(f"invalid path {path!r}")
        candidate = path.strip()
        if not os.path.isabs(candidate):
            candidate = os.path.join(self.repo, candidate)
        real = os.path.realpath(candidate)
        if not _under(real, os.path.realpath(self.repo)):
            raise PathEscape(f"{path!r} is outside the repository")
        return real

    def relative(self, real: str) -> str:
        return os.path.relpath(real, os.path.realpath(self.repo))

    # The file tools resolve a path, check that it stays in the repository, then open it. Between the check
    # and the open no command of the sandbox runs (run() returns only once every process of the command's
    # PID namespace is gone, and the parent calls the tools between commands), so nothing can swap a path
    # component for a symlink in between; O_NOFOLLOW on the last component and the regular-file check are a
    # second line (a FIFO or a device would block or never end a read). chown, remove_tree and _fresh_dir
    # walk by path or descriptor under the same assumption. It does not hold in the fallback mode (no PID
    # namespace: a command's background processes may outlive it).
    def _open_regular(self, real: str, flags: int) -> int:
        """An fd of the regular file ``real`` (not following a final symlink, never blocking on a FIFO)."""
        flags |= os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(real, flags, 0o644)
        except OSError as error:
            if error.errno in (errno.ENXIO, errno.ELOOP, errno.ENODEV, errno.EOPNOTSUPP):
                raise OSError(error.errno, "not a regular file", self.relative(real)) from None
            raise
        try:
            mode = os.fstat(fd).st_mode
            if stat.S_ISDIR(mode):
                raise IsADirectoryError(errno.EISDIR, "is a directory", self.relative(real))
            if not stat.S_ISREG(mode):
                raise OSError(errno.EINVAL, "not a regular file", self.relative(real))
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def read_text(self, path: str) -> str:
        real = self.resolve(path)
        with open(self._open_regular(real, os.O_RDONLY), encoding="utf-8", errors="replace") as handle:
            return handle.read()

    def write_text(self, path: str, text: str, *, create_dirs: bool = True) -> str:
        """Write ``text`` to ``path`` inside the repository; returns the repo-relative path."""
        real = self.resolve(path)
        if os.path.isdir(real):
            raise IsADirectoryError(f"{self.relative(real)} is a directory")
        parent = os.path.dirname(real)
        if create_dirs and not os.path.isdir(parent):
            os.makedirs(parent)
            self.chown(self._topmost_new(parent))
        fd = self._open_regular(real, os.O_WRONLY | os.O_CREAT)
        with open(fd, "w", encoding="utf-8") as handle:
            handle.truncate(0)
            handle.write(text)
        self.chown(real)
        return self.relative(real)

    def _topmost_new(self, directory: str) -> str:
        # the highest directory of `directory`'s chain below the repo that was just created
        repo = os.path.realpath(self.repo)
        top = directory
        while os.path.dirname(top) != repo and _under(os.path.dirname(top), repo):
            top = os.path.dirname(top)
        return top

    # ------------------------------------------------------------------ commands
    def environment(self) -> dict[str, str]:
        """The whole environment of a command: an allowlist, never the parent's variables."""
        path = os.pathsep.join(
            dict.fromkeys([os.path.dirname(sys.executable), "/usr/local/bin", "/usr/bin", "/bin"]).keys()
        )
        env = {
            "PATH": path,
            "HOME": self.home,
            "TMPDIR": self.tmp,
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "TERM": "dumb",
            "PAGER": "cat",
            "GIT_PAGER": "cat",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
            "PIP_NO_INDEX": "1",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
            "GIT_CONFIG_NOSYSTEM": "1",
        }
        env.update(self._extra_env)
        return env

    def _hidden_dirs(self, sandbox: str) -> tuple[list[str], list[str]]:
        """(temporary directories replaced by private writable tmpfs, directories hidden under empty ones)."""
        rw_tmp = [d for d in ("/tmp", "/var/tmp", "/dev/shm") if os.path.isdir(d) and not os.path.islink(d)]
        candidates = [
            "/run",  # daemon sockets (docker.sock, ...)
            "/sys/fs/cgroup",  # after PID 1 joined its cgroup; one mount instead of a remount per hierarchy
            os.path.expanduser("~"),  # the parent's credentials and caches
            os.path.dirname(sandbox),  # every other sandbox, wherever TMPDIR points
            _source_checkout(_package_dir()),  # the task sources in the checkout and its git history
            *self._hide,
        ]
        candidates = [os.path.realpath(d) for d in candidates if d and os.path.isdir(d)]
        candidates = [d for d in dict.fromkeys(candidates) if d != "/" and not any(_under(d, t) for t in rw_tmp)]
        # a directory inside another hidden one is hidden already (and its mount point would not exist)
        ro_hide = [d for d in candidates if not any(h != d and _under(d, h) for h in candidates)]
        return rw_tmp, ro_hide

    @staticmethod
    def _stage_dir(related: list[str]) -> str:
        """An existing directory to park mounts on, unrelated to every parked or hidden path (a stage that
        contains, or lies inside, one of them would hide it or be hidden)."""
        for d in ("/mnt", "/media", "/srv", "/opt", "/boot"):
            if os.path.isdir(d) and not os.path.islink(d) and not any(_under(p, d) or _under(d, p) for p in related):
                return d
        raise SandboxError("no directory to stage the jail's mounts on (/mnt, /media, /srv, /opt, /boot)")

    def _jail_script(self) -> str:
        """The ``sh`` script run as PID 1 of the new namespaces; ``$1`` is the user's command."""
        q = shlex.quote
        sandbox = os.path.realpath(self.root)
        rw_tmp, ro_hide = self._hidden_dirs(sandbox)
        hidden = rw_tmp + ro_hide
        keep = [
            d for d in _interpreter_dirs() if any(_under(d, h) and d != h for h in hidden) and not _under(sandbox, d)
        ]
        keep = [d for d in keep if not any(k != d and _under(d, k) for k in keep)]
        parked = [sandbox, *keep]
        stage = self._stage_dir(parked + hidden)
        # trl_aem's own package, where still visible (installed in a site-packages bound back): masked
        package = _package_dir()
        visible = package and (not any(_under(package, h) for h in hidden) or any(_under(package, p) for p in parked))
        masks = [package] if visible and not _under(sandbox, package) else []
        lines = [
            "set -e",
            f'fail() {{ echo "trl-aem sandbox $TRL_AEM_JAIL_NONCE: $*" >&2; exit {_JAIL_FAILED}; }}',
        ]
        # 0. the whole sandbox's memory and process count: PID 1 joins its cgroup before starting anything
        for procs in self.cgroup.procs_files if self.cgroup is not None else []:
            lines.append(f"echo 0 > {q(procs)} || fail 'join the cgroup {procs}'")
        if self._refuse_userns:  # a per-user-namespace limit: no nested user namespace below this one
            lines.append("echo 0 > /proc/sys/user/max_user_namespaces || fail 'max_user_namespaces'")
        lines += [
            "mount -n --make-rprivate / || fail 'make-rprivate'",
            # 1. park what must stay visible (the sandbox, the interpreter) on a staging tmpfs
            f"mount -n -t tmpfs -o mode=700,size=16k trl-aem-stage {q(stage)} || fail 'stage'",
        ]
        for i, path in enumerate(parked):
            lines.append(f"mkdir {q(stage)}/{i} && mount -n --rbind {q(path)} {q(stage)}/{i} || fail 'park {i}'")
        # 2. hide: temporary directories become private tmpfs (rw), the rest empty tmpfs (made ro in 4)
        size = self.limits.tmpfs_bytes
        for d in rw_tmp:
            lines.append(f"mount -n -t tmpfs -o mode=1777,size={size} trl-aem-tmp {q(d)} || fail 'hide {d}'")
        for d in ro_hide:  # read-only at once unless a parked directory goes back inside (mkdir in 3)
            ro = "" if any(_under(p, d) for p in parked) else "ro,"
            lines.append(f"mount -n -t tmpfs -o {ro}mode=755,size=64k trl-aem-hidden {q(d)} || fail 'hide {d}'")
        # 3. put the parked directories back at their own paths, then mask what must not be seen in them
        for i, path in enumerate(parked):
            lines.append(f"mkdir -p {q(path)} && mount -n --move {q(stage)}/{i} {q(path)} || fail 'unpark {i}'")
        lines.append(f"umount -n {q(stage)} || fail 'unstage'")
        for d in masks:
            lines.append(f"mount -n -t tmpfs -o ro,mode=755,size=4k trl-aem-masked {q(d)} || fail 'mask {d}'")
        # 4. only repo/, home/ and tmp/ are writable: the sandbox root (where the parent keeps its own files)
        # is not, and mount points cannot be renamed or replaced by a symlink
        inner = [os.path.join(sandbox, d) for d in ("repo", "home", "tmp")]
        for d in inner:
            lines.append(f"mount -n --bind {q(d)} {q(d)} || fail 'bind {d}'")
        lines += self._readonly_loop(writable=[*inner, *rw_tmp], exposed=parked, hidden=hidden)
        lines.append(f"cd {q(os.path.join(sandbox, 'repo'))} || fail 'cd'")
        drop = "setpriv --bounding-set=-all --inh-caps=-all --no-new-privs"
        if self.uid is not None:
            drop = f"setpriv --reuid={self.uid} --regid={self.uid} --clear-groups --inh-caps=-all --bounding-set=-all --no-new-privs"
        # Not `exec`: this shell stays PID 1 of the namespace, runs the command as its child and exits with
        # its status. PID 1 keeps the parent-death signal of `unshare --kill-child` (a uid change, as
        # setpriv --reuid does, would clear it), and when PID 1 ends, by itself or killed, the kernel kills
        # every process of the namespace (setsid'd or double-forked ones included) before unshare can reap
        # it: nothing of a command outlives run(). The nonce leaves the environment first (the command
        # cannot read PID 1's /proc/1/environ: another uid, or more capabilities).
        # RLIMIT_NPROC set inside the namespaces, not by the outer prlimit: a user namespace's creator passes
        # its own limit on to the parent level of the count, where every process of the trainer's uid counts
        # (dash: ulimit -p; bash: ulimit -u)
        n = self._nproc
        lines.append(
            f"ulimit -u {n} 2>/dev/null || ulimit -p {n} 2>/dev/null || prlimit --pid $$ --nproc={n} || fail 'nproc'"
        )
        lines += ["set +e", "unset TRL_AEM_JAIL_NONCE", f'{drop} -- bash -c "$1"', "exit $?"]
        self.hidden = hidden
        return "\n".join(lines) + "\n"

    @staticmethod
    def _readonly_loop(*, writable: list[str], exposed: list[str], hidden: list[str]) -> list[str]:
        """Lines remounting every mount read-only except ``writable`` ones, keeping each mount's own flags
        (user namespaces refuse to clear them). Skipped, to spare a ``mount`` process each: mounts already
        read-only, and mounts below a hidden directory that are not re-exposed (covered: unreachable)."""
        q = shlex.quote
        # one `case`: its first matching pattern wins, so an exposed path below a hidden one is remounted
        arms = [" | ".join(q(w) for w in writable) + ") continue ;;"]
        arms.append(" | ".join(f"{q(e)} | {q(e)}/*" for e in exposed) + ") ;;")
        if hidden:
            arms.append(" | ".join(f"{q(h)}/*" for h in hidden) + ") continue ;;")
        return [
            "findmnt -rn -o TARGET,VFS-OPTIONS | sort -r | while read -r target options; do",
            '  case "$target" in',
            *[f"    {arm}" for arm in arms],
            "  esac",
            '  case "$options" in ro | ro,*) continue ;; esac',
            "  opts=${options#rw}; opts=${opts#,}",  # parameter expansion: no sed process per mount
            '  mount -n -o "remount,bind,ro${opts:+,$opts}" "$target" 2>/dev/null \\',
            '    || mount -n -o remount,bind,ro "$target" || fail "read-only $target"',
            "done",
        ]

    def argv(self, command: str) -> list[str]:
        """The full argv that runs ``command`` (exposed for tests and debugging)."""
        lim = self.limits
        cpu = max(1, int(lim.cpu_seconds))
        prlimit = [
            "prlimit",
            f"--cpu={cpu}:{cpu + 1}",
            f"--as={self._address_space}",  # less than memory_bytes without a cgroup (_bound_memory)
            f"--fsize={lim.file_bytes}",
            "--core=0",
        ]
        if self._jail is None:  # explicit opt-out: limits only
            return ["setpriv", "--pdeathsig=KILL", *prlimit, f"--nproc={self._nproc}", "bash", "-c", command]
        unshare = ["unshare", "--mount", "--pid", "--ipc", "--uts", "--fork", "--mount-proc", "--kill-child"]
        if not self.allow_network:
            unshare.append("--net")
        if self.mode == "userns":
            unshare.insert(1, "--map-root-user")
        # setpriv --pdeathsig: if the trainer dies, unshare dies, and with it (--kill-child) the namespace
        return ["setpriv", "--pdeathsig=KILL", *prlimit, *unshare, "sh", "-c", self._jail, "trl-aem-jail", command]

    def run(self, command: str, timeout: float | None = None, *, output_chars: int | None = None) -> CommandResult:
        """Run ``command`` with ``bash -c`` in the repository, jailed; never raises for the command's own
        failures (non-zero exit, timeout, output cap), only :class:`SandboxError` for a broken jail."""
        if self.closed:
            raise SandboxError("the sandbox is closed")
        lim = self.limits
        timeout = lim.timeout if timeout is None else timeout
        output_chars = lim.output_chars if output_chars is None else output_chars
        started = time.monotonic()
        env = self.environment()
        if self._jail is not None:
            env["TRL_AEM_JAIL_NONCE"] = self._nonce  # read by the jail script only (it unsets it)
        proc = self._spawner.popen(  # from the thread carrying the seccomp filter
            self.argv(command),
            cwd=self.repo,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the timeout kills all of it
            close_fds=True,
        )
        head, tail, total, reason = bytearray(), bytearray(), 0, None
        keep = max(1, output_chars) * 4  # bytes kept at each end (a character is at most 4 bytes)
        fd = proc.stdout.fileno()
        deadline = started + timeout
        selector = selectors.DefaultSelector()  # not select.select: it fails for fds >= 1024
        selector.register(fd, selectors.EVENT_READ)
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    reason = "timeout"
                    break
                ready = selector.select(min(remaining, 1.0))
                if not ready:
                    continue
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    break
                total += len(chunk)
                if len(head) < keep:
                    room = keep - len(head)
                    head += chunk[:room]
                    chunk = chunk[room:]
                if chunk:
                    tail += chunk
                    if len(tail) > keep:
                        del tail[: len(tail) - keep]
                if total > lim.kill_output_bytes:
                    reason = "output"
                    break
        finally:
            selector.close()
            if reason is not None:
                self._kill(proc)
            proc.stdout.close()
            try:
                exit_code = proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._kill(proc)
                exit_code = proc.wait()
        # the nonce is known to the jail script only (an environment variable it unsets before the command
        # starts): a command cannot fake a jail failure to turn its episode into an unscored fault
        if exit_code == _JAIL_FAILED and f"trl-aem sandbox {self._nonce}:".encode() in head:
            raise SandboxError(f"the sandbox could not set itself up: {head.decode(errors='replace').strip()}")
        skipped = total - len(head) - len(tail)
        text = head.decode("utf-8", errors="replace")
        if skipped > 0 or tail:
            text += (TRUNCATION_MARKER.format(n=f"{skipped} bytes") if skipped > 0 else "") + tail.decode(
                "utf-8", errors="replace"
            )
        shown = truncate(text, output_chars)
        if reason == "timeout":
            shown += f"\n[command killed: no result within {timeout:g} seconds]"
        elif reason == "output":
            shown += f"\n[command killed: it printed more than {lim.kill_output_bytes} bytes]"
        return CommandResult(
            output=shown,
            exit_code=None if reason else exit_code,
            timed_out=reason == "timeout",
            output_truncated=skipped > 0 or len(text) > output_chars,
            seconds=time.monotonic() - started,
            killed_reason=reason,
            raw_bytes=total,
        )

    def _kill(self, proc: subprocess.Popen) -> None:
        # proc is setpriv/prlimit/unshare (one process after the execs); its only child is the namespace's
        # PID 1 (the jail shell). Kill PID 1 first and wait for unshare to reap it: the kernel kills and
        # reaps every process of the namespace before PID 1 can be reaped, so once proc has exited nothing
        # of the command is left. Then the process group (the fallback mode, or a jail not started yet).
        if self._jail is not None:
            children = _children(proc.pid)
            for pid in children:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            if children:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=10)
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)

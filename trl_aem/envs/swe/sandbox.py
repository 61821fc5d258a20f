"""A local sandbox for untrusted shell commands: one temporary directory per episode, commands jailed.

Each :class:`Sandbox` owns a fresh directory ``root`` (``root/repo`` is the working copy, ``root/home``
and ``root/tmp`` are the command's ``HOME`` and ``TMPDIR``). Every command runs as
``prlimit ... unshare --mount --pid --ipc --uts --fork --mount-proc [--net] [--user] sh -c JAIL`` where
``JAIL`` (which stays PID 1 of the namespace and runs the command as its child):

- hides the parent's temporary directories (``/tmp``, ``/var/tmp``, ``/dev/shm``: private size-limited
  tmpfs), ``/run`` (daemon sockets such as ``docker.sock``) and the parent's home directory (an empty
  read-only tmpfs, with only the Python interpreter's own directories bound back read-only) and any
  ``hide`` paths given;
- remounts every other mount read-only, except the sandbox directory itself;
- drops to a fresh per-sandbox uid (when the parent is root) or stays the user-namespace root (when not),
  with every capability dropped and ``no_new_privs`` set, so the mounts cannot be undone;
- runs ``bash -c COMMAND`` in ``root/repo`` with an environment built from an allowlist (nothing of the
  parent's environment, so ``HF_TOKEN`` & co. never reach it).

The network namespace is new and empty (loopback down): nothing is reachable. IPC (System V shared
memory, semaphores, message queues) and the host name are private too. The PID namespace is new: the
command sees only its own processes (not the trainer's ``/proc/PID/environ``), and when its ``bash`` ends,
or the timeout kills the namespace's PID 1, every process it started is killed (``setsid``, double forks
included) before :meth:`Sandbox.run` returns, so nothing outlives a command. Limits (``prlimit``, not
``preexec_fn``, which is unsafe in the threaded environment workers): CPU seconds, address space, file
size and process count; a wall-clock timeout kills the command's whole PID namespace; output is read
incrementally, truncated with a marker, and the command is killed once it has printed ``kill_output_bytes``.

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
import functools
import glob
import hashlib
import os
import random
import re
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

PREFIX = "trl-aem-swe-"
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
    """Per-command limits. ``timeout`` is wall-clock seconds; ``cpu_seconds`` is per process."""

    timeout: float = 60.0
    cpu_seconds: int = 120
    memory_bytes: int = 2 << 30
    file_bytes: int = 64 << 20
    processes: int = 256
    output_chars: int = 10_000
    kill_output_bytes: int = 16 << 20
    tmpfs_bytes: int = 64 << 20  # size of the private /tmp and /dev/shm of one command


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
    for tool in ("unshare", "prlimit", "setpriv", "findmnt", "mount", "bash"):
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


# ---------------------------------------------------------------------------- stale directories
_swept = False


@functools.lru_cache(maxsize=1)
def _owner_tag() -> str:
    """This process's boot and PID namespace, in the names of its sandbox directories: a PID means something
    only in its own namespace (a container sharing ``/tmp`` sees other PIDs as dead) and boot."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as handle:
            boot = handle.read().strip()
    except OSError:
        boot = "unknown-boot"
    try:
        ns = os.stat("/proc/self/ns/pid")
        pidns = f"{ns.st_dev}:{ns.st_ino}"
    except OSError:
        pidns = "unknown-pidns"
    return hashlib.sha256(f"{boot}/{pidns}".encode()).hexdigest()[:12]


def _sweep_stale(base: str) -> None:
    """Remove sandbox directories left behind by processes that died without cleaning up (SIGKILL, OOM):
    only those made in this boot and PID namespace (the owner tag) whose PID is dead here."""
    global _swept
    if _swept:
        return
    _swept = True
    for path in glob.glob(os.path.join(base, PREFIX + "*")):
        match = re.match(re.escape(PREFIX) + r"(\d+)-([0-9a-f]{12})-", os.path.basename(path))
        if match is None or match.group(2) != _owner_tag():
            continue
        pid = int(match.group(1))
        try:
            os.kill(pid, 0)
            continue  # its owner is alive
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        shutil.rmtree(path, ignore_errors=True)


def _remove(root: str) -> None:
    shutil.rmtree(root, ignore_errors=True)


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
        limits: per-command :class:`SandboxLimits`.
        allow_network: explicit opt-out for machines without namespaces: run without isolation (commands run
            as the trainer's uid and can read its environment through ``/proc/$PPID/environ``, its files,
            the network).
        hide: extra host directories to hide from commands (e.g. a data directory with credentials).
        base_dir: where the temporary directory is made (default: the system temporary directory).
        env: extra environment variables for commands (added to the allowlist's).

    Use it as a context manager or call :meth:`close`; the directory is also removed when the object is
    garbage collected, at interpreter exit, and by the next process that finds it orphaned.
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
        _sweep_stale(base)
        self.root = tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-{_owner_tag()}-", dir=base)
        os.chmod(self.root, 0o755)  # the parent's; commands may traverse it, never write it
        self._finalizer = weakref.finalize(self, _remove, self.root)
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
        self._jail = self._jail_script() if self.mode is not None else None

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
            for parent, dirs, files in os.walk(path):
                for name in dirs + files:
                    os.lchown(os.path.join(parent, name), self.uid, self.uid)

    def private_dir(self, name: str) -> str:
        """A fresh directory ``root/name`` that commands can read but not modify (for the parent's files)."""
        path = os.path.join(self.root, name)
        if os.path.islink(path) or os.path.isfile(path):
            os.unlink(path)
        elif os.path.isdir(path):
            shutil.rmtree(path)
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
    # second line (a FIFO or a device would block or never end a read). chown, _remove_bytecode and
    # _fresh_dir walk by path under the same assumption. It does not hold in the fallback mode (no PID
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

    def _jail_script(self) -> str:
        """The ``sh`` script run as PID 1 of the new namespaces; ``$1`` is the user's command."""
        q = shlex.quote
        sandbox = os.path.realpath(self.root)
        rw_tmp = [d for d in ("/tmp", "/var/tmp", "/dev/shm") if os.path.isdir(d) and not os.path.islink(d)]
        ro_hide = [d for d in ("/run", os.path.expanduser("~"), *self._hide) if os.path.isdir(d)]
        ro_hide = [os.path.realpath(d) for d in ro_hide if os.path.realpath(d) != "/"]
        # a directory inside another hidden one is hidden already (and its mount point would not exist)
        ro_hide = [d for d in dict.fromkeys(ro_hide) if not any(h != d and _under(d, h) for h in rw_tmp + ro_hide)]
        hidden = rw_tmp + ro_hide
        keep = [
            d for d in _interpreter_dirs() if any(_under(d, h) and d != h for h in hidden) and not _under(sandbox, d)
        ]
        keep = [d for d in keep if not any(k != d and _under(d, k) for k in keep)]
        stage = next(d for d in ("/mnt", "/media", "/srv", "/opt", "/boot") if os.path.isdir(d))
        lines = [
            "set -e",
            f'fail() {{ echo "trl-aem sandbox $TRL_AEM_JAIL_NONCE: $*" >&2; exit {_JAIL_FAILED}; }}',
            "mount --make-rprivate / || fail 'make-rprivate'",
            # 1. park what must stay visible (the sandbox, the interpreter) on a staging tmpfs
            f"mount -t tmpfs -o mode=700,size=16k trl-aem-stage {q(stage)} || fail 'stage'",
        ]
        parked = [sandbox, *keep]
        for i, path in enumerate(parked):
            lines.append(f"mkdir {q(stage)}/{i} && mount --rbind {q(path)} {q(stage)}/{i} || fail 'park {i}'")
        # 2. hide: temporary directories become private tmpfs (rw), the rest empty tmpfs (made ro in 4)
        size = self.limits.tmpfs_bytes
        for d in rw_tmp:
            lines.append(f"mount -t tmpfs -o mode=1777,size={size} trl-aem-tmp {q(d)} || fail 'hide {d}'")
        for d in ro_hide:
            lines.append(f"mount -t tmpfs -o mode=755,size=64k trl-aem-hidden {q(d)} || fail 'hide {d}'")
        # 3. put the parked directories back at their own paths
        for i, path in enumerate(parked):
            lines.append(f"mkdir -p {q(path)} && mount --move {q(stage)}/{i} {q(path)} || fail 'unpark {i}'")
        lines.append(f"umount {q(stage)} || fail 'unstage'")
        # 4. only repo/, home/ and tmp/ are writable: the sandbox root (where the parent keeps its own files)
        # is not, and mount points cannot be renamed or replaced by a symlink
        inner = [os.path.join(sandbox, d) for d in ("repo", "home", "tmp")]
        for d in inner:
            lines.append(f"mount --bind {q(d)} {q(d)} || fail 'bind {d}'")
        # everything else read-only (keep each mount's own flags: user namespaces refuse to clear them)
        writable = [*inner, *rw_tmp]
        cases = " | ".join(q(w) for w in writable)
        lines += [
            "findmnt -rn -o TARGET,VFS-OPTIONS | sort -r | while read -r target options; do",
            f'  case "$target" in {cases}) continue ;; esac',
            '  opts=$(echo "$options" | sed -e "s/^rw,//; s/,rw,/,/; s/^rw$//")',
            '  mount -o "remount,bind,ro${opts:+,$opts}" "$target" 2>/dev/null \\',
            '    || mount -o remount,bind,ro "$target" || fail "read-only $target"',
            "done",
            f"cd {q(os.path.join(sandbox, 'repo'))} || fail 'cd'",
        ]
        drop = "setpriv --bounding-set=-all --inh-caps=-all --no-new-privs"
        if self.uid is not None:
            drop = f"setpriv --reuid={self.uid} --regid={self.uid} --clear-groups --inh-caps=-all --bounding-set=-all --no-new-privs"
        # Not `exec`: this shell stays PID 1 of the namespace, runs the command as its child and exits with
        # its status. PID 1 keeps the parent-death signal of `unshare --kill-child` (a uid change, as
        # setpriv --reuid does, would clear it), and when PID 1 ends, by itself or killed, the kernel kills
        # every process of the namespace (setsid'd or double-forked ones included) before unshare can reap
        # it: nothing of a command outlives run(). The nonce leaves the environment first (the command
        # cannot read PID 1's /proc/1/environ: another uid, or more capabilities).
        lines += ["set +e", "unset TRL_AEM_JAIL_NONCE", f'{drop} -- bash -c "$1"', "exit $?"]
        self.hidden = hidden
        return "\n".join(lines) + "\n"

    def argv(self, command: str) -> list[str]:
        """The full argv that runs ``command`` (exposed for tests and debugging)."""
        lim = self.limits
        cpu = max(1, int(lim.cpu_seconds))
        prlimit = [
            "prlimit",
            f"--cpu={cpu}:{cpu + 1}",
            f"--as={lim.memory_bytes}",
            f"--fsize={lim.file_bytes}",
            f"--nproc={lim.processes}",
            "--core=0",
        ]
        if self._jail is None:  # explicit opt-out: limits only
            return ["setpriv", "--pdeathsig=KILL", *prlimit, "bash", "-c", command]
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
        proc = subprocess.Popen(
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

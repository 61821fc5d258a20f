"""Bounds on a whole sandbox, not per process: a memory (and process-count) cgroup and a size-limited
workspace filesystem.

``RLIMIT_AS`` bounds one process: 256 processes of 2 GiB each are 512 GiB. A cgroup bounds all the
processes of a sandbox together (and the files they write to tmpfs, which are memory too). Both cgroup
versions are handled:

- v2 (``cgroup2``): a child of this process's own cgroup, when the ``memory`` controller is enabled for its
  children (``cgroup.subtree_control``; systemd's delegation, or the root cgroup of a container);
- v1: a child of this process's cgroup in the ``memory`` hierarchy (and in the ``pids`` one, if mounted).

The jail's first line moves its own PID 1 into the cgroup (``echo 0 > cgroup.procs``), so every process of
the command is in it; ``/sys`` is read-only inside, so no command can move itself out.

The workspace (``repo``, ``home``, ``tmp``) is a tmpfs with ``size=`` and ``nr_inodes=``, mounted by the parent
(root only) on the sandbox directory: a command cannot fill the host's disk, and unmounting it frees any
tree at once, however deep.

Standard library only (ctypes), as :mod:`.sandbox`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import logging
import os
import time
from dataclasses import dataclass, field

__all__ = ["Cgroup", "cgroup_parents", "make_cgroup", "mount_tmpfs", "unmount"]

logger = logging.getLogger(__name__)

_MS_NOSUID, _MS_NODEV = 2, 4
_MNT_DETACH = 2


# ---------------------------------------------------------------------------- cgroups
@dataclass
class Cgroup:
    """One sandbox's cgroup directories (one in v2; memory and pids in v1)."""

    dirs: list[str]
    description: str
    limits_processes: bool = False
    procs_files: list[str] = field(default_factory=list)

    def remove(self) -> None:
        """Remove the directories (empty once every process of the sandbox is gone); never raises."""
        for directory in self.dirs:
            _rmdir_cgroup(directory)


def _rmdir_cgroup(directory: str) -> None:
    for attempt in range(50):  # the last processes of a killed namespace may take a moment to leave
        try:
            os.rmdir(directory)
            return
        except FileNotFoundError:
            return
        except OSError as error:
            if error.errno != errno.EBUSY or attempt == 49:
                logger.warning("cannot remove the cgroup %s: %s", directory, error)
                return
            time.sleep(0.02)


def _own_cgroups() -> dict[str, str]:
    """{controller or "" for v2: this process's cgroup path} from /proc/self/cgroup."""
    out = {}
    with open("/proc/self/cgroup") as handle:
        for line in handle:
            parts = line.rstrip("\n").split(":", 2)
            if len(parts) == 3:
                for controller in parts[1].split(",") if parts[1] else [""]:
                    out[controller] = parts[2]
    return out


def _cgroup_mounts() -> list[tuple[str, str, str, set[str]]]:
    """(fstype, root, mount point, super options) of every cgroup mount, from /proc/self/mountinfo."""
    mounts = []
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            fields = line.split()
            if "-" not in fields:
                continue
            sep = fields.index("-")
            fstype = fields[sep + 1]
            if fstype in ("cgroup", "cgroup2"):
                options = set(fields[sep + 3].split(",")) if len(fields) > sep + 3 else set()
                mounts.append((fstype, fields[3], _unescape(fields[4]), options))
    return mounts


def _unescape(path: str) -> str:
    # mountinfo writes space, tab, newline and backslash as octal escapes
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        path = path.replace(code, char)
    return path


def _below(mount_point: str, root: str, path: str) -> str | None:
    """The directory of cgroup ``path`` under a mount of hierarchy root ``root`` (None if not inside)."""
    if root != "/" and path != root and not path.startswith(root.rstrip("/") + "/"):
        return None
    rel = os.path.relpath(path, root)
    directory = mount_point if rel == "." else os.path.join(mount_point, rel)
    return directory if os.path.isdir(directory) else None


@functools.lru_cache(maxsize=1)
def cgroup_parents() -> tuple[str, dict[str, str], str]:
    """(version "v2" | "v1" | "", {controller: this process's cgroup directory}, reason if none). Cached."""
    try:
        own, mounts = _own_cgroups(), _cgroup_mounts()
    except OSError as error:
        return "", {}, f"cannot read this process's cgroups: {error}"
    for fstype, root, mount_point, _ in mounts:  # v2 first: the memory controller of modern systems
        if fstype != "cgroup2" or "" not in own:
            continue
        directory = _below(mount_point, root, own[""])
        if directory is None:
            continue
        controllers = _read(os.path.join(directory, "cgroup.controllers")).split()
        if "memory" not in controllers:
            continue
        enabled = _read(os.path.join(directory, "cgroup.subtree_control")).split()
        if "memory" not in enabled:
            with contextlib.suppress(OSError):  # allowed in a root cgroup only (no internal processes)
                _write(
                    os.path.join(directory, "cgroup.subtree_control"), "+memory" + (" +pids" * ("pids" in controllers))
                )
            enabled = _read(os.path.join(directory, "cgroup.subtree_control")).split()
        if "memory" in enabled:
            return "v2", {c: directory for c in ("memory", "pids") if c in enabled}, ""
        return "", {}, f"cgroup v2: the memory controller is not enabled for the children of {directory}"
    parents = {}
    for fstype, root, mount_point, options in mounts:
        for controller in ("memory", "pids"):
            if fstype == "cgroup" and controller in options and controller in own:
                directory = _below(mount_point, root, own[controller])
                if directory is not None:
                    parents[controller] = directory
    if "memory" in parents:
        return "v1", parents, ""
    return "", {}, "no cgroup memory controller is mounted for this process (neither v2 nor v1)"


def _read(path: str) -> str:
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return ""


def _write(path: str, value: str) -> None:
    with open(path, "w") as handle:
        handle.write(value)


def make_cgroup(name: str, memory_bytes: int, processes: int) -> tuple[Cgroup | None, str]:
    """A fresh cgroup ``name`` bounding its processes to ``memory_bytes`` together (no swap) and, where the
    pids controller is there, ``processes`` processes. (None, reason) when this process cannot make one."""
    version, parents, reason = cgroup_parents()
    if not version:
        return None, reason
    made: list[str] = []
    try:
        if version == "v2":
            directory = os.path.join(parents["memory"], name)
            os.mkdir(directory)
            made.append(directory)
            _write(os.path.join(directory, "memory.max"), str(memory_bytes))
            if os.path.exists(os.path.join(directory, "memory.swap.max")):
                _write(os.path.join(directory, "memory.swap.max"), "0")
            if "pids" in parents:
                _write(os.path.join(directory, "pids.max"), str(processes))
            description = f"cgroup v2 {directory}: memory.max={memory_bytes}, memory.swap.max=0"
        else:
            directory = os.path.join(parents["memory"], name)
            os.mkdir(directory)
            made.append(directory)
            _write(os.path.join(directory, "memory.limit_in_bytes"), str(memory_bytes))
            if os.path.exists(os.path.join(directory, "memory.memsw.limit_in_bytes")):
                _write(os.path.join(directory, "memory.memsw.limit_in_bytes"), str(memory_bytes))
            description = f"cgroup v1 {directory}: memory.limit_in_bytes={memory_bytes} (memory+swap)"
            if "pids" in parents:
                pids = os.path.join(parents["pids"], name)
                os.mkdir(pids)
                made.append(pids)
                _write(os.path.join(pids, "pids.max"), str(processes))
        if "pids" in parents:
            description += f", pids.max={processes}"
    except OSError as error:
        for directory in reversed(made):
            _rmdir_cgroup(directory)
        return None, f"cannot create a {version} cgroup under {parents['memory']}: {error}"
    procs = [os.path.join(d, "cgroup.procs") for d in made]
    return Cgroup(made, description, limits_processes="pids" in parents, procs_files=procs), ""


# ---------------------------------------------------------------------------- workspace filesystem
@functools.lru_cache(maxsize=1)
def _libc():
    return ctypes.CDLL(None, use_errno=True)


def mount_tmpfs(path: str, size_bytes: int, inodes: int) -> str:
    """Mount a private tmpfs of ``size_bytes`` and ``inodes`` on the directory ``path`` (root only); returns
    '' or why it could not."""
    if os.geteuid() != 0:
        return "mounting a filesystem needs root (the sandbox runs in unprivileged user-namespace mode)"
    options = f"size={size_bytes},nr_inodes={inodes},mode=755".encode()
    try:
        result = _libc().mount(b"trl-aem-workspace", path.encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV, options)
    except (OSError, AttributeError) as error:
        return f"mount(2) is not callable: {error}"
    if result != 0:
        code = ctypes.get_errno()
        return f"mount -t tmpfs failed: {errno.errorcode.get(code, code)}"
    return ""


def unmount(path: str) -> bool:
    """Detach the mount on ``path`` (its files are freed once unused); True if it was unmounted."""
    try:
        return _libc().umount2(path.encode(), _MNT_DETACH) == 0
    except (OSError, AttributeError):
        return False

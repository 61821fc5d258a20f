"""Walking and removing directory trees that untrusted commands wrote: iteratively, however deep they are.

A command can build a directory chain thousands of levels deep (``mkdir d; cd d`` in a loop), deeper than
Python's recursion limit and longer than ``PATH_MAX``. ``shutil.rmtree`` and ``os.walk`` recurse (Python
3.11) and raise ``RecursionError``, and any path-based walk fails with ``ENAMETOOLONG`` at that depth. The
functions here use no recursion, and :func:`remove_tree` never builds a path longer than the tree's top
plus one name and never holds more than two directory descriptors: it moves every subdirectory it meets
up to the top level and empties the directories one at a time.

Standard library only: :mod:`.sandbox` uses it, and it is loaded on its own by tests run as another user.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import stat
from collections.abc import Iterator

__all__ = ["remove_tree", "walk_paths"]

logger = logging.getLogger(__name__)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def remove_tree(path: str) -> bool:
    """Remove ``path`` (a directory tree of any depth, a file or a symlink; symlinks are never followed).
    Never raises: returns whether everything is gone, logging what could not be removed."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return True
    except OSError as error:
        logger.warning("cannot remove %s: %s", path, error)
        return False
    try:
        if not stat.S_ISDIR(mode):
            os.unlink(path)
            return True
        _empty_tree(path)
        os.rmdir(path)
        return True
    except OSError as error:
        logger.warning("cannot remove %s completely: %s", path, error)
        return False


def _empty_tree(top: str) -> None:
    """Remove everything below the directory ``top``: each subdirectory met is renamed into ``top`` under a
    fresh name and emptied in turn, so no directory is ever more than one level below ``top``."""
    top_fd = os.open(top, _DIR_FLAGS)
    try:
        token = secrets.token_hex(4)  # a command cannot guess the names it would have to collide with
        pending: list[str | None] = [None]  # None: top itself; else a name directly in top
        moved = 0
        while pending:
            name = pending.pop()
            fd = top_fd if name is None else _open_dir(name, top_fd)
            if fd is None:
                continue
            try:
                for child in _empty_dir(fd):  # the subdirectories left in fd
                    if name is None:  # already directly in top
                        pending.append(child)
                        continue
                    moved += 1
                    fresh = f".trl-aem-rm-{token}-{moved}"
                    with contextlib.suppress(OSError):
                        os.rename(child, fresh, src_dir_fd=fd, dst_dir_fd=top_fd)
                        pending.append(fresh)
            finally:
                if fd != top_fd:
                    os.close(fd)
            if name is not None:
                with contextlib.suppress(OSError):
                    os.rmdir(name, dir_fd=top_fd)
    finally:
        os.close(top_fd)


def _open_dir(name: str, dir_fd: int) -> int | None:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except PermissionError:
        pass
    except OSError:
        return None
    # a directory the command made unreadable (chmod 000): its owner may open it up again. No process of
    # the sandbox runs meanwhile, so `name` is still the directory just listed, not a swapped-in symlink.
    try:
        os.chmod(name, 0o700, dir_fd=dir_fd)
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError:
        return None


def _empty_dir(fd: int) -> list[str]:
    """Unlink every non-directory entry of the directory ``fd``; returns the names of its subdirectories."""
    with os.scandir(fd) as entries:
        listing = [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in entries]
    subdirs = []
    for name, is_dir in listing:
        if is_dir:
            subdirs.append(name)
            continue
        try:
            os.unlink(name, dir_fd=fd)
        except PermissionError:
            # a directory the command made read-only: make it writable again (its owner may), retry once
            with contextlib.suppress(OSError):
                os.fchmod(fd, 0o700)
                os.unlink(name, dir_fd=fd)
        except FileNotFoundError:
            pass
        except OSError as error:
            if error.errno != errno.ENOENT:
                logger.debug("cannot unlink %s: %s", name, error)
    return subdirs


def walk_paths(top: str) -> Iterator[str]:
    """Every path below ``top`` (not ``top`` itself; symlinks not followed), depth first, without
    recursion. Directories that cannot be listed (gone, too deep for a path) are skipped."""
    pending = [top]
    while pending:
        directory = pending.pop()
        try:
            with os.scandir(directory) as entries:
                listing = [(entry.path, entry.is_dir(follow_symlinks=False)) for entry in entries]
        except OSError:
            continue
        for path, is_dir in listing:
            yield path
            if is_dir:
                pending.append(path)

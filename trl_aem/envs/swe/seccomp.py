"""A seccomp filter for sandboxed commands, written as classic BPF and installed through ``prctl`` (ctypes).

The network namespace cuts inet sockets, but other socket families are not namespaced (or not the same
way): ``AF_VSOCK`` reaches the hypervisor's host side of a VM, netlink families talk to kernel subsystems.
The filter lets a command create only ``AF_UNIX``, ``AF_INET`` and ``AF_INET6`` sockets (anything else fails
with ``EAFNOSUPPORT``, which programs already handle), and refuses with ``ENOSYS``:

- ``io_uring_setup/enter/register``: io_uring opens sockets (``IORING_OP_SOCKET``) without the ``socket``
  system call, so the family check would not see them;
- ``clone3``: its flags are in memory a filter cannot read; ``ENOSYS`` makes the C library fall back to
  ``clone``, whose flags it can (Docker's default profile does the same).

With ``block_user_namespaces`` it also refuses ``unshare`` and ``clone`` with ``CLONE_NEWUSER`` (``EPERM``): a
new user namespace gives a process every capability over new mount, network, ... namespaces, much more
kernel to attack. (In the sandbox's unprivileged mode the jail needs that flag itself; nested user namespaces
are then refused by ``user.max_user_namespaces=0`` inside the jail's own namespace instead.)

System calls of another ABI (32-bit x86 ``int 0x80``, whose socket calls go through ``socketcall``, and x32)
kill the process: nothing in a sandbox needs them, and the filter would not see their arguments.

A filter applies to the thread that installs it and to every process that thread starts afterwards, never to
the other threads of the process: :mod:`.spawner` installs it on the one thread that starts the commands.
Supported: x86_64 and aarch64 Linux; elsewhere :func:`install` raises :class:`SeccompUnavailable`.
Standard library only (ctypes), as :mod:`.sandbox`.
"""

from __future__ import annotations

import ctypes
import errno
import platform
from dataclasses import dataclass

__all__ = ["SeccompUnavailable", "install", "program", "supported_arch"]

# classic BPF opcodes (linux/bpf_common.h, linux/filter.h)
_LD_W_ABS = 0x00 | 0x00 | 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ_K = 0x05 | 0x10 | 0x00  # BPF_JMP | BPF_JEQ | BPF_K
_JGE_K = 0x05 | 0x30 | 0x00  # BPF_JMP | BPF_JGE | BPF_K
_JSET_K = 0x05 | 0x40 | 0x00  # BPF_JMP | BPF_JSET | BPF_K
_RET_K = 0x06 | 0x00  # BPF_RET | BPF_K

# seccomp return actions (linux/seccomp.h)
_ALLOW = 0x7FFF0000
_ERRNO = 0x00050000
_KILL_PROCESS = 0x80000000

# struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6] (little endian)
_NR, _ARCH, _ARG0_LOW = 0, 4, 16

_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2

_AF_UNIX, _AF_INET, _AF_INET6 = 1, 2, 10
_CLONE_NEWUSER = 0x10000000
_X32_BIT = 0x40000000


class SeccompUnavailable(OSError):
    """The filter cannot be installed here (architecture, kernel or permission)."""


@dataclass(frozen=True)
class Arch:
    audit: int  # AUDIT_ARCH_* of the native ABI
    socket: int
    socketpair: int
    clone: int
    unshare: int
    x32: bool  # x86_64: syscall numbers with bit 30 set are the x32 ABI
    io_uring: tuple[int, int, int] = (425, 426, 427)  # setup, enter, register: the same on both
    clone3: int = 435


ARCHES = {
    "x86_64": Arch(audit=0xC000003E, socket=41, socketpair=53, clone=56, unshare=272, x32=True),
    "aarch64": Arch(audit=0xC00000B7, socket=198, socketpair=199, clone=220, unshare=97, x32=False),
}


def supported_arch() -> Arch | None:
    machine = platform.machine().lower()
    return ARCHES.get({"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine))


def program(arch: Arch, *, block_user_namespaces: bool) -> list[tuple[int, int, int, int]]:
    """The filter as ``(code, jt, jf, k)`` instructions (see the module docstring for what it refuses)."""
    asm: list[tuple] = [
        (_LD_W_ABS, None, None, _ARCH),
        (_JEQ_K, None, "kill", arch.audit),
        (_LD_W_ABS, None, None, _NR),
    ]
    if arch.x32:
        asm.append((_JGE_K, "kill", None, _X32_BIT))
    asm += [
        (_JEQ_K, "family", None, arch.socket),
        (_JEQ_K, "family", None, arch.socketpair),
        *[(_JEQ_K, "enosys", None, nr) for nr in (*arch.io_uring, arch.clone3)],
    ]
    if block_user_namespaces:
        asm += [(_JEQ_K, "userns", None, arch.unshare), (_JEQ_K, "userns", None, arch.clone)]
    asm += [
        (_RET_K, None, None, _ALLOW),
        "family",  # socket(domain, ...) / socketpair(domain, ...): the domain is an int
        (_LD_W_ABS, None, None, _ARG0_LOW),
        *[(_JEQ_K, "allow", None, family) for family in (_AF_UNIX, _AF_INET, _AF_INET6)],
        (_RET_K, None, None, _ERRNO | errno.EAFNOSUPPORT),
        "userns",  # unshare(flags) / clone(flags, ...): CLONE_NEWUSER is in the low 32 bits
        (_LD_W_ABS, None, None, _ARG0_LOW),
        (_JSET_K, "eperm", "allow", _CLONE_NEWUSER),
        "allow",
        (_RET_K, None, None, _ALLOW),
        "eperm",
        (_RET_K, None, None, _ERRNO | errno.EPERM),
        "enosys",
        (_RET_K, None, None, _ERRNO | errno.ENOSYS),
        "kill",
        (_RET_K, None, None, _KILL_PROCESS),
    ]
    return _assemble(asm)


def _assemble(asm: list) -> list[tuple[int, int, int, int]]:
    """Resolve label names (strings in ``asm``) into the relative forward jumps of classic BPF."""
    labels, position = {}, 0
    for item in asm:
        if isinstance(item, str):
            labels[item] = position
        else:
            position += 1
    out = []
    for item in asm:
        if isinstance(item, str):
            continue
        code, jt, jf, k = item
        here = len(out)
        offsets = [0 if label is None else labels[label] - here - 1 for label in (jt, jf)]
        if not all(0 <= offset < 256 for offset in offsets):
            raise ValueError(f"jump out of range at instruction {here}")
        out.append((code, offsets[0], offsets[1], k))
    return out


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def install(*, block_user_namespaces: bool) -> str:
    """Install the filter on the calling thread (and so on the processes it starts from now on); sets
    ``no_new_privs`` on that thread first (needed without ``CAP_SYS_ADMIN``, and the jail sets it anyway).
    Returns a description; raises :class:`SeccompUnavailable` when it cannot."""
    arch = supported_arch()
    if arch is None:
        raise SeccompUnavailable(f"no seccomp filter for the {platform.machine()} architecture")
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError as error:
        raise SeccompUnavailable(f"cannot load the C library: {error}") from None
    instructions = program(arch, block_user_namespaces=block_user_namespaces)
    filters = (_SockFilter * len(instructions))(*[_SockFilter(*i) for i in instructions])
    fprog = _SockFprog(len(instructions), filters)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise SeccompUnavailable(f"prctl(PR_SET_NO_NEW_PRIVS) failed: {errno.errorcode.get(ctypes.get_errno())}")
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        code = ctypes.get_errno()
        raise SeccompUnavailable(f"prctl(PR_SET_SECCOMP) failed: {errno.errorcode.get(code, code)}")
    refused = "socket families other than unix/inet/inet6, io_uring, clone3"
    if block_user_namespaces:
        refused += ", new user namespaces"
    return f"seccomp filter ({len(instructions)} instructions): refuses {refused}"

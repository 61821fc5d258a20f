"""The SWE sandbox contains what model-written commands try: network, writes outside, secrets, fork and
memory bombs, endless loops, gigantic output, escaping paths; and it always cleans up."""

import contextlib
import ctypes
import errno
import inspect
import json
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

import pytest

from trl_aem.envs.swe import bounds, cleanup
from trl_aem.envs.swe import sandbox as sandbox_module
from trl_aem.envs.swe.patch import PatchError, check_patch_paths
from trl_aem.envs.swe.sandbox import (
    PathEscape,
    Sandbox,
    SandboxError,
    SandboxLimits,
    SandboxUnavailable,
    isolation,
)


def make(tmp_path=None, **limits) -> Sandbox:
    return Sandbox(None, limits=SandboxLimits(**{"timeout": 20, **limits}))


def processes_of(uid: int | None, wait: float = 5.0) -> list[int]:
    """Pids of live (not zombie) processes whose real uid is ``uid``, after giving the kernel up to ``wait``
    seconds to finish killing a namespace."""
    if uid is None:  # user-namespace mode: no uid of its own to look for
        return []
    deadline = time.monotonic() + wait
    while True:
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/status") as handle:
                    fields = dict(line.split(":", 1) for line in handle if ":" in line)
            except OSError:
                continue
            if int(fields["Uid"].split()[0]) == uid and not fields["State"].strip().startswith("Z"):
                pids.append(int(entry))
        if not pids or time.monotonic() > deadline:
            return pids
        time.sleep(0.1)


# A command that outlives its timeout unless the whole PID namespace dies (setsid, then an endless sleep in
# the process the timeout would kill), and one that ends at once, leaving a setsid'd background sleeper and
# a double-forked daemon behind (stdio redirected, so they do not hold the output pipe).
SURVIVORS_TIMEOUT = 'exec python3 -c "import os, time; os.setsid(); time.sleep(60)" trl-aem-survivor'
SURVIVORS_DONE = (
    "setsid bash -c 'exec -a trl-aem-survivor sleep 600' </dev/null >/dev/null 2>&1 &\n"
    'python3 -c "import os, time; os.fork() and os._exit(0); os.setsid(); os.fork() and os._exit(0); '
    'time.sleep(600)" trl-aem-survivor </dev/null >/dev/null 2>&1\n'
    "sleep 0.5; echo started"
)
IPC_PROBE = (
    "python3 -c 'import ctypes; print(\"shmid=%d\" % ctypes.CDLL(None).shmget(0, 4096, 0o1600))'; "
    "readlink /proc/self/ns/ipc /proc/self/ns/uts"
)
# What a command may ask of the kernel beyond its namespaces: {what: "ok" or the errno}. vsock reaches the
# hypervisor's host, netlink kernel subsystems, io_uring makes sockets without socket(2), a user namespace
# gives every capability over new namespaces.
KERNEL_PROBE = r"""python3 - <<'EOF'
import ctypes, json, os, socket
libc = ctypes.CDLL(None, use_errno=True)
out = {}
for name, kind in (("AF_VSOCK", socket.SOCK_STREAM), ("AF_NETLINK", socket.SOCK_RAW), ("AF_PACKET", socket.SOCK_RAW),
                   ("AF_UNIX", socket.SOCK_STREAM), ("AF_INET", socket.SOCK_STREAM), ("AF_INET6", socket.SOCK_DGRAM)):
    try:
        socket.socket(getattr(socket, name), kind).close()
        out[name] = "ok"
    except OSError as error:
        out[name] = error.errno
try:
    socket.socketpair(socket.AF_UNIX)
    out["socketpair"] = "ok"
except OSError as error:
    out["socketpair"] = error.errno
out["io_uring"] = "ok" if libc.syscall(425, 8, ctypes.create_string_buffer(120)) >= 0 else ctypes.get_errno()
out["userns"] = "ok" if libc.unshare(0x10000000) == 0 else ctypes.get_errno()
print("KERNEL " + json.dumps(out))
EOF
unshare --user true 2>/dev/null && echo UNSHARE-USER-OK"""


def live_cmdlines(token: str) -> list:
    """[pid, cmdline] of every live (not zombie) process whose command line contains ``token``; kills them
    (so that a failing test leaves nothing behind)."""
    import contextlib
    import os
    import signal

    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{entry}/stat") as handle:
                state = handle.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if token in cmdline and state != "Z":
            found.append([int(entry), cmdline])
    for pid, _ in found:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return found


HELPERS = (
    "\n".join(
        f"{name} = {value!r}"
        for name, value in [
            ("SURVIVORS_TIMEOUT", SURVIVORS_TIMEOUT),
            ("SURVIVORS_DONE", SURVIVORS_DONE),
            ("IPC_PROBE", IPC_PROBE),
            ("KERNEL_PROBE", KERNEL_PROBE),
        ]
    )
    + "\n\n"
    + inspect.getsource(live_cmdlines)
)


def host_shm_ids() -> set[int]:
    with open("/proc/sysvipc/shm") as handle:
        return {int(line.split()[1]) for line in handle.readlines()[1:] if line.strip()}


def remove_shm(ids) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    for shmid in ids:
        libc.shmctl(shmid, 0, None)  # IPC_RMID


def test_isolation_is_available_here():
    # PLATFORM.md: unshare works on this machine, so every test below runs the real jail
    mode, reason = isolation()
    assert mode in ("root", "userns"), reason


def test_network_is_cut():
    with make() as box:
        script = textwrap.dedent(
            """
            import socket
            for host, port in (("1.1.1.1", 80), ("8.8.8.8", 53)):
                try:
                    socket.create_connection((host, port), timeout=3)
                    print("CONNECTED", host)
                except OSError as error:
                    print("refused", host, error.errno)
            try:
                socket.getaddrinfo("pypi.org", 443)
                print("RESOLVED")
            except OSError:
                print("no dns")
            """
        )
        box.write_text("net.py", script)
        result = box.run("python net.py")
        assert result.exit_code == 0, result.output
        assert "CONNECTED" not in result.output and "RESOLVED" not in result.output
        assert result.output.count("refused") == 2 and "no dns" in result.output
        # only a loopback interface, and it is down
        assert box.run("cat /proc/net/dev").output.count(":") == 1


def test_writes_outside_the_sandbox_fail(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / "pwned"
    with make() as box:
        command = "; ".join(
            [
                f"echo x > {target} && echo WROTE1",
                "echo x > /etc/trl-aem-pwned && echo WROTE2",
                f"echo x > {box.root}/pwned && echo WROTE3",
                f"mkdir {box.root}/.harness-evil && echo WROTE4",
                f"mv {box.root}/repo {box.root}/moved && echo WROTE5",
                f"echo x > {os.path.expanduser('~')}/trl-aem-pwned && echo WROTE6",
                "mount -o remount,rw / && echo REMOUNTED",
                "umount /tmp && echo UNMOUNTED",
                "echo x > /tmp/trl-aem-private && echo tmp-ok",
                "echo inside > inside.txt && echo repo-ok",
                "echo h > $HOME/h && echo home-ok",
            ]
        )
        result = box.run(command)
        for marker in ("WROTE", "REMOUNTED", "UNMOUNTED"):
            assert marker not in result.output, result.output
        assert "repo-ok" in result.output and "home-ok" in result.output and "tmp-ok" in result.output
        assert not target.exists() and not os.path.exists("/etc/trl-aem-pwned")
        assert not os.path.exists(os.path.join(box.root, "pwned"))
        assert not os.path.exists(os.path.expanduser("~/trl-aem-pwned"))
        # /tmp inside is private (a tmpfs of the namespace): nothing lands in the host's /tmp
        assert not os.path.exists("/tmp/trl-aem-private")
        assert box.read_text("inside.txt") == "inside\n"


def test_secrets_do_not_leak(monkeypatch, tmp_path):
    home = tmp_path / "home"
    (home / ".cache" / "huggingface").mkdir(parents=True)
    (home / ".cache" / "huggingface" / "token").write_text("hf_file_secret")
    monkeypatch.setenv("HOME", str(home))  # the parent's home directory is hidden from commands
    monkeypatch.setenv("HF_TOKEN", "hf_env_secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws_secret")
    with make() as box:
        result = box.run(
            "env; cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n'; "
            f"cat {home}/.cache/huggingface/token; ls -a {home}; "
            f"cat /proc/{os.getpid()}/environ; ps -e -o pid= | wc -l"
        )
        for secret in ("hf_env_secret", "aws_secret", "hf_file_secret", "HF_TOKEN", "AWS_SECRET"):
            assert secret not in result.output, result.output
        # the command sees only its own processes (a new PID namespace): not the trainer's environ
        assert int(result.output.strip().splitlines()[-1]) < 10
    assert set(box.environment()) >= {"PATH", "HOME", "TMPDIR", "LANG"}
    assert "HF_TOKEN" not in box.environment()


def test_fork_bomb_is_contained():
    with make(timeout=4, processes=64) as box:
        # the classic one: its first process returns at once, and the namespace dies with it
        started = time.monotonic()
        result = box.run(":(){ :|:& };:")
        assert time.monotonic() - started < 10
        assert processes_of(box.uid) == []
        # one that keeps its namespace alive: it runs into the process limit, then the timeout kills it all
        result = box.run("bomb(){ bomb | bomb & }; bomb; sleep 30; echo survived")
        assert result.timed_out and "survived" not in result.output
        assert "Resource temporarily unavailable" in result.output
        assert processes_of(box.uid) == []
    assert subprocess.run(["true"]).returncode == 0  # the machine still forks


def test_memory_bomb_is_contained():
    with make(memory_bytes=512 << 20) as box:
        result = box.run("python -c 'x = bytearray(4 << 30)'")
        assert result.exit_code != 0 and "MemoryError" in result.output
        result = box.run("python -c $'a = []\\nwhile True: a.append(bytearray(1 << 20))'")
        assert result.exit_code != 0 and "MemoryError" in result.output and not result.timed_out


def test_endless_loop_is_killed_with_everything_it_started():
    with make(timeout=2) as box:
        started = time.monotonic()
        result = box.run("sleep 1000 & while true; do :; done")
        assert result.timed_out and result.exit_code is None
        assert time.monotonic() - started < 6
        assert "no result within 2 seconds" in result.output
        assert processes_of(box.uid) == []
        # a background process does not outlive its command (the PID namespace ends with it)
        result = box.run("(setsid sleep 1000 &) ; echo started")
        assert result.exit_code == 0 and "started" in result.output
        assert processes_of(box.uid) == []


def test_nothing_of_a_command_outlives_run():
    # regression: the jail exec'd `setpriv --reuid`, the uid change cleared the parent-death signal of the
    # namespace's first process, and a setsid'd process survived the timeout (and run() itself)
    with make(timeout=2) as box:
        result = box.run(SURVIVORS_TIMEOUT)
        assert result.timed_out
        assert live_cmdlines("trl-aem-survivor") == []  # right after run(): no grace period
        assert processes_of(box.uid, wait=0) == []
        result = box.run(SURVIVORS_DONE)
        assert result.exit_code == 0 and "started" in result.output
        assert live_cmdlines("trl-aem-survivor") == []
        assert processes_of(box.uid, wait=0) == []
        # the command's exit status still comes through the jail's PID 1
        assert box.run("exit 7").exit_code == 7 and box.run("kill -9 $$").exit_code == 128 + 9


def test_ipc_and_hostname_are_private():
    before = host_shm_ids()
    with make() as box:
        result = box.run(IPC_PROBE)
    created = host_shm_ids() - before
    remove_shm(created)
    assert "shmid=" in result.output and "shmid=-1" not in result.output
    assert not created  # a segment made inside is not visible (nor left) on the host
    assert os.readlink("/proc/self/ns/ipc") not in result.output
    assert os.readlink("/proc/self/ns/uts") not in result.output


# three processes holding 250 MiB each at the same time; each prints "released" only if it was not killed
HOLDERS = (
    'for i in 1 2 3; do python3 -c \'import time; x = b"x" * (250 << 20); time.sleep(1); print("released")\' & done; '
    "wait"
)


def test_total_memory_of_the_sandbox_is_bounded():
    # issue 17: RLIMIT_AS is per process; 3 processes of 1 GiB held 3 GiB under a 2 GiB limit
    with make(memory_bytes=1 << 30, total_memory_bytes=600 << 20) as box:
        result = box.run(HOLDERS)
        assert result.output.splitlines().count("released") <= 2, (box.bounds, result.output)
        if box.cgroup is not None:  # this machine: a cgroup holds the whole sandbox
            assert box.bounds["memory"].startswith("cgroup v")
            assert box.run("cat /proc/self/cgroup").output.count(os.path.basename(box.root)) >= 1
        # one process still gets what it asks for within the budget
        assert box.run(HOLDERS.replace("1 2 3", "1")).output.splitlines() == ["released"]


class FakeSpawner:
    """A spawner whose thread could not install the seccomp filter (another architecture, an old kernel)."""

    applied, description = False, "test: no seccomp here"

    def popen(self, argv, **kwargs):
        return subprocess.Popen(argv, **kwargs)


def test_missing_mechanisms_fall_back_and_say_so(monkeypatch, caplog):
    # never silently weaker: each bound the machine cannot give is replaced, listed and logged
    monkeypatch.setattr(sandbox_module, "make_cgroup", lambda *a: (None, "test: no memory controller"))
    monkeypatch.setattr(sandbox_module, "mount_tmpfs", lambda *a: "test: no tmpfs")
    monkeypatch.setattr(sandbox_module, "spawner", lambda **k: FakeSpawner())
    with caplog.at_level(logging.WARNING, logger=sandbox_module.__name__):
        box = make(total_memory_bytes=1 << 30, fallback_processes=8)
    try:
        assert {w.split(":")[0] for w in box.weakened} >= {"memory", "disk", "syscalls"}
        assert "test: no memory controller" in box.bounds["memory"] and "8 processes" in box.bounds["memory"]
        assert "--as=134217728" in box.argv("true") and "ulimit -u 8 " in box._jail  # 8 x 128 MiB = 1 GiB
        assert box.run("ulimit -u").output.strip() == "8"
        assert "test: no tmpfs" in box.bounds["disk"] and "RLIMIT_FSIZE" in box.bounds["disk"]
        assert "test: no seccomp here" in box.bounds["syscalls"]
        if box.mode == "root":
            assert box.bounds["user_namespaces"].startswith("NOT BOUNDED")
        logged = caplog.text
        assert "test: no memory controller" in logged and "test: no tmpfs" in logged and "no seccomp" in logged
        # and commands still run, within the fallback bounds
        assert box.run("echo ok").output.strip() == "ok"
        result = box.run("python3 -c 'x = bytearray(200 << 20)'")
        assert result.exit_code != 0 and "MemoryError" in result.output
    finally:
        box.close()


def test_socket_families_io_uring_and_user_namespaces_are_refused():
    # issue 17: vsock sockets (the hypervisor's host side) and user namespaces worked inside the jail
    with make() as box:
        result = box.run(KERNEL_PROBE)
        kernel = json.loads(result.output.split("KERNEL ", 1)[1].splitlines()[0])
        assert box.bounds["syscalls"].startswith("seccomp filter"), box.bounds
    for family in ("AF_VSOCK", "AF_NETLINK", "AF_PACKET"):
        assert kernel[family] == errno.EAFNOSUPPORT, kernel
    assert kernel["AF_UNIX"] == kernel["AF_INET"] == kernel["socketpair"] == "ok", kernel
    assert kernel["AF_INET6"] in ("ok", errno.EAFNOSUPPORT)  # as the kernel has it
    assert kernel["io_uring"] == errno.ENOSYS, kernel  # its IORING_OP_SOCKET would bypass the family check
    assert kernel["userns"] in (errno.EPERM, errno.ENOSPC), kernel
    assert "UNSHARE-USER-OK" not in result.output
    # the filter is on the spawner thread only: the trainer's own threads keep every family
    socket_module = __import__("socket")
    socket_module.socket(socket_module.AF_NETLINK, socket_module.SOCK_RAW).close()
    opened = []

    def open_netlink():
        socket_module.socket(socket_module.AF_NETLINK, socket_module.SOCK_RAW).close()
        opened.append(True)

    thread = threading.Thread(target=open_netlink)
    thread.start()
    thread.join()
    assert opened == [True]


def outside_tmp_dir() -> str:
    """A fresh directory outside /tmp, /var/tmp, /dev/shm, the home directory and the checkout (root: under
    /var/lib; otherwise the home directory, the only place an ordinary user can write)."""
    parent = "/var/lib" if os.geteuid() == 0 else os.path.expanduser("~")
    return tempfile.mkdtemp(prefix="trl-aem-test-base-", dir=parent)


def test_other_sandboxes_are_hidden_wherever_tmpdir_points():
    # issue 17: with TMPDIR outside /tmp, a sandbox could read the other episodes' sandboxes next to it
    base = outside_tmp_dir()
    try:
        with Sandbox(None, base_dir=base) as first, Sandbox(None, base_dir=base) as second:
            first.write_text("secret.txt", "FIRST-EPISODE-SECRET\n")
            listing = second.run(f"ls -a {base}; find {base} -maxdepth 3").output
            assert os.path.basename(first.root) not in listing
            assert os.path.basename(second.root) in listing  # its own sandbox is still there
            assert "FIRST-EPISODE-SECRET" not in second.run(f"cat {first.repo}/secret.txt").output
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_trl_aem_package_is_masked_where_it_would_be_visible(monkeypatch):
    # issue 17: the package's task sources and gold patches are an answer key. An installed package lies in
    # a site-packages bound back into the jail: the package directory itself is masked. (Here the package
    # comes from the checkout, which is hidden as a whole; unhide it to see the mask at work.)
    package = sandbox_module._package_dir()
    assert package is not None
    probe = f"ls -A {package} 2>/dev/null | wc -l; head -c 100 {package}/envs/swe/offline_tasks.json 2>&1"
    with make() as box:
        hidden = box.run(probe).output
    monkeypatch.setattr(sandbox_module, "_source_checkout", lambda package: None)
    with make() as box:
        # a checkout under a directory the sandbox hides anyway (a clone in /tmp or the home directory) stays
        # invisible even unhidden; elsewhere it is visible now, and only the mask keeps the package out
        rw_tmp, ro_hide = box._hidden_dirs(os.path.realpath(box.root))
        private = any(sandbox_module._under(os.path.realpath(package), d) for d in rw_tmp + ro_hide)
        visible = box.run(f"ls {os.path.dirname(package)} 2>/dev/null").output.strip()
        assert bool(visible) != private, visible  # the checkout is visible now (unless it lies in a hidden place)...
        masked = box.run(probe).output
    for output in (hidden, masked):  # ...but not the package: empty, no task file
        assert output.splitlines()[0] == "0" and "No such file or directory" in output, output


def read_in_thread(function, *args, seconds: float = 10.0):
    """``function(*args)``'s result or exception, or "hung" if it does not return within ``seconds``."""
    out = []

    def work():
        try:
            out.append(function(*args))
        except Exception as error:  # noqa: BLE001 - returned for the assertion
            out.append(error)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(seconds)
    return out[0] if out else "hung"


def test_file_tools_refuse_fifos_and_devices():
    with make() as box:
        fifo = os.path.join(box.repo, "pipe")
        os.mkfifo(fifo)
        read = read_in_thread(box.read_text, "pipe")
        written = read_in_thread(box.write_text, "pipe", "x")
        for _ in range(2):  # unblock a hung open (without the fix) so the thread can end
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_RDWR | os.O_NONBLOCK))
        for outcome in (read, written):
            assert isinstance(outcome, OSError) and "not a regular file" in str(outcome), outcome
        assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
        if box.mode == "root":  # a device node (only root can make one): /dev/null's numbers
            os.mknod(os.path.join(box.repo, "dev"), stat.S_IFCHR | 0o666, os.makedev(1, 3))
            for call in (lambda: box.read_text("dev"), lambda: box.write_text("dev", "x")):
                # refused by the tool, or by the workspace's nodev tmpfs before that
                with pytest.raises(OSError, match="not a regular file|Permission denied"):
                    call()
        # regular files still work, a directory is still a directory
        box.write_text("ok.txt", "fine\n")
        assert box.read_text("ok.txt") == "fine\n"
        os.mkdir(os.path.join(box.repo, "d"))
        with pytest.raises(IsADirectoryError):
            box.read_text("d")


def test_commands_run_when_the_parent_has_fds_above_1024():
    # regression: select.select() raises for fds >= 1024; a trainer with many open files has such fds
    fds = []
    try:
        while len(fds) < 1100:
            fds.append(os.open("/dev/null", os.O_RDONLY))
        with make() as box:
            result = box.run("echo hello")
        assert result.exit_code == 0 and "hello" in result.output
    finally:
        for fd in fds:
            os.close(fd)


def test_cpu_and_file_size_limits():
    with make(cpu_seconds=1, timeout=20, file_bytes=1 << 20) as box:
        started = time.monotonic()
        result = box.run("python -c 'while True: pass'")
        assert not result.timed_out and result.exit_code != 0 and time.monotonic() - started < 10
        result = box.run("head -c 5000000 /dev/zero > big; echo status=$?")
        assert "status=0" not in result.output
        assert os.path.getsize(os.path.join(box.repo, "big")) <= 1 << 20


def test_gigantic_output_is_truncated_and_capped():
    with make(output_chars=2000, kill_output_bytes=4 << 20, timeout=30) as box:
        result = box.run("yes 'all work and no play'")
        assert result.killed_reason == "output" and not result.timed_out
        assert "truncated" in result.output and len(result.output) < 3000
        result = box.run("head -c 100000 /dev/zero | tr '\\0' a; echo; echo END")
        assert result.exit_code == 0 and result.output_truncated
        assert result.output.rstrip().endswith("END") and "truncated" in result.output and len(result.output) < 2200


def test_file_tools_refuse_paths_out_of_the_repo(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    with make() as box:
        box.write_text("pkg/mod.py", "x = 1\n")
        assert box.read_text("pkg/mod.py") == "x = 1\n"
        os.symlink(secret, os.path.join(box.repo, "link"))
        os.symlink(tmp_path, os.path.join(box.repo, "dirlink"))
        for path in ("../outside", "/etc/passwd", str(secret), "link", "dirlink/secret.txt", "pkg/../../x", ""):
            with pytest.raises(PathEscape):
                box.read_text(path)
            with pytest.raises(PathEscape):
                box.write_text(path, "pwned")
        assert secret.read_text() == "top secret"


def test_patch_paths_escaping_the_repo_are_rejected():
    for path in ("../evil.py", "/etc/passwd", "a/../../evil.py", "~/.bashrc"):
        patch = f"--- a/{path}\n+++ b/{path}\n@@ -0,0 +1 @@\n+pwned\n".replace("a//", "/").replace("b//", "/")
        with pytest.raises(PatchError):
            check_patch_paths(patch)
    with pytest.raises(PatchError):
        check_patch_paths("diff --git a/x b/../../y\nrename from x\nrename to ../../y\n")
    assert check_patch_paths("--- a/pkg/m.py\n+++ b/pkg/m.py\n@@ -1 +1 @@\n-a\n+b\n") == ["pkg/m.py"]


def test_git_apply_inside_the_jail_cannot_write_outside(tmp_path):
    # even a patch that slipped past the path check is applied by git inside the jail
    with make() as box:
        box.write_text("a.txt", "a\n")
        patch_dir = box.private_dir(".patch")
        for name, target in (("root", f"{box.root}/pwned"), ("tmp", f"{tmp_path}/pwned")):
            escape = f"--- /dev/null\n+++ b/../../../../../../..{target}\n@@ -0,0 +1 @@\n+pwned\n"
            with open(os.path.join(patch_dir, f"{name}.patch"), "w") as handle:
                handle.write(escape)
        # the sandbox root is read-only inside the jail: git fails
        result = box.run(f"git apply --unsafe-paths {patch_dir}/root.patch; echo rc=$?")
        assert "rc=0" not in result.output and not os.path.exists(f"{box.root}/pwned")
        # the host's /tmp is replaced by a private tmpfs: git "succeeds" there, and nothing reaches the host
        box.run(f"git apply --unsafe-paths {patch_dir}/tmp.patch")
        assert not (tmp_path / "pwned").exists()


# a Python program that imports the sandbox without trl_aem's package (no torch: starts in a blink)
STANDALONE = (
    "import importlib, os, signal, sys, time, types\n"
    "package = types.ModuleType('swebox')\n"
    f"package.__path__ = [{os.path.dirname(sandbox_module.__file__)!r}]\n"
    "sys.modules['swebox'] = package\n"
    "Sandbox = importlib.import_module('swebox.sandbox').Sandbox\n"
)


def deep_tree(top: str, levels: int, name: str = "d") -> None:
    """``levels`` nested directories under ``top`` (by descriptor: deeper than PATH_MAX allows by path)."""
    fd = os.open(top, os.O_RDONLY)
    try:
        for _ in range(levels):
            os.mkdir(name, dir_fd=fd)
            child = os.open(name, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = child
        os.close(os.open("leaf.pyc", os.O_CREAT | os.O_WRONLY, dir_fd=fd))
    finally:
        os.close(fd)


def test_cleanup_on_close_and_gc():
    box = make()
    root = box.root
    box.run("echo x > file")
    box.close()
    assert not os.path.exists(root) and box.closed and not os.path.exists(root + sandbox_module.LOCK_SUFFIX)
    box = make()
    root = box.root
    del box
    assert not os.path.exists(root)


def test_remove_tree_handles_any_depth(tmp_path):
    # regression (issue 17): shutil.rmtree and os.walk recurse and raised RecursionError on a deep tree
    top = tmp_path / "top"
    top.mkdir()
    deep_tree(str(top), 3000, name="d" * 20)  # 63000 characters of path: past PATH_MAX as well
    (top / "ro").mkdir()
    (top / "ro" / "file").write_text("x")
    (top / "ro").chmod(0o500)
    (top / "locked").mkdir()
    (top / "locked" / "sub").mkdir()
    (top / "locked").chmod(0)  # unreadable even for its owner (matters when the tests run unprivileged)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("keep")
    (top / "link").symlink_to(outside)
    assert cleanup.remove_tree(str(top)) and not top.exists()
    assert (outside / "keep").read_text() == "keep"  # a symlink is removed, never followed
    assert cleanup.remove_tree(str(top))  # already gone: fine


def test_the_stale_sweep_removes_only_sandboxes_whose_owner_is_gone(tmp_path, monkeypatch):
    # issue 17: the sweep judged owners by PID (meaningless across PID namespaces, reusable) and removed the
    # sandboxes of live processes; now only a free lock (its owner died) proves an owner gone
    base = tmp_path / "base"
    base.mkdir()
    crash = STANDALONE + (
        f"box = Sandbox(None, base_dir={str(base)!r})\n"
        "os.chdir(box.repo)\n"
        "for _ in range(1200): os.mkdir('d'); os.chdir('d')\n"  # a deep tree left behind as well
        "print(box.root, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", crash], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    orphan = proc.stdout.strip()
    assert os.path.isdir(orphan) and os.path.exists(orphan + sandbox_module.LOCK_SUFFIX)
    live_code = (
        STANDALONE + f"box = Sandbox(None, base_dir={str(base)!r})\nprint(box.root, flush=True)\ntime.sleep(60)\n"
    )
    live = subprocess.Popen([sys.executable, "-c", live_code], stdout=subprocess.PIPE, text=True)
    survivor = None
    try:
        alive = live.stdout.readline().strip()
        assert os.path.isdir(alive)
        legacy = base / f"{sandbox_module.PREFIX}1-0123456789ab-x"  # no lock: an older version's, or unknown
        legacy.mkdir()

        def every_pid_looks_dead(pid, sig):  # as a PID of another PID namespace would
            raise ProcessLookupError(pid)

        monkeypatch.setattr(os, "kill", every_pid_looks_dead)
        sandbox_module._swept.discard(str(base))
        survivor = Sandbox(None, base_dir=str(base))
        monkeypatch.undo()
        assert not os.path.lexists(orphan) and not os.path.exists(orphan + sandbox_module.LOCK_SUFFIX)
        assert os.path.isdir(alive) and legacy.is_dir() and os.path.isdir(survivor.root)
        _, parents, _ = bounds.cgroup_parents()
        assert not any(os.path.exists(os.path.join(d, os.path.basename(orphan))) for d in parents.values())
        # once the live owner is gone, its sandbox goes with the next sweep
        live.kill()
        live.wait()
        sandbox_module._swept.discard(str(base))
        Sandbox(None, base_dir=str(base)).close()
        assert not os.path.lexists(alive) and legacy.is_dir()
    finally:
        monkeypatch.undo()
        live.kill()
        live.wait()
        if survivor is not None:
            survivor.close()


def test_refuses_without_namespaces_unless_opted_out(monkeypatch):
    monkeypatch.setattr(sandbox_module, "isolation", lambda: (None, "user namespaces are disabled"))
    monkeypatch.setenv("HF_TOKEN", "hf_env_secret")
    with pytest.raises(SandboxUnavailable, match="allow_network=True"):
        Sandbox(None)
    with Sandbox(None, allow_network=True, limits=SandboxLimits(timeout=5)) as box:
        result = box.run("env; echo ok")
        assert "ok" in result.output and "hf_env_secret" not in result.output
        assert box.run("sleep 30").timed_out


def test_commands_in_different_sandboxes_run_concurrently():
    boxes = [make() for _ in range(4)]
    try:
        results = [None] * len(boxes)

        def work(i):
            results[i] = boxes[i].run("sleep 1.5; echo done")

        started = time.monotonic()
        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(boxes))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        assert all(r.exit_code == 0 and "done" in r.output for r in results)
        assert elapsed < 4.5, elapsed  # 4 x 1.5 s serialized would be 6 s
    finally:
        for box in boxes:
            box.close()


USERNS_PROBE = """
import importlib, json, os, sys, types
sys.path.insert(0, os.path.dirname(sys.argv[2]))
from sandbox_probe_helpers import IPC_PROBE, KERNEL_PROBE, SURVIVORS_DONE, SURVIVORS_TIMEOUT, live_cmdlines
# the sandbox and its helper modules only (standard library): no trl_aem / torch import as nobody
package = types.ModuleType("swebox")
package.__path__ = [os.path.dirname(sys.argv[1])]
sys.modules["swebox"] = package
sandbox = importlib.import_module("swebox.sandbox")
os.environ["HF_TOKEN"] = "hf_env_secret"
with sandbox.Sandbox(None, limits=sandbox.SandboxLimits(timeout=4, processes=64)) as box:
    out = {"mode": box.mode, "uid": os.getuid(), "bounds": box.bounds}
    out["kernel"] = box.run(KERNEL_PROBE).output
    out["write"] = box.run("echo hi > x && cat x; echo y > /etc/pwned; echo $?").output
    out["env"] = box.run("env; cat /proc/*/environ").output
    out["net"] = box.run("bash -c 'echo > /dev/tcp/1.1.1.1/80' 2>&1; echo rc=$?").output
    out["bomb"] = box.run("bomb(){ bomb | bomb & }; bomb; sleep 30").killed_reason
    out["survivors"] = []
    for command in (SURVIVORS_TIMEOUT, SURVIVORS_DONE):
        out["survivors"].append(box.run(command, timeout=2).killed_reason)
        out["survivors"].append(live_cmdlines("trl-aem-survivor"))
    out["ipc"] = box.run(IPC_PROBE).output
print(json.dumps(out))
"""


def test_unprivileged_user_namespace_mode():
    """The jail as an ordinary user builds (``unshare --user``): run it as ``nobody`` when we are root."""
    if os.geteuid() != 0:  # then every test above already ran in user-namespace mode
        assert isolation()[0] == "userns"
        return
    python = next(p for p in ("/usr/bin/python3", "/usr/local/bin/python3") if os.access(p, os.X_OK))
    workdir = tempfile.mkdtemp(prefix="trl-aem-userns-test-")  # pytest's tmp_path is private to root
    try:
        os.chmod(workdir, 0o755)
        probe = os.path.join(workdir, "probe.py")
        helpers = os.path.join(workdir, "sandbox_probe_helpers.py")
        with open(probe, "w") as handle:
            handle.write(USERNS_PROBE)
        with open(helpers, "w") as handle:
            handle.write(HELPERS)
        os.chmod(probe, 0o644)
        os.chmod(helpers, 0o644)
        shm_before = host_shm_ids()
        proc = subprocess.run(
            [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                python,
                probe,
                sandbox_module.__file__,
                helpers,
            ],
            env={"PATH": "/usr/bin:/bin", "HOME": workdir},
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["mode"] == "userns" and out["uid"] == 65534
    # the filter is on in this mode too; nested user namespaces are refused by the jail's own sysctl
    kernel = json.loads(out["kernel"].split("KERNEL ", 1)[1].splitlines()[0])
    assert kernel["AF_VSOCK"] == kernel["AF_NETLINK"] == errno.EAFNOSUPPORT, kernel
    assert kernel["AF_UNIX"] == kernel["AF_INET"] == kernel["socketpair"] == "ok", kernel
    assert kernel["io_uring"] == errno.ENOSYS and kernel["userns"] != "ok", kernel
    assert "UNSHARE-USER-OK" not in out["kernel"]
    assert out["bounds"]["user_namespaces"].startswith("refused: user.max_user_namespaces=0"), out["bounds"]
    # nobody cannot make cgroups or mount a tmpfs: the fallbacks are applied and said so
    assert out["bounds"]["memory"].startswith("NOT BOUNDED by a cgroup") and "fallback" in out["bounds"]["memory"]
    assert out["bounds"]["disk"].startswith("NOT BOUNDED as a whole")
    assert out["write"].startswith("hi\n") and "Read-only file system" in out["write"]
    assert "hf_env_secret" not in out["env"] and "HF_TOKEN" not in out["env"]
    assert "rc=0" not in out["net"] and "unreachable" in out["net"]
    assert out["bomb"] == "timeout"
    # nothing a command started is alive once run() returned (after a timeout and after a normal end)
    assert out["survivors"] == ["timeout", [], None, []]
    created = host_shm_ids() - shm_before
    remove_shm(created)
    assert "shmid=" in out["ipc"] and not created  # its shared memory segment stayed in its namespace


def test_a_command_cannot_fake_a_jail_failure():
    with make() as box:
        result = box.run("echo 'trl-aem sandbox: mount failed' >&2; exit 125")
        assert result.exit_code == 125  # an ordinary failing command, not a SandboxError
        # a jail that really fails to set itself up is an error of the sandbox, never a command result
        box._jail = box._jail.replace("cd ", "fail 'forced for the test'; cd ", 1)
        with pytest.raises(SandboxError, match="forced for the test"):
            box.run("echo never")

"""The SWE sandbox contains what model-written commands try: network, writes outside, secrets, fork and
memory bombs, endless loops, gigantic output, escaping paths; and it always cleans up."""

import contextlib
import ctypes
import inspect
import json
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
                with pytest.raises(OSError, match="not a regular file"):
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


def test_cleanup_on_close_gc_and_after_a_crash(tmp_path):
    box = make()
    root = box.root
    box.run("echo x > file")
    box.close()
    assert not os.path.exists(root) and box.closed
    box = make()
    root = box.root
    del box
    assert not os.path.exists(root)
    # a process killed with SIGKILL leaves its directory behind; the next process sweeps it
    base = tmp_path / "base"
    base.mkdir()
    code = (
        "import os, signal\n"
        "from trl_aem.envs.swe.sandbox import Sandbox\n"
        f"box = Sandbox(None, base_dir={str(base)!r})\n"
        "print(box.root, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    orphan = proc.stdout.strip()
    assert os.path.isdir(orphan)
    # directories of another boot or PID namespace (a container sharing /tmp) are not this process's to
    # judge: a PID dead here may be alive there
    dead = subprocess.Popen(["true"])
    dead.wait()
    foreign = base / f"{sandbox_module.PREFIX}{dead.pid}-0123456789ab-x"
    untagged = base / f"{sandbox_module.PREFIX}{dead.pid}-x"
    ours = base / f"{sandbox_module.PREFIX}{dead.pid}-{sandbox_module._owner_tag()}-x"
    for path in (foreign, untagged, ours):
        path.mkdir()
    assert sandbox_module._owner_tag() != "0123456789ab"
    sandbox_module._swept = False
    survivor = Sandbox(None, base_dir=str(base))
    try:
        assert not os.path.exists(orphan) and os.path.isdir(survivor.root)
        assert foreign.is_dir() and untagged.is_dir() and not ours.exists()
    finally:
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
import importlib.util, json, os, sys
sys.path.insert(0, os.path.dirname(sys.argv[2]))
from sandbox_probe_helpers import IPC_PROBE, SURVIVORS_DONE, SURVIVORS_TIMEOUT, live_cmdlines
spec = importlib.util.spec_from_file_location("sandbox", sys.argv[1])
sandbox = sys.modules["sandbox"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sandbox)  # only the standard library: no trl_aem / torch import as nobody
os.environ["HF_TOKEN"] = "hf_env_secret"
with sandbox.Sandbox(None, limits=sandbox.SandboxLimits(timeout=4, processes=64)) as box:
    out = {"mode": box.mode, "uid": os.getuid()}
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

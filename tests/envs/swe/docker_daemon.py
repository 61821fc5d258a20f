"""A private Docker daemon and the images the Docker back end's tests run on, built without a registry.

- :func:`start_daemon`: ``dockerd`` on its own socket, data root and exec root in a short temporary
  directory, with no bridge and no iptables rules (the host's network and any system daemon's state are never
  touched); or, with ``TRL_AEM_DOCKER_HOST`` set, a daemon someone else started (never the default socket).
- :func:`ensure_base_image`: a Debian bookworm root filesystem (``debootstrap --variant=minbase``, about
  70-100 s) with python3, git and pytest, imported with ``docker import``; saved once with ``docker save`` to
  the cache folder (``TRL_AEM_DOCKER_CACHE``, default ``~/.cache/trl_aem/docker``) and ``docker load``-ed
  from there on later runs (seconds).
- :func:`ensure_task_image`: a small layer on top with a git repository at ``/testbed`` (a buggy ``calc``
  package and its tests at a base commit), made with ``docker run`` + ``docker commit`` (no network); and
  :func:`calc_task`, the instance that goes with it (gold patch, held-out test patch, FAIL_TO_PASS, PASS_TO_PASS).

:func:`unavailable_reason` says why none of this can run here (not root, no ``dockerd``/``debootstrap``),
so that the tests skip with that reason. Run as a script (``python tests/envs/swe/docker_daemon.py``) it
starts a daemon, builds both images and prints the ``DOCKER_HOST`` to use, leaving the daemon running.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import os
import re
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from trl_aem.envs.swe import docker as swe_docker

BASE_IMAGE = "local/trl-aem-py:bookworm"
TASK_IMAGE = "local/trl-aem-task:calc"
# bump when the base image's recipe changes: the cached tarball of an older recipe is then rebuilt
BASE_RECIPE = "v1"
PACKAGES = ("python3", "python-is-python3", "python3-pytest", "git", "ca-certificates")
DEFAULT_MIRROR = "http://deb.debian.org/debian"


@dataclass
class Daemon:
    """A Docker daemon reachable at ``host``; ``process`` is set when this module started it."""

    host: str
    process: subprocess.Popen | None = None
    root: Path | None = None

    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.host}

    def docker(self, *args: str, input: bytes | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        """``docker ARGS`` against this daemon (bytes in and out)."""
        return subprocess.run(["docker", *args], input=input, capture_output=True, env=self.env(), timeout=timeout)

    def check(self, *args: str, input: bytes | None = None, timeout: float = 300) -> bytes:
        proc = self.docker(*args, input=input, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args[:3])} failed: {proc.stderr.decode(errors='replace')[-800:]}")
        return proc.stdout

    def stop(self) -> None:
        """Stop a daemon this module started (its containers go with it) and remove its directory."""
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
            self.process = None
        if self.root is not None:
            # the data root holds overlay mounts until the daemon is gone; unmount leftovers before removing
            subprocess.run(["umount", "-R", "-l", str(self.root / "data")], capture_output=True)
            shutil.rmtree(self.root, ignore_errors=True)


def cache_dir() -> Path:
    return Path(os.environ.get("TRL_AEM_DOCKER_CACHE") or Path.home() / ".cache" / "trl_aem" / "docker")


def unavailable_reason() -> str | None:
    """Why no private daemon can run here, or ``None`` when one can (or one is given)."""
    if os.environ.get("TRL_AEM_DOCKER_HOST"):
        return None
    if shutil.which("docker") is None:
        return "no `docker` client (install docker.io)"
    if shutil.which("dockerd") is None:
        return "no `dockerd` (as root: apt-get install docker.io debootstrap)"
    if os.geteuid() != 0:
        return "a private dockerd needs root"
    return None


def start_daemon(timeout: float = 60, *, owned: bool = True) -> Daemon:
    """A daemon given by ``TRL_AEM_DOCKER_HOST``, else a private ``dockerd`` (module docstring). ``owned``: the
    daemon belongs to this process, and a later :func:`start_daemon` stops it if this process dies first."""
    given = os.environ.get("TRL_AEM_DOCKER_HOST")
    if given:
        return _wait_ready(Daemon(host=given), timeout)
    stop_stale_daemons()
    # short: a unix socket path may not exceed 107 bytes
    root = Path(tempfile.mkdtemp(prefix="trl-dk-", dir="/tmp"))
    if owned:
        (root / "owner").write_text(swe_docker.owner_label())
    argv = [
        "dockerd",
        "--host", f"unix://{root}/sock",
        "--data-root", str(root / "data"),
        "--exec-root", str(root / "exec"),
        "--pidfile", str(root / "pid"),
        "--bridge=none", "--iptables=false", "--ip6tables=false",
    ]  # fmt: skip
    log = open(root / "dockerd.log", "wb")  # noqa: SIM115 - the daemon writes to it for its whole life
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    return _wait_ready(Daemon(host=f"unix://{root}/sock", process=process, root=root), timeout)


@contextlib.contextmanager
def serving(daemon: Daemon):
    """``DOCKER_HOST`` points at ``daemon`` inside the block (the workspaces' docker commands go there); on the way
    out the previous value is restored and the daemon stopped."""
    previous = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = daemon.host
    try:
        yield daemon
    finally:
        if previous is None:
            os.environ.pop("DOCKER_HOST", None)
        else:
            os.environ["DOCKER_HOST"] = previous
        daemon.stop()


def stop_stale_daemons() -> list[Path]:
    """Stop the private daemons whose owner process is gone (a test session killed before its teardown)."""
    stopped = []
    for owner in Path("/tmp").glob("trl-dk-*/owner"):
        root = owner.parent
        if not swe_docker._owner_gone(owner.read_text().strip()):
            continue
        try:
            pid = int((root / "pid").read_text())
            alive = str(root) in Path(f"/proc/{pid}/cmdline").read_text()  # that PID is still our dockerd
        except (OSError, ValueError):
            pid, alive = 0, False
        Daemon(host="", process=_Adopted(pid) if alive else None, root=root).stop()
        stopped.append(root)
    return stopped


class _Adopted:
    """The ``Popen`` subset :meth:`Daemon.stop` uses, for a daemon another (dead) process started."""

    def __init__(self, pid: int):
        self.pid = pid

    def terminate(self) -> None:
        os.kill(self.pid, signal.SIGTERM)

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)

    def wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while Path(f"/proc/{self.pid}").exists():
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired("dockerd", timeout)
            time.sleep(0.2)


def _wait_ready(daemon: Daemon, timeout: float) -> Daemon:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon.process is not None and daemon.process.poll() is not None:
            break
        if daemon.docker("info", "--format", "{{.ServerVersion}}", timeout=30).returncode == 0:
            return daemon
        time.sleep(0.3)
    text = (daemon.root / "dockerd.log").read_text(errors="replace")[-1500:] if daemon.root else ""
    daemon.stop()
    raise RuntimeError(f"dockerd at {daemon.host} did not answer within {timeout:g} s: {text}")


def has_image(daemon: Daemon, image: str) -> bool:
    return daemon.docker("image", "inspect", image, timeout=60).returncode == 0


def apt_mirror() -> str:
    """The Debian mirror this machine's apt uses (deb822 ``URIs:`` or one-line ``deb`` entries)."""
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        try:
            text = path.read_text()
        except OSError:
            continue
        for match in re.finditer(r"^(?:URIs:\s*|deb\s+(?:\[[^\]]*\]\s*)?)(\S+)", text, re.MULTILINE):
            if "security" not in match.group(1):
                return match.group(1)
    return DEFAULT_MIRROR


def build_rootfs(rootfs: Path) -> None:
    """Debian bookworm (minbase) with :data:`PACKAGES`, at ``rootfs`` (niced: it shares the machine)."""
    mirror = apt_mirror()
    _run(["nice", "debootstrap", "--variant=minbase", "bookworm", str(rootfs), mirror], 900)
    shutil.copy("/etc/resolv.conf", rootfs / "etc" / "resolv.conf")
    (rootfs / "proc").mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "proc", "proc", str(rootfs / "proc")], check=True)
    try:
        env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
        chroot = ["nice", "chroot", str(rootfs)]
        _run([*chroot, "apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES], 900, env)
        _run([*chroot, "apt-get", "clean"], 120, env)
    finally:
        subprocess.run(["umount", "-l", str(rootfs / "proc")], capture_output=True)
    shutil.rmtree(rootfs / "var" / "lib" / "apt" / "lists", ignore_errors=True)
    (rootfs / "etc" / "resolv.conf").write_text("")  # the containers run with --network none


def _run(argv: list[str], timeout: float, env: dict | None = None) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} failed ({proc.returncode}): {(proc.stdout + proc.stderr)[-1500:]}")


def ensure_base_image(daemon: Daemon, cache: Path | None = None) -> tuple[str, str]:
    """:data:`BASE_IMAGE` in the daemon; returns it and how it got there (present, loaded, built)."""
    if has_image(daemon, BASE_IMAGE):
        return BASE_IMAGE, "present"
    cache = cache or cache_dir()
    tarball = cache / f"trl-aem-py-bookworm-{BASE_RECIPE}.tar"
    if tarball.is_file():
        daemon.check("load", "--input", str(tarball), timeout=600)
        if has_image(daemon, BASE_IMAGE):
            return BASE_IMAGE, f"loaded from {tarball}"
    with tempfile.TemporaryDirectory(prefix="trl-aem-rootfs-") as work:
        rootfs = Path(work) / "rootfs"
        build_rootfs(rootfs)
        archive = subprocess.run(["tar", "-C", str(rootfs), "-c", "."], capture_output=True, check=True).stdout
    daemon.check("import", "--change", 'CMD ["bash"]', "-", BASE_IMAGE, input=archive, timeout=600)
    cache.mkdir(parents=True, exist_ok=True)
    partial = tarball.with_suffix(".partial")
    daemon.check("save", "--output", str(partial), BASE_IMAGE, timeout=600)
    partial.replace(tarball)  # atomic: a run interrupted mid-save leaves no truncated cache
    return BASE_IMAGE, f"built (debootstrap) and saved to {tarball}"


# ---------------------------------------------------------------------------------------- the task
CALC_BUGGY = '''"""A tiny calculator."""


def add(a, b):
    return a - b


def sub(a, b):
    return a - b
'''
CALC_TESTS = """from calc import sub


def test_sub():
    assert sub(5, 3) == 2
"""
CALC_FIXED = CALC_BUGGY.replace("return a - b", "return a + b", 1)
CALC_TESTS_HELD_OUT = CALC_TESTS.replace("import sub", "import add, sub") + (
    "\n\ndef test_add():\n    assert add(2, 3) == 5\n"
)


def unified_diff(path: str, old: str, new: str) -> str:
    """A git-style diff of one file (what the agent's tools and SWE-bench's patches look like)."""
    body = difflib.unified_diff(old.splitlines(True), new.splitlines(True), f"a/{path}", f"b/{path}")
    return f"diff --git a/{path} b/{path}\n" + "".join(body)


GOLD_PATCH = unified_diff("calc/__init__.py", CALC_BUGGY, CALC_FIXED)
TEST_PATCH = unified_diff("tests/test_calc.py", CALC_TESTS, CALC_TESTS_HELD_OUT)
SETUP = (
    "set -e; mkdir -p /testbed; tar -x -C /testbed; cd /testbed; git init -q; "
    "git -c user.name=t -c user.email=t@t add -A; git -c user.name=t -c user.email=t@t commit -qm base; "
    "git rev-parse HEAD"
)


def _project_tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, text in {"calc/__init__.py": CALC_BUGGY, "tests/test_calc.py": CALC_TESTS}.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def ensure_task_image(daemon: Daemon) -> tuple[str, str]:
    """:data:`TASK_IMAGE` (rebuilt from the base in a second or two when missing); returns it and the
    repository's base commit."""
    if not has_image(daemon, TASK_IMAGE):
        name = f"trl-aem-build-{os.getpid()}"
        daemon.docker("rm", "--force", name, timeout=60)
        try:
            argv = ["run", "--interactive", "--name", name, "--network", "none", BASE_IMAGE, "bash", "-c", SETUP]
            daemon.check(*argv, input=_project_tar(), timeout=300)
            daemon.check("commit", "--change", "WORKDIR /testbed", name, TASK_IMAGE, timeout=300)
        finally:
            daemon.docker("rm", "--force", name, timeout=60)
    out = daemon.check("run", "--rm", "--network", "none", TASK_IMAGE, "git", "-C", "/testbed", "rev-parse", "HEAD")
    return TASK_IMAGE, out.decode().strip()


def calc_task(image: str, base_commit: str) -> dict:
    """The SWE-bench-style instance of :data:`TASK_IMAGE`."""
    return {
        "instance_id": "trl-aem__calc-1",
        "repo": "trl-aem/calc",
        "base_commit": base_commit,
        "problem_statement": "calc.add(2, 3) returns -1 instead of 5.",
        "patch": GOLD_PATCH,
        "test_patch": TEST_PATCH,
        "FAIL_TO_PASS": ["tests/test_calc.py::test_add"],
        "PASS_TO_PASS": ["tests/test_calc.py::test_sub"],
        "docker_image": image,
    }


if __name__ == "__main__":
    started = time.perf_counter()
    daemon = start_daemon(owned=False)  # left running for the user: no later session stops it
    print(f"daemon ready in {time.perf_counter() - started:.1f} s: DOCKER_HOST={daemon.host}")
    started = time.perf_counter()
    print(ensure_base_image(daemon)[1], f"({time.perf_counter() - started:.1f} s)")
    started = time.perf_counter()
    print("task image", ensure_task_image(daemon), f"({time.perf_counter() - started:.1f} s)")
    if daemon.root is not None:
        print(f"left running; stop it with: kill $(cat {daemon.root}/pid); rm -rf {daemon.root}")

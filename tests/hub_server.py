"""A loopback Hub-compatible HTTP server for the tests: enough of the Hub API for huggingface_hub 2.4 to create
repositories, upload folders (regular NDJSON commits), read files back (``snapshot_download``, ``from_pretrained``)
and for :class:`~huggingface_hub.ModelCard` to load and push cards. Files live on disk under ``root``.

Faults for the resilience tests: :meth:`HubServer.fail` answers 500 to the next requests, :meth:`HubServer.stop`
closes the port (connection refused) and :meth:`HubServer.start` opens the same port again.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shutil
import socket
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["HubServer"]

NAMESPACE = "tester"  # the user a token belongs to


class _Repo:
    def __init__(self, path: Path):
        self.path = path
        self.sha = uuid.uuid4().hex + uuid.uuid4().hex[:8]  # 40 hex digits; unique so no client cache is stale
        self.commits: list[str] = [self.sha]

    def files(self) -> list[str]:
        return sorted(str(p.relative_to(self.path)) for p in self.path.rglob("*") if p.is_file())


class HubServer:
    """Start with :meth:`start`; ``url`` is the endpoint; ``requests`` logs ``(method, path)`` of every call."""

    def __init__(self, root: str | os.PathLike, port: int = 0):
        self.root = Path(root)
        self.port = port
        self.repos: dict[str, _Repo] = {}
        self.lock = threading.RLock()
        self.requests: list[tuple[str, str]] = []
        self._failures = 0
        self._failure_status = 500
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set = set()  # open client sockets: keep-alive connections outlive shutdown()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ------------------------------------------------------------------ lifecycle and faults
    def start(self) -> HubServer:
        handler = type("Handler", (_Handler,), {"hub": self})
        server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the port: clients get "connection refused" until :meth:`start`."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        # a client's pooled keep-alive connection would otherwise still be served by its handler thread: a
        # stopped Hub must refuse everyone, as a real outage does
        with self.lock:
            connections, self._connections = list(self._connections), set()
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by the client
                connection.shutdown(socket.SHUT_RDWR)

    def fail(self, count: int, status: int = 500) -> None:
        """Answer ``status`` to the next ``count`` requests."""
        with self.lock:
            self._failures, self._failure_status = count, status

    def _take_failure(self) -> int | None:
        with self.lock:
            if self._failures > 0:
                self._failures -= 1
                return self._failure_status
        return None

    # ------------------------------------------------------------------ repositories
    def repo(self, repo_id: str, create: bool = False) -> _Repo | None:
        with self.lock:
            if repo_id not in self.repos and create:
                path = self.root / repo_id
                path.mkdir(parents=True, exist_ok=True)
                self.repos[repo_id] = _Repo(path)
            return self.repos.get(repo_id)

    def file(self, repo_id: str, path: str) -> bytes | None:
        repo = self.repo(repo_id)
        target = None if repo is None else repo.path / path
        return target.read_bytes() if target is not None and target.is_file() else None


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep pytest output clean
        pass

    def setup(self) -> None:
        super().setup()
        with self.hub.lock:
            self.hub._connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.hub.lock:
                self.hub._connections.discard(self.connection)

    # ------------------------------------------------------------------ plumbing
    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, payload=None, headers: dict | None = None, raw: bytes | None = None) -> None:
        body = raw if raw is not None else (b"" if payload is None else json.dumps(payload).encode())
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if raw is None else "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _not_found(self, code: str, message: str) -> None:
        self._send(404, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message})

    def _dispatch(self) -> None:
        body = self._body() if self.command in ("POST", "PUT") else b""  # always read the body (keep-alive)
        parts = urlsplit(self.path)
        path, query = unquote(parts.path), parse_qs(parts.query)
        self.hub.requests.append((self.command, path))
        status = self.hub._take_failure()
        if status is not None:
            self._send(status, {"error": "injected failure"})
            return
        try:
            self._route(path, query, body)
        except Exception as error:  # a bug here must show up as a clear HTTP error in the test
            self._send(500, {"error": f"test server: {type(error).__name__}: {error}"})

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = _dispatch

    # ------------------------------------------------------------------ routes
    def _route(self, path: str, query: dict, body: bytes) -> None:
        hub, method = self.hub, self.command
        if path == "/api/agent-harnesses":
            return self._send(200, {})
        if path == "/api/whoami-v2":
            return self._send(200, {"name": NAMESPACE, "type": "user", "orgs": [], "auth": {}})
        if path == "/api/validate-yaml":
            return self._send(200, {})
        if path == "/api/repos/create" and method == "POST":
            data = json.loads(body or b"{}")
            repo_id = f"{data.get('organization') or NAMESPACE}/{data['name']}"
            url = f"{hub.url}/{repo_id}"
            if hub.repo(repo_id) is not None:
                return self._send(409, {"error": "You already created this model repo", "url": url})
            hub.repo(repo_id, create=True)
            return self._send(200, {"url": url, "name": repo_id})
        if path.startswith("/api/models/"):
            return self._api_model(path[len("/api/models/") :], method, query, body)
        if "/resolve/" in path:
            repo_id, rest = path.lstrip("/").split("/resolve/", 1)
            revision, file_path = rest.split("/", 1)
            return self._resolve(repo_id, revision, file_path)
        return self._not_found("EntryNotFound", f"no route for {method} {path}")

    def _split_repo(self, rest: str) -> tuple[str, str]:
        parts = rest.split("/")
        return "/".join(parts[:2]), "/".join(parts[2:])

    def _api_model(self, rest: str, method: str, query: dict, body: bytes) -> None:
        hub = self.hub
        repo_id, tail = self._split_repo(rest)
        repo = hub.repo(repo_id)
        if repo is None:
            return self._not_found("RepoNotFound", f"Repository {repo_id} not found")
        if tail.startswith("preupload/"):
            files = json.loads(body)["files"]
            return self._send(
                200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}
            )
        if tail.startswith("commit/"):
            return self._commit(repo_id, repo, body)
        if tail == "" or tail.startswith("revision/"):
            revision = tail.split("/", 1)[1] if tail else "main"
            if not self._known_revision(repo, revision):
                return self._not_found("RevisionNotFound", f"Revision {revision} not found")
            with hub.lock:
                info = {
                    "id": repo_id,
                    "modelId": repo_id,
                    "sha": repo.sha,
                    "private": False,
                    "siblings": [{"rfilename": f} for f in repo.files()],
                    "tags": [],
                }
            return self._send(200, info)
        if tail.startswith("tree/"):
            revision, _, folder = tail[len("tree/") :].partition("/")
            with hub.lock:
                entries = []
                seen_dirs = set()
                recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
                for name in repo.files():
                    if folder and not name.startswith(folder.rstrip("/") + "/"):
                        continue
                    relative = name[len(folder.rstrip("/")) + 1 :] if folder else name
                    if not recursive and "/" in relative:
                        directory = (folder.rstrip("/") + "/" if folder else "") + relative.split("/")[0]
                        if directory not in seen_dirs:
                            seen_dirs.add(directory)
                            entries.append({"type": "directory", "path": directory, "oid": repo.sha, "size": 0})
                        continue
                    data = (repo.path / name).read_bytes()
                    entries.append({"type": "file", "path": name, "size": len(data), "oid": _git_oid(data)})
            return self._send(200, entries)
        if tail.startswith("paths-info/"):
            return self._send(200, [])
        return self._not_found("EntryNotFound", f"no route for {method} /api/models/{rest}")

    def _known_revision(self, repo: _Repo, revision: str) -> bool:
        return revision in ("main", repo.sha) or revision in repo.commits

    def _commit(self, repo_id: str, repo: _Repo, body: bytes) -> None:
        hub = self.hub
        with hub.lock:
            for line in body.decode().splitlines():
                if not line.strip():
                    continue
                entry = json.loads(line)
                key, value = entry["key"], entry["value"]
                if key == "file":
                    target = repo.path / value["path"]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(base64.b64decode(value["content"]))
                elif key == "deletedFile":
                    (repo.path / value["path"]).unlink(missing_ok=True)
                elif key == "deletedFolder":
                    shutil.rmtree(repo.path / value["path"], ignore_errors=True)
                elif key == "lfsFile":
                    raise ValueError("LFS uploads are not supported by the test server")
            repo.sha = uuid.uuid4().hex + uuid.uuid4().hex[:8]
            repo.commits.append(repo.sha)
            sha = repo.sha
        self._send(200, {"commitUrl": f"{hub.url}/{repo_id}/commit/{sha}", "commitOid": sha, "pullRequestUrl": None})

    def _resolve(self, repo_id: str, revision: str, file_path: str) -> None:
        repo = self.hub.repo(repo_id)
        if repo is None:
            return self._not_found("RepoNotFound", f"Repository {repo_id} not found")
        if not self._known_revision(repo, revision):
            return self._not_found("RevisionNotFound", f"Revision {revision} not found")
        data = self.hub.file(repo_id, file_path)
        if data is None:
            return self._not_found("EntryNotFound", f"{file_path} not found in {repo_id}")
        headers = {"X-Repo-Commit": repo.sha, "ETag": f'"{_git_oid(data)}"'}
        self._send(200, headers=headers, raw=data)


def _git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()

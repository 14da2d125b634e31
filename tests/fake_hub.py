"""A loopback fake of the Hugging Face Hub HTTP API, for offline tests of pushing and loading.

The server speaks enough of the Hub protocol for the real `huggingface_hub` (2.x) and `transformers` clients:

- writing: `create_repo`, `create_branch`, `upload_folder` / `create_commit` / `push_to_hub` (preupload, the
  ndjson commit with base64 files and LFS pointers, the LFS batch API with the "basic" transfer: PUT, then
  verify) and `POST /api/validate-yaml` (the model-card metadata check; invalid YAML or a malformed
  `model-index` gives a 400);
- reading: `model_info` / `repo_info` (optionally at a revision), `list_repo_tree`, `get_paths_info`,
  `list_repo_refs` and `HEAD`/`GET /{repo}/resolve/{revision}/{path}` with the headers `hf_hub_download`
  needs (`X-Repo-Commit`, `ETag`, `Content-Length`, `X-Linked-Etag`/`X-Linked-Size` for LFS files,
  `X-Error-Code: EntryNotFound` / `RepoNotFound` / `RevisionNotFound` on 404), so `snapshot_download` and
  `from_pretrained(repo_id)` work.

Xet storage is not implemented: clients must run with `HF_HUB_DISABLE_XET=1` (the xet-token endpoints answer
with an error that says so). Requests that hit no route are answered 404 and recorded in `FakeHub.unhandled`,
so a test can assert that the client used nothing the fake does not know.

`huggingface_hub` reads `HF_ENDPOINT` (and the Xet/telemetry switches) once, when it is imported. The pytest
process usually imported it long before a fixture runs, so clients are run in subprocesses whose environment
comes from `FakeHub.env(hf_home)`; `run_python(code, env=...)` does that and reports the output on failure.

Use it in a test module with `from .fake_hub import fake_hub_fixture  # noqa: F401`, which provides the `fake_hub`
fixture. The server binds 127.0.0.1 only, on a free port, and stops when the fixture is torn down.
"""

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from fnmatch import fnmatch
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import yaml

FAKE_TOKEN = "hf_fake"
FAKE_USER = "fake-user"

# Files the Hub stores with LFS by default (a subset of the `.gitattributes` every new Hub repo starts with).
DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in (
        "*.safetensors",
        "*.bin",
        "*.pt",
        "*.pth",
        "*.ckpt",
        "*.h5",
        "*.onnx",
        "*.msgpack",
        "*.npy",
        "*.npz",
        "*.zip",
        "*.tar.gz",
    )
)
# Files at least this large go to LFS whatever their name (the Hub's limit for regular git blobs).
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
REPO_TYPE_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")

# Environment variables that would send the client elsewhere: another endpoint, a token from a file, or a proxy
# that cannot reach 127.0.0.1. Offline switches and cache locations are overridden explicitly instead (see
# `FakeHub.env`), so that merging the result into another environment cannot bring them back.
_ENV_TO_DROP = (
    "HF_TOKEN_PATH",
    "HF_STORED_TOKENS_PATH",
    "HUGGING_FACE_HUB_TOKEN",
    "HUGGINGFACE_CO_STAGING",
    "HUGGINGFACE_HUB_CACHE",
    "TRANSFORMERS_CACHE",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
)


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob, which is what the Hub calls a regular file's `oid` and `ETag`."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class StoredFile:
    content: bytes
    lfs: bool = False

    @property
    def size(self) -> int:
        return len(self.content)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @property
    def lfs_pointer(self) -> bytes:
        return f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {self.size}\n".encode()

    @property
    def git_oid(self) -> str:
        """The git blob id: of the pointer file for LFS files, of the content otherwise."""
        return git_blob_sha1(self.lfs_pointer if self.lfs else self.content)

    @property
    def content_oid(self) -> str:
        """What the preupload endpoint reports, and what the client compares to skip unchanged files."""
        return self.sha256 if self.lfs else git_blob_sha1(self.content)

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else git_blob_sha1(self.content)


@dataclass
class Commit:
    oid: str
    title: str
    message: str
    parent: str | None
    files: dict[str, StoredFile]
    date: str


@dataclass
class FakeRepo:
    repo_id: str
    repo_type: str = "model"
    private: bool = False
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)
    created_at: str = field(default_factory=lambda: _now())

    @property
    def url_prefix(self) -> str:
        return REPO_TYPE_PREFIX[self.repo_type]

    def resolve(self, revision: str) -> Commit | None:
        """A branch name or a full commit id -> the commit, or None."""
        oid = self.branches.get(revision, revision)
        return self.commits.get(oid)

    def files(self, revision: str = "main") -> dict[str, StoredFile]:
        commit = self.resolve(revision)
        if commit is None:
            raise KeyError(f"{self.repo_id} has no revision {revision!r}")
        return commit.files

    def read(self, path: str, revision: str = "main") -> bytes:
        return self.files(revision)[path].content

    def history(self, branch: str = "main") -> list[Commit]:
        """Commits of a branch, newest first."""
        commits, oid = [], self.branches.get(branch)
        while oid is not None:
            commits.append(self.commits[oid])
            oid = self.commits[oid].parent
        return commits


@dataclass
class RecordedRequest:
    method: str
    path: str
    status: int


class HubHTTPError(Exception):
    """Raised inside a route to answer with an error (status, Hub error code, message)."""

    def __init__(self, status: int, message: str, error_code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.error_code, self.headers = status, message, error_code, headers or {}


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _is_lfs_path(path: str, gitattributes: str) -> bool:
    for line in gitattributes.splitlines():
        parts = line.split()
        if len(parts) >= 2 and "filter=lfs" in parts[1:]:
            pattern = parts[0]
            # A pattern without "/" matches the file name at any depth, as in git.
            target = path if "/" in pattern else path.rsplit("/", 1)[-1]
            if fnmatch(target, pattern):
                return True
    return False


def split_front_matter(content: str) -> tuple[str | None, str]:
    """README text -> (YAML metadata text or None, body), as the Hub splits a card."""
    match = re.match(r"^---\s*\n(.*?)\n---\s*(?:\n|$)", content, flags=re.DOTALL)
    if match is None:
        return None, content
    return match.group(1), content[match.end() :]


def check_card_metadata(content: str) -> tuple[list[str], list[str]]:
    """Validate a README's YAML front matter the way the Hub does for the fields hf_vssl writes.

    Returns (errors, warnings). Checks: the YAML parses to a mapping; `tags`, `datasets`, `metrics`,
    `base_model` are strings or lists of strings; `library_name`, `license`, `pipeline_tag` are strings; and
    `model-index` has the Hub's shape (name, results with task.type, dataset.type/name, metrics with type and
    a value).
    """
    errors: list[str] = []
    yaml_text, _ = split_front_matter(content)
    if yaml_text is None or not yaml_text.strip():
        return errors, ["Empty or missing yaml metadata in repo card"]
    try:
        meta = yaml.safe_load(yaml_text)
    except yaml.YAMLError as exc:
        return [f"Invalid YAML in card metadata: {exc}"], []
    if not isinstance(meta, dict):
        return [f"Card metadata must be a YAML mapping, got {type(meta).__name__}"], []

    def _str_or_str_list(key):
        value = meta.get(key)
        if value is None or isinstance(value, str):
            return
        if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            errors.append(f'"{key}" must be a string or an array of strings')

    for key in ("tags", "datasets", "metrics", "base_model", "language"):
        _str_or_str_list(key)
    for key in ("library_name", "license", "pipeline_tag", "model_name"):
        if key in meta and not isinstance(meta[key], str):
            errors.append(f'"{key}" must be a string')

    model_index = meta.get("model-index")
    if model_index is not None:
        if not isinstance(model_index, list):
            errors.append('"model-index" must be an array')
            model_index = []
        for i, model in enumerate(model_index):
            where = f"model-index[{i}]"
            if not isinstance(model, dict) or not isinstance(model.get("name"), str):
                errors.append(f'"{where}.name" must be a string')
                continue
            results = model.get("results")
            if not isinstance(results, list):
                errors.append(f'"{where}.results" must be an array')
                continue
            for j, result in enumerate(results):
                rwhere = f"{where}.results[{j}]"
                if not isinstance(result, dict):
                    errors.append(f'"{rwhere}" must be an object')
                    continue
                task, dataset, metrics = result.get("task"), result.get("dataset"), result.get("metrics")
                if not isinstance(task, dict) or not isinstance(task.get("type"), str):
                    errors.append(f'"{rwhere}.task.type" must be a string')
                if not isinstance(dataset, dict) or not all(
                    isinstance(dataset.get(k), str) for k in ("type", "name")
                ):
                    errors.append(f'"{rwhere}.dataset" must have string "type" and "name"')
                if not isinstance(metrics, list) or not metrics:
                    errors.append(f'"{rwhere}.metrics" must be a non-empty array')
                    continue
                for k, metric in enumerate(metrics):
                    mwhere = f"{rwhere}.metrics[{k}]"
                    if not isinstance(metric, dict) or not isinstance(metric.get("type"), str):
                        errors.append(f'"{mwhere}.type" must be a string')
                    elif "value" not in metric or isinstance(metric["value"], (dict, list, bool)):
                        errors.append(f'"{mwhere}.value" must be a number or a string')
    return errors, []


class FakeHub:
    """In-memory Hub state plus the HTTP server that serves it (see the module docstring).

    Attributes:
        endpoint: `http://127.0.0.1:<port>`, to be used as `HF_ENDPOINT`.
        repos: `{(repo_type, repo_id): FakeRepo}`; `repo(repo_id)` is the shortcut.
        lfs_objects: `{sha256 hex: bytes}` uploaded through the LFS endpoints.
        requests: every request served, in order (method, path with query, status).
        unhandled: requests that matched no route.
        server_errors: tracebacks of requests whose handler crashed (answered 500).
    """

    def __init__(self, token: str = FAKE_TOKEN, user: str = FAKE_USER):
        self.token, self.user = token, user
        self.repos: dict[tuple[str, str], FakeRepo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: list[RecordedRequest] = []
        self.unhandled: list[str] = []
        self.server_errors: list[str] = []
        self._lfs_pending: dict[str, int] = {}
        self._commit_counter = 0
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.endpoint = ""

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "FakeHub":
        hub = self

        class Handler(_HubRequestHandler):
            fake_hub = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        host, port = self._server.server_address[:2]
        self.endpoint = f"http://{host}:{port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-hub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=10)
            self._server = self._thread = None

    def __enter__(self) -> "FakeHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ helpers for tests
    def env(self, hf_home: str | os.PathLike, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for a client subprocess: this endpoint, a fake token, no Xet, no telemetry, and an
        `HF_HOME` (hence a download cache and remote-code module cache) of its own."""
        env = dict(os.environ if base is None else base)
        for name in _ENV_TO_DROP:
            env.pop(name, None)
        hf_home = Path(hf_home)
        env.update(
            HF_ENDPOINT=self.endpoint,
            HF_TOKEN=self.token,
            HF_HUB_DISABLE_XET="1",
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HUB_DISABLE_PROGRESS_BARS="1",
            HF_HUB_OFFLINE="0",
            TRANSFORMERS_OFFLINE="0",
            HF_HOME=str(hf_home),
            HF_HUB_CACHE=str(hf_home / "hub"),
            HF_XET_CACHE=str(hf_home / "xet"),
            HF_ASSETS_CACHE=str(hf_home / "assets"),
            HF_MODULES_CACHE=str(hf_home / "modules"),
            NO_PROXY="127.0.0.1,localhost",
            no_proxy="127.0.0.1,localhost",
            TOKENIZERS_PARALLELISM="false",
        )
        return env

    def repo(self, repo_id: str, repo_type: str = "model") -> FakeRepo:
        try:
            return self.repos[(repo_type, repo_id)]
        except KeyError:
            known = sorted(f"{t}:{r}" for t, r in self.repos)
            raise KeyError(f"fake hub has no {repo_type} repo {repo_id!r}; it has {known}") from None

    def calls(self, method: str | None = None, contains: str = "") -> list[RecordedRequest]:
        return [r for r in self.requests if (method is None or r.method == method) and contains in r.path]

    def create_repo(self, repo_id: str, repo_type: str = "model", private: bool = False) -> FakeRepo:
        """Create a repo with the Hub's initial commit (a `.gitattributes`)."""
        with self._lock:
            if (repo_type, repo_id) in self.repos:
                raise HubHTTPError(409, f"You already created this {repo_type} repo: {repo_id}")
            repo = FakeRepo(repo_id=repo_id, repo_type=repo_type, private=private)
            self.repos[(repo_type, repo_id)] = repo
            files = {".gitattributes": StoredFile(DEFAULT_GITATTRIBUTES.encode())}
            self._add_commit(repo, "main", "initial commit", "", files)
            return repo

    def commit(
        self,
        repo_id: str,
        files: Mapping[str, bytes | StoredFile],
        *,
        title: str = "seed files",
        branch: str = "main",
        repo_type: str = "model",
    ) -> Commit:
        """Add or replace files on a branch directly (to seed a repo for a download test)."""
        with self._lock:
            repo = self.repo(repo_id, repo_type)
            stored = {p: f if isinstance(f, StoredFile) else StoredFile(f) for p, f in files.items()}
            return self._add_commit(repo, branch, title, "", {**repo.files(branch), **stored})

    def _add_commit(self, repo: FakeRepo, branch: str, title: str, message: str, files) -> Commit:
        self._commit_counter += 1
        parent = repo.branches.get(branch)
        digest = hashlib.sha1()
        digest.update(f"{repo.repo_id}\0{parent}\0{title}\0{self._commit_counter}".encode())
        for path in sorted(files):
            digest.update(f"{path}\0{files[path].git_oid}\0".encode())
        commit = Commit(digest.hexdigest(), title, message, parent, dict(files), _now())
        repo.commits[commit.oid] = commit
        repo.branches[branch] = commit.oid
        return commit


class _HubRequestHandler(BaseHTTPRequestHandler):
    """Routes one request to a method of this class. `fake_hub` is set on a per-server subclass."""

    fake_hub: FakeHub
    protocol_version = "HTTP/1.1"  # keep-alive, as the real client expects; every reply has Content-Length
    server_version = "FakeHub/1.0"

    _REPO = r"(?P<repo>[^/?]+/[^/?]+?)"
    _API = r"/api/(?P<type>models|datasets|spaces)/" + _REPO
    ROUTES = [
        ("GET", r"/api/agent-harnesses", "agent_harnesses"),
        ("GET", r"/api/whoami-v2", "whoami"),
        ("POST", r"/api/repos/create", "repo_create"),
        ("POST", r"/api/repos/delete", "repo_delete"),
        ("POST", r"/api/validate-yaml", "validate_yaml"),
        ("GET", _API + r"/(?:xet-write-token|xet-read-token)/(?P<rev>[^/]+)", "xet_token"),
        ("POST", _API + r"/preupload/(?P<rev>[^/]+)", "preupload"),
        ("POST", _API + r"/commit/(?P<rev>[^/]+)", "commit"),
        ("POST", _API + r"/branch/(?P<rev>[^/]+)", "create_branch"),
        ("GET", _API + r"/refs", "refs"),
        ("GET", _API + r"/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", "tree"),
        ("POST", _API + r"/paths-info/(?P<rev>[^/]+)", "paths_info"),
        ("GET", _API + r"(?:/revision/(?P<rev>[^/]+))?", "repo_info"),
        ("POST", r"/(?P<prefix>datasets/|spaces/)?" + _REPO + r"\.git/info/lfs/objects/batch", "lfs_batch"),
        ("PUT", r"/__lfs/(?P<oid>[0-9a-f]{64})", "lfs_put"),
        ("POST", r"/__lfs/(?P<oid>[0-9a-f]{64})/verify", "lfs_verify"),
        (
            ("GET", "HEAD"),
            r"/(?P<prefix>datasets/|spaces/)?" + _REPO + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)",
            "resolve",
        ),
    ]
    _COMPILED = [(m, re.compile(p + r"/?$"), name) for m, p, name in ROUTES]

    # ------------------------------------------------------------------ plumbing
    def log_message(self, format, *args):
        pass  # keep the test output quiet: requests are recorded in FakeHub.requests instead

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        hub = self.fake_hub
        split = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        self.body = self._read_body()
        status = 500
        try:
            for methods, pattern, name in self._COMPILED:
                if method not in ((methods,) if isinstance(methods, str) else methods):
                    continue
                match = pattern.match(split.path)
                if match:
                    groups = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                    with hub._lock:
                        status = getattr(self, "route_" + name)(method, **groups)
                    break
            else:
                hub.unhandled.append(f"{method} {self.path}")
                raise HubHTTPError(404, f"fake hub: no route for {method} {split.path}")
        except HubHTTPError as exc:
            status = exc.status
            headers = dict(exc.headers)
            if exc.error_code:
                headers["X-Error-Code"] = exc.error_code
            headers["X-Error-Message"] = exc.message.splitlines()[0][:200]
            self._send_json(exc.status, {"error": exc.message}, headers=headers, head_only=method == "HEAD")
        except Exception:
            tb = traceback.format_exc()
            hub.server_errors.append(f"{method} {self.path}\n{tb}")
            self._send_json(500, {"error": "fake hub crashed", "traceback": tb}, head_only=method == "HEAD")
        hub.requests.append(RecordedRequest(method, self.path, status))

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # CRLF after each chunk
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _json_body(self):
        try:
            return json.loads(self.body or b"null")
        except json.JSONDecodeError as exc:
            raise HubHTTPError(400, f"request body is not JSON: {exc}") from None

    def _send(self, status: int, body: bytes, content_type: str, headers=None, head_only=False) -> int:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if not head_only:
            self.wfile.write(body)
        return status

    def _send_json(
        self, status: int, payload, headers=None, head_only=False, content_type="application/json"
    ):
        return self._send(status, json.dumps(payload).encode(), content_type, headers, head_only)

    # ------------------------------------------------------------------ auth and lookups
    def _token(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        return auth[len("Bearer ") :] if auth.startswith("Bearer ") else None

    def _require_write(self) -> None:
        token = self._token()
        if token != self.fake_hub.token:
            raise HubHTTPError(401, "Invalid credentials in Authorization header")

    def _repo(self, type_plural: str, repo_id: str, write: bool = False) -> FakeRepo:
        if write:
            self._require_write()
        repo = self.fake_hub.repos.get((type_plural.rstrip("s"), repo_id))
        if repo is None or (repo.private and self._token() != self.fake_hub.token):
            raise HubHTTPError(404, f"Repository not found: {repo_id}", "RepoNotFound")
        return repo

    @staticmethod
    def _commit(repo: FakeRepo, rev: str) -> Commit:
        commit = repo.resolve(rev)
        if commit is None:
            raise HubHTTPError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return commit

    @staticmethod
    def _prefix_type(prefix: str | None) -> str:
        return {"datasets/": "datasets", "spaces/": "spaces"}.get(prefix or "", "models")

    # ------------------------------------------------------------------ routes: account and repos
    def route_agent_harnesses(self, method):
        return self._send_json(200, {"standardEnvVars": [], "harnesses": {}})

    def route_whoami(self, method):
        self._require_write()
        user = self.fake_hub.user
        return self._send_json(
            200,
            {
                "type": "user",
                "id": "0" * 24,
                "name": user,
                "fullname": "Fake User",
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "fake", "role": "write"}},
            },
        )

    def route_repo_create(self, method):
        self._require_write()
        payload = self._json_body() or {}
        name, org = payload.get("name"), payload.get("organization") or self.fake_hub.user
        repo_type = payload.get("type") or "model"
        if repo_type not in REPO_TYPE_PREFIX:
            raise HubHTTPError(400, f"invalid repo type {repo_type!r}")
        if not isinstance(name, str) or not _NAME.match(name) or not _NAME.match(org):
            raise HubHTTPError(400, f"invalid repo name {org}/{name}")
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        repo_id = f"{org}/{name}"
        url = f"{self.fake_hub.endpoint}/{REPO_TYPE_PREFIX[repo_type]}{repo_id}"
        if (repo_type, repo_id) in self.fake_hub.repos:
            return self._send_json(409, {"error": "You already created this repo", "url": url})
        self.fake_hub.create_repo(repo_id, repo_type, private)
        return self._send_json(
            200, {"url": url, "name": repo_id, "id": hashlib.sha1(repo_id.encode()).hexdigest()}
        )

    def route_repo_delete(self, method):
        self._require_write()
        payload = self._json_body() or {}
        key = (
            payload.get("type") or "model",
            f"{payload.get('organization') or self.fake_hub.user}/{payload.get('name')}",
        )
        if self.fake_hub.repos.pop(key, None) is None:
            raise HubHTTPError(404, f"Repository not found: {key[1]}", "RepoNotFound")
        return self._send_json(200, {})

    def route_validate_yaml(self, method):
        payload = self._json_body() or {}
        content = payload.get("content")
        if not isinstance(content, str):
            raise HubHTTPError(400, '"content" must be a string')
        errors, warnings = check_card_metadata(content)
        body = {"errors": [{"message": m} for m in errors], "warnings": [{"message": m} for m in warnings]}
        return self._send_json(400 if errors else 200, body)

    def route_xet_token(self, method, type, repo, rev):
        raise HubHTTPError(
            404, "fake hub has no Xet storage: run the client with HF_HUB_DISABLE_XET=1", "EntryNotFound"
        )

    def route_create_branch(self, method, type, repo, rev):
        fake_repo = self._repo(type, repo, write=True)
        if rev in fake_repo.branches:
            raise HubHTTPError(409, f"Branch {rev} already exists")
        start = (self._json_body() or {}).get("startingPoint") or "main"
        fake_repo.branches[rev] = self._commit(fake_repo, start).oid
        return self._send_json(200, {})

    def route_refs(self, method, type, repo):
        fake_repo = self._repo(type, repo)
        branches = [
            {"name": name, "ref": f"refs/heads/{name}", "targetCommit": oid}
            for name, oid in fake_repo.branches.items()
        ]
        return self._send_json(200, {"branches": branches, "converts": [], "tags": [], "pullRequests": []})

    def route_repo_info(self, method, type, repo, rev="main"):
        fake_repo = self._repo(type, repo)
        commit = self._commit(fake_repo, rev)
        blobs = self.query.get("blobs", "").lower() in ("1", "true")
        siblings = []
        for path, stored in sorted(commit.files.items()):
            sibling = {"rfilename": path}
            if blobs:
                sibling.update(size=stored.size, blobId=stored.git_oid)
                if stored.lfs:
                    sibling["lfs"] = {
                        "sha256": stored.sha256,
                        "size": stored.size,
                        "pointerSize": len(stored.lfs_pointer),
                    }
            siblings.append(sibling)
        card_data = None
        if "README.md" in commit.files:
            yaml_text, _ = split_front_matter(commit.files["README.md"].content.decode("utf-8", "replace"))
            try:
                card_data = yaml.safe_load(yaml_text) if yaml_text else None
            except yaml.YAMLError:
                card_data = None
        card_data = card_data if isinstance(card_data, dict) else None
        info = {
            "_id": hashlib.sha1(repo.encode()).hexdigest()[:24],
            "id": fake_repo.repo_id,
            "author": fake_repo.repo_id.split("/")[0],
            "sha": commit.oid,
            "lastModified": commit.date,
            "createdAt": fake_repo.created_at,
            "private": fake_repo.private,
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": list((card_data or {}).get("tags") or []),
            "siblings": siblings,
        }
        if fake_repo.repo_type == "model":
            info["modelId"] = fake_repo.repo_id
            if card_data:
                info["library_name"] = card_data.get("library_name")
                info["pipeline_tag"] = card_data.get("pipeline_tag")
        if card_data:
            info["cardData"] = card_data
        return self._send_json(200, info)

    # ------------------------------------------------------------------ routes: listing
    @staticmethod
    def _entry(path: str, stored: StoredFile | None) -> dict:
        if stored is None:
            return {
                "type": "directory",
                "oid": hashlib.sha1(path.encode()).hexdigest(),
                "size": 0,
                "path": path,
            }
        entry = {"type": "file", "oid": stored.git_oid, "size": stored.size, "path": path}
        if stored.lfs:
            entry["lfs"] = {"oid": stored.sha256, "size": stored.size, "pointerSize": len(stored.lfs_pointer)}
        return entry

    def route_tree(self, method, type, repo, rev, path=""):
        commit = self._commit(self._repo(type, repo), rev)
        recursive = self.query.get("recursive", "").lower() in ("1", "true")
        base = path.strip("/")
        prefix = f"{base}/" if base else ""
        if base and base in commit.files:
            raise HubHTTPError(400, f"{base} is a file, not a folder")
        entries: dict[str, dict] = {}
        for file_path, stored in sorted(commit.files.items()):
            if not file_path.startswith(prefix):
                continue
            parts = file_path[len(prefix) :].split("/")
            # Directories on the way to the file, then the file itself when it is in range.
            for depth in range(1, len(parts)):
                if not recursive and depth > 1:
                    break
                dir_path = prefix + "/".join(parts[:depth])
                entries.setdefault(dir_path, self._entry(dir_path, None))
            if recursive or len(parts) == 1:
                entries[file_path] = self._entry(file_path, stored)
        if base and not entries:
            raise HubHTTPError(
                404, f"Entry not found: {base}", "EntryNotFound", {"X-Repo-Commit": commit.oid}
            )
        return self._send_json(200, list(entries.values()))

    def route_paths_info(self, method, type, repo, rev):
        commit = self._commit(self._repo(type, repo), rev)
        content_type = self.headers.get("Content-Type", "")
        if content_type.startswith("application/json"):
            paths = (self._json_body() or {}).get("paths") or []
        else:
            paths = parse_qs(self.body.decode()).get("paths", [])
        infos = []
        for path in paths:
            path = path.strip("/")
            if path in commit.files:
                infos.append(self._entry(path, commit.files[path]))
            elif any(p.startswith(path + "/") for p in commit.files):
                infos.append(self._entry(path, None))
        return self._send_json(200, infos)

    # ------------------------------------------------------------------ routes: upload
    def route_preupload(self, method, type, repo, rev):
        fake_repo = self._repo(type, repo, write=True)
        if self.query.get("create_pr"):
            raise HubHTTPError(400, "fake hub does not support pull requests")
        files = self._commit(fake_repo, rev).files
        gitattributes = files[".gitattributes"].content.decode() if ".gitattributes" in files else ""
        answers = []
        for item in (self._json_body() or {}).get("files", []):
            path, size = item["path"], int(item["size"])
            sample = base64.b64decode(item.get("sample", ""))
            lfs = size > 0 and (
                _is_lfs_path(path, gitattributes) or size >= LFS_SIZE_THRESHOLD or b"\0" in sample
            )
            existing = files.get(path)
            answers.append(
                {
                    "path": path,
                    "uploadMode": "lfs" if lfs else "regular",
                    "shouldIgnore": False,
                    "oid": existing.content_oid if existing is not None else None,
                }
            )
        return self._send_json(200, {"files": answers, "commitOid": self._commit(fake_repo, rev).oid})

    def route_lfs_batch(self, method, repo, prefix=None):
        self._repo(self._prefix_type(prefix), repo, write=True)  # exists, and the token may write
        payload = self._json_body() or {}
        if payload.get("operation") != "upload":
            raise HubHTTPError(400, "fake hub supports only LFS uploads")
        if "basic" not in payload.get("transfers", ["basic"]):
            raise HubHTTPError(400, "fake hub supports only the basic LFS transfer")
        objects = []
        for obj in payload.get("objects", []):
            oid, size = obj["oid"], int(obj["size"])
            if oid in self.fake_hub.lfs_objects:
                objects.append({"oid": oid, "size": size})  # already stored: no actions, nothing to upload
                continue
            self.fake_hub._lfs_pending[oid] = size
            href = f"{self.fake_hub.endpoint}/__lfs/{oid}"
            objects.append(
                {
                    "oid": oid,
                    "size": size,
                    "authenticated": True,
                    "actions": {"upload": {"href": href}, "verify": {"href": f"{href}/verify"}},
                }
            )
        return self._send_json(
            200, {"transfer": "basic", "objects": objects}, content_type="application/vnd.git-lfs+json"
        )

    def route_lfs_put(self, method, oid):
        expected = self.fake_hub._lfs_pending.get(oid)
        if expected is None:
            raise HubHTTPError(403, f"no pending LFS upload for {oid}")
        if hashlib.sha256(self.body).hexdigest() != oid or len(self.body) != expected:
            raise HubHTTPError(
                400, f"LFS upload for {oid} has wrong content (size {len(self.body)}, expected {expected})"
            )
        self.fake_hub.lfs_objects[oid] = self.body
        del self.fake_hub._lfs_pending[oid]
        return self._send(200, b"", "text/plain")

    def route_lfs_verify(self, method, oid):
        self._require_write()
        payload = self._json_body() or {}
        stored = self.fake_hub.lfs_objects.get(oid)
        if stored is None or payload.get("oid") != oid or int(payload.get("size", -1)) != len(stored):
            raise HubHTTPError(404, f"LFS object {oid} was not uploaded (or has another size)")
        return self._send_json(200, {"success": True})

    def route_commit(self, method, type, repo, rev):
        fake_repo = self._repo(type, repo, write=True)
        if self.query.get("create_pr"):
            raise HubHTTPError(400, "fake hub does not support pull requests")
        if rev not in fake_repo.branches:
            raise HubHTTPError(404, f"Invalid rev id: {rev} (commits go to a branch)", "RevisionNotFound")
        head = fake_repo.resolve(rev)
        files = dict(head.files)
        gitattributes = files[".gitattributes"].content.decode() if ".gitattributes" in files else ""
        lines = [json.loads(line) for line in self.body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubHTTPError(400, "commit payload must start with a header line")
        header = lines[0]["value"]
        parent = header.get("parentCommit")
        if parent is not None and parent != head.oid:
            raise HubHTTPError(412, f"parent commit {parent} is not the head of {rev} ({head.oid})")
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value") or {}
            path = value.get("path", "")
            if key == "file":
                if value.get("encoding") != "base64":
                    raise HubHTTPError(400, f"{path}: only base64 encoding is supported")
                content = base64.b64decode(value["content"])
                if content and (b"\0" in content[:512] or _is_lfs_path(path, gitattributes)):
                    raise HubHTTPError(400, f"{path} must be uploaded with LFS (the preupload said so)")
                files[path] = StoredFile(content)
            elif key == "lfsFile":
                content = self.fake_hub.lfs_objects.get(value.get("oid"))
                if content is None:
                    raise HubHTTPError(422, f"{path}: LFS object {value.get('oid')} was never uploaded")
                if "size" in value and int(value["size"]) != len(content):
                    raise HubHTTPError(422, f"{path}: LFS size mismatch")
                files[path] = StoredFile(content, lfs=True)
            elif key == "deletedFile":
                if files.pop(path, None) is None:
                    raise HubHTTPError(404, f"cannot delete {path}: no such file", "EntryNotFound")
            elif key == "deletedFolder":
                folder = path.rstrip("/") + "/"
                for name in [p for p in files if p.startswith(folder)]:
                    del files[name]
            else:
                raise HubHTTPError(400, f"fake hub does not support commit operation {key!r}")
        commit = self.fake_hub._add_commit(
            fake_repo, rev, header.get("summary") or "", header.get("description") or "", files
        )
        url = f"{self.fake_hub.endpoint}/{fake_repo.url_prefix}{fake_repo.repo_id}/commit/{commit.oid}"
        return self._send_json(200, {"commitUrl": url, "commitOid": commit.oid, "pullRequestUrl": None})

    # ------------------------------------------------------------------ routes: download
    def route_resolve(self, method, repo, rev, path, prefix=None):
        commit = self._commit(self._repo(self._prefix_type(prefix), repo), rev)
        stored = commit.files.get(path)
        if stored is None:
            raise HubHTTPError(
                404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": commit.oid}
            )
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{stored.etag}"', "Accept-Ranges": "bytes"}
        if stored.lfs:
            headers.update({"X-Linked-Etag": f'"{stored.sha256}"', "X-Linked-Size": str(stored.size)})
        body, status = stored.content, 200
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if match:
            start = int(match.group(1))
            end = int(match.group(2)) if match.group(2) else stored.size - 1
            body, status = stored.content[start : end + 1], 206
            headers["Content-Range"] = f"bytes {start}-{start + len(body) - 1}/{stored.size}"
        return self._send(status, body, "application/octet-stream", headers, head_only=method == "HEAD")


# ---------------------------------------------------------------------------------------------------------
# pytest glue


@pytest.fixture(name="fake_hub")
def fake_hub_fixture() -> Iterator[FakeHub]:
    """A running fake Hub for one test; it is stopped (and its port freed) at teardown.

    Use `fake_hub.endpoint`, `fake_hub.env(tmp_path / "hf_home")` for client subprocesses, `fake_hub.repo(id)`
    for what was pushed. The test fails if a handler crashed.
    """
    with FakeHub() as hub:
        yield hub
        assert not hub.server_errors, "fake hub handler crashed:\n" + "\n".join(hub.server_errors)


def run_python(
    code: str, *, env: Mapping[str, str], cwd: str | os.PathLike | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run `python -c code` with the given environment; fail the test with its output when it exits non-zero."""
    proc = subprocess.run(
        [sys.executable, "-c", code], env=dict(env), cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        pytest.fail(
            f"subprocess exited with {proc.returncode}\n--- code ---\n{code}\n--- stdout ---\n{proc.stdout}"
            f"\n--- stderr ---\n{proc.stderr[-8000:]}",
            pytrace=False,
        )
    return proc


__all__ = [
    "FAKE_TOKEN",
    "FakeHub",
    "FakeRepo",
    "StoredFile",
    "check_card_metadata",
    "fake_hub_fixture",
    "git_blob_sha1",
    "run_python",
    "split_front_matter",
]

# Allow `python tests/fake_hub.py` to serve interactively for manual checks.
if __name__ == "__main__":
    import time

    with FakeHub() as _hub:
        print(f"fake hub at {_hub.endpoint} (token {FAKE_TOKEN}); Ctrl-C to stop", flush=True)
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass

"""An emulator of the Hugging Face Hub HTTP endpoints that huggingface_hub, datasets, transformers and
evaluate call to upload and download repositories. A TEST FIXTURE, NOT A HUB.

No Hub-compatible server on the package index accepts uploads, so the round-trip tests of
`karel_hf.hub` run the real clients against this: a stdlib `ThreadingHTTPServer` bound to 127.0.0.1
on an ephemeral port, keeping repositories (model, dataset, space) as commit snapshots (path -> blob)
per branch, with blob contents in a temporary directory. It serves uploads and downloads alike (olah,
the read-only mirror, is not used). It was written against huggingface_hub 2.4's client code
(hf_api.py, _commit_api.py, lfs.py, file_download.py, hf_file_system.py) and implements only:

  GET    /api/whoami-v2                                       who the token belongs to
  POST   /api/repos/create                                    create_repo (409 when it exists)
  DELETE /api/repos/delete                                    delete_repo
  POST   /api/validate-yaml                                   README metadata check (accepts all)
  GET    /api/{models|datasets|spaces}/{ns}/{name}[/revision/{rev}]   repo_info: sha, siblings
  GET    /api/{type}s/{ns}/{name}/refs                        list_repo_refs (branches only)
  POST   /api/{type}s/{ns}/{name}/branch/{branch}             create_branch (optional startingPoint)
  DELETE /api/{type}s/{ns}/{name}/branch/{branch}             delete_branch
  POST   /api/{type}s/{ns}/{name}/preupload/{rev}             upload mode per file (lfs or regular)
  POST   /{prefix}{ns}/{name}.git/info/lfs/objects/batch      LFS batch API, "basic" transfer only
  PUT    /_emulator/lfs/{sha256}                              the upload URL a batch answer hands out
  POST   /api/{type}s/{ns}/{name}/commit/{rev}                NDJSON commit (file, lfsFile, deletedFile,
                                                              deletedFolder); one atomic snapshot
  GET    /api/{type}s/{ns}/{name}/tree/{rev}[/{path}]         list_repo_tree (recursive, expand; one page)
  POST   /api/{type}s/{ns}/{name}/paths-info/{rev}            get_paths_info
  HEAD   /{prefix}{ns}/{name}/resolve/{rev}/{path}            file metadata: ETag, X-Repo-Commit,
  GET    (same)                                               Content-Length, X-Linked-Etag/-Size, Range

where {prefix} is "" (model), "datasets/" or "spaces/", and {rev} is a branch or a commit id. Errors carry
the X-Error-Code header the clients map to RepositoryNotFound / RevisionNotFound / EntryNotFound.
Not emulated: Xet storage (clients must run with HF_HUB_DISABLE_XET=1), multipart LFS, tags, pull
requests, gating, private-repo read checks, pagination (every listing is one page), Spaces builds,
git over HTTP, the dataset viewer's parquet conversion (refs/convert/parquet answers RevisionNotFound).

Tests inject failures with `fail_commits` ({(repo_id, revision)}: that commit answers 500) and read
`requests` ((method, path, status) per request) for debugging; tokens are checked, never logged.
Run `python tests/hub_emulator.py` to serve one by hand.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote

logger = logging.getLogger("hub_emulator")

_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_LFS_SUFFIXES = (".safetensors", ".parquet", ".arrow", ".bin", ".pt", ".pth", ".npy", ".zip")
_LFS_MIN_SIZE = 10 << 20


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass(frozen=True)
class Blob:
    sha256: str
    size: int
    lfs: bool

    @property
    def git_oid(self) -> str:  # the oid git would show: of the pointer file for LFS blobs
        return git_blob_oid(lfs_pointer(self.sha256, self.size)) if self.lfs else self._regular_oid

    _regular_oid: str = ""


@dataclass
class Commit:
    oid: str
    parent: str | None
    files: dict[str, Blob]
    title: str
    date: str


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    sdk: str | None
    created: str
    refs: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit | None:
        oid = self.refs.get(revision, revision)
        return self.commits.get(oid)


class HttpError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class HubEmulator:
    """The server and its store. `start()` returns the endpoint URL; `stop()` shuts it down."""

    def __init__(self, root: str | Path | None = None, token: str | None = None, user: str = "emulator-user"):
        self._tmp = None if root else tempfile.TemporaryDirectory(prefix="hub-emulator-")
        self.root = Path(root or self._tmp.name)
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        self.token, self.user = token, user
        self.repos: dict[tuple[str, str], Repo] = {}
        self.fail_commits: set[tuple[str, str]] = set()
        self.upload_urls: set[str] = set()  # sha256s an LFS batch answer allowed to PUT
        self.requests: list[tuple[str, str, int]] = []
        self.lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # ---- lifecycle
    def start(self) -> str:
        handler = type("Handler", (_Handler,), {"emulator": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="hub-emulator", daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
        if self._tmp is not None:
            self._tmp.cleanup()

    # ---- store
    def blob_path(self, sha256: str) -> Path:
        return self.root / "blobs" / sha256

    def store_blob(self, data: bytes, lfs: bool) -> Blob:
        sha = hashlib.sha256(data).hexdigest()
        path = self.blob_path(sha)
        if not path.exists():
            path.write_bytes(data)
        return Blob(sha, len(data), lfs, _regular_oid="" if lfs else git_blob_oid(data))

    def repo(self, repo_type: str, repo_id: str) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise HttpError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    def commit_on(self, repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise HttpError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    def new_commit(self, repo: Repo, parent: str | None, files: dict[str, Blob], title: str) -> Commit:
        payload = json.dumps([parent, sorted((p, b.sha256) for p, b in files.items()), title, time.time_ns()])
        commit = Commit(hashlib.sha1(payload.encode()).hexdigest(), parent, files, title, _now())
        repo.commits[commit.oid] = commit
        return commit

    def create_repo(self, repo_type: str, repo_id: str, private: bool = False, sdk: str | None = None) -> Repo:
        with self.lock:
            if (repo_type, repo_id) in self.repos:
                raise HttpError(409, "You already created this repo")
            repo = Repo(repo_type, repo_id, private, sdk, _now())
            gitattributes = self.store_blob(b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
                                            b"*.parquet filter=lfs diff=lfs merge=lfs -text\n", lfs=False)
            repo.refs["main"] = self.new_commit(repo, None, {".gitattributes": gitattributes}, "initial commit").oid
            self.repos[(repo_type, repo_id)] = repo
            return repo


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


_REPO = r"(?P<ns>[^/]+)/(?P<name>[^/]+)"
_API = rf"/api/(?P<types>models|datasets|spaces)/{_REPO}"
_ROUTES = [
    ("GET", r"/api/whoami-v2", "whoami"),
    ("POST", r"/api/repos/create", "create_repo"),
    ("DELETE", r"/api/repos/delete", "delete_repo"),
    ("POST", r"/api/validate-yaml", "validate_yaml"),
    ("GET", rf"{_API}(?:/revision/(?P<rev>[^/]+))?", "info"),
    ("GET", rf"{_API}/refs", "refs"),
    ("POST", rf"{_API}/branch/(?P<branch>[^/]+)", "create_branch"),
    ("DELETE", rf"{_API}/branch/(?P<branch>[^/]+)", "delete_branch"),
    ("POST", rf"{_API}/preupload/(?P<rev>[^/]+)", "preupload"),
    ("POST", rf"{_API}/commit/(?P<rev>[^/]+)", "commit"),
    ("GET", rf"{_API}/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?", "tree"),
    ("POST", rf"{_API}/paths-info/(?P<rev>[^/]+)", "paths_info"),
    ("POST", rf"/(?P<prefix>datasets/|spaces/)?{_REPO}\.git/info/lfs/objects/batch", "lfs_batch"),
    ("PUT", r"/_emulator/lfs/(?P<oid>[0-9a-f]{64})", "lfs_upload"),
    ("HEAD", rf"/(?P<prefix>datasets/|spaces/)?{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
    ("GET", rf"/(?P<prefix>datasets/|spaces/)?{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
]
# lfs_upload is authorised by the batch answer (like a presigned storage URL), not by the token
_WRITES = {"create_repo", "delete_repo", "create_branch", "delete_branch", "preupload", "commit", "lfs_batch"}


class _Handler(BaseHTTPRequestHandler):
    emulator: HubEmulator
    protocol_version = "HTTP/1.1"
    server_version = "hub-emulator/1"

    def log_message(self, format, *args):  # noqa: A002 - BaseHTTPRequestHandler's signature
        logger.debug("%s - %s", self.address_string(), format % args)

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

    # ---- plumbing
    def _dispatch(self, method: str) -> None:
        raw_path, _, query = self.path.partition("?")
        self.query = parse_qs(query)
        self.body = self._read_body()
        status = 500
        try:
            for route_method, pattern, name in _ROUTES:
                match = re.fullmatch(pattern, raw_path)
                if route_method == method and match:
                    if name in _WRITES:
                        self._check_token()
                    args = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                    with self.emulator.lock:
                        status = getattr(self, f"_{name}")(**args)
                    break
            else:
                logger.warning("hub emulator: no route for %s %s", method, raw_path)
                raise HttpError(404, f"emulator: no route for {method} {raw_path}")
        except HttpError as err:
            status = err.status
            self._send_json(err.status, {"error": err.message}, code=err.code, message=err.message)
        except Exception as exc:  # a bug in the emulator: answer 500 and say so in the log
            logger.exception("hub emulator: %s %s failed", method, raw_path)
            status = 500
            self._send_json(500, {"error": f"emulator error: {exc}"})
        self.emulator.requests.append((method, raw_path, status))
        logger.info("%s %s -> %d", method, raw_path, status)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _check_token(self) -> None:
        expected = self.emulator.token
        if expected is not None and self.headers.get("Authorization") != f"Bearer {expected}":
            raise HttpError(401, "Invalid credentials in Authorization header")

    def _send(self, status: int, body: bytes, content_type: str, headers: dict | None = None) -> int:
        """Answer with body (HEAD: its headers only, Content-Length included)."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        return status

    def _send_json(self, status: int, payload, code: str | None = None, message: str | None = None,
                   content_type: str = "application/json") -> int:
        headers = {}
        if code:
            headers["X-Error-Code"] = code
        if message:
            headers["X-Error-Message"] = message
        return self._send(status, json.dumps(payload).encode(), content_type, headers)

    def _json_body(self):
        return json.loads(self.body or b"{}")

    def _repo(self, types: str, ns: str, name: str) -> Repo:
        return self.emulator.repo(_TYPES[types], f"{ns}/{name}")

    # ---- endpoints
    def _whoami(self) -> int:
        if not self.headers.get("Authorization"):
            raise HttpError(401, "Invalid credentials in Authorization header")
        return self._send_json(200, {"type": "user", "name": self.emulator.user, "orgs": [],
                                     "auth": {"type": "access_token", "accessToken": {"role": "write"}}})

    def _create_repo(self) -> int:
        body = self._json_body()
        repo_type = body.get("type") or "model"
        namespace = body.get("organization") or self.emulator.user
        repo_id = f"{namespace}/{body['name']}"
        private = body.get("private") or body.get("visibility") == "private"
        if repo_type == "space" and not body.get("sdk"):
            raise HttpError(400, "a Space needs an sdk")
        url = f"{self.emulator.url}/{_PREFIXES[repo_type]}{repo_id}"
        if (repo_type, repo_id) in self.emulator.repos:  # the Hub's 409 answer carries the url too
            return self._send_json(409, {"error": "You already created this repo", "url": url},
                                   message="You already created this repo")
        self.emulator.create_repo(repo_type, repo_id, bool(private), body.get("sdk"))
        return self._send_json(200, {"url": url, "name": repo_id})

    def _delete_repo(self) -> int:
        body = self._json_body()
        repo_type = body.get("type") or "model"
        repo = self.emulator.repo(repo_type, f"{body.get('organization') or self.emulator.user}/{body['name']}")
        del self.emulator.repos[(repo_type, repo.repo_id)]
        return self._send_json(200, {})

    def _validate_yaml(self) -> int:
        return self._send_json(200, {"errors": [], "warnings": []})

    def _info(self, types: str, ns: str, name: str, rev: str = "main") -> int:
        repo = self._repo(types, ns, name)
        commit = self.emulator.commit_on(repo, rev)
        siblings = []
        for path, blob in sorted(commit.files.items()):
            sibling = {"rfilename": path}
            if "blobs" in self.query:
                sibling.update(size=blob.size, blobId=blob.git_oid)
                if blob.lfs:
                    sibling["lfs"] = {"size": blob.size, "sha256": blob.sha256,
                                      "pointerSize": len(lfs_pointer(blob.sha256, blob.size))}
            siblings.append(sibling)
        info = {"_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24], "id": repo.repo_id,
                "author": ns, "sha": commit.oid, "lastModified": commit.date, "createdAt": repo.created,
                "private": repo.private, "gated": False, "disabled": False, "downloads": 0, "likes": 0,
                "tags": [], "siblings": siblings}
        if repo.repo_type == "space":
            info.update(sdk=repo.sdk, runtime={"stage": "NO_APP_FILE", "hardware": {"current": None}})
        return self._send_json(200, info)

    def _refs(self, types: str, ns: str, name: str) -> int:
        repo = self._repo(types, ns, name)
        branches = [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": oid} for b, oid in sorted(repo.refs.items())]
        return self._send_json(200, {"branches": branches, "converts": [], "tags": [], "pullRequests": []})

    def _create_branch(self, types: str, ns: str, name: str, branch: str) -> int:
        repo = self._repo(types, ns, name)
        if branch in repo.refs:
            raise HttpError(409, f"Reference refs/heads/{branch} already exists")
        start = self._json_body().get("startingPoint") or "main"
        repo.refs[branch] = self.emulator.commit_on(repo, start).oid
        return self._send_json(200, {})

    def _delete_branch(self, types: str, ns: str, name: str, branch: str) -> int:
        repo = self._repo(types, ns, name)
        if branch == "main" or branch not in repo.refs:
            raise HttpError(404 if branch not in repo.refs else 403, f"cannot delete branch {branch}",
                            "RevisionNotFound" if branch not in repo.refs else None)
        del repo.refs[branch]
        return self._send_json(200, {})

    def _preupload(self, types: str, ns: str, name: str, rev: str) -> int:
        repo = self._repo(types, ns, name)
        commit = self.emulator.commit_on(repo, rev)
        answers = []
        for entry in self._json_body()["files"]:
            sample = base64.b64decode(entry.get("sample", ""))
            path = entry["path"]
            lfs = entry["size"] >= _LFS_MIN_SIZE or b"\0" in sample or path.endswith(_LFS_SUFFIXES)
            present = commit.files.get(path)
            oid = None if present is None else (present.sha256 if present.lfs else present.git_oid)
            answers.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                            "oid": oid})
        return self._send_json(200, {"files": answers, "commitOid": commit.oid})

    def _lfs_batch(self, ns: str, name: str, prefix: str = "") -> int:
        repo_type = {"": "model", "datasets/": "dataset", "spaces/": "space"}[prefix]
        self.emulator.repo(repo_type, f"{ns}/{name}")
        body = self._json_body()
        if body.get("operation") != "upload":
            raise HttpError(400, "emulator: only LFS uploads are supported")
        objects = []
        for obj in body.get("objects", []):
            answer = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            path = self.emulator.blob_path(obj["oid"])
            if not (path.exists() and path.stat().st_size == obj["size"]):
                self.emulator.upload_urls.add(obj["oid"])
                answer["actions"] = {"upload": {"href": f"{self.emulator.url}/_emulator/lfs/{obj['oid']}"}}
            objects.append(answer)
        return self._send_json(200, {"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                               content_type="application/vnd.git-lfs+json")

    def _lfs_upload(self, oid: str) -> int:
        if oid not in self.emulator.upload_urls:
            raise HttpError(403, "no LFS batch answer issued this upload URL")
        if hashlib.sha256(self.body).hexdigest() != oid:
            raise HttpError(400, "uploaded content does not match its sha256")
        self.emulator.store_blob(self.body, lfs=True)
        return self._send(200, b"", "text/plain")

    def _commit(self, types: str, ns: str, name: str, rev: str) -> int:
        repo = self._repo(types, ns, name)
        if "create_pr" in self.query:
            raise HttpError(400, "emulator: pull requests are not supported")
        head = self.emulator.commit_on(repo, rev)
        if rev not in repo.refs:
            raise HttpError(400, f"emulator: can only commit to a branch, not {rev}")
        if (repo.repo_id, rev) in self.emulator.fail_commits:
            raise HttpError(500, f"emulated failure of the commit to {repo.repo_id}@{rev}")
        lines = [json.loads(line) for line in self.body.decode().splitlines() if line.strip()]
        header = next((item["value"] for item in lines if item["key"] == "header"), {})
        parent = header.get("parentCommit")
        if parent and parent != head.oid:
            raise HttpError(412, "A commit has happened since. Please refresh and try again.")
        files = dict(head.files)
        for item in lines:
            key, value = item["key"], item["value"]
            if key == "file":
                data = base64.b64decode(value["content"]) if value.get("encoding") == "base64" else \
                    value["content"].encode()
                files[value["path"]] = self.emulator.store_blob(data, lfs=False)
            elif key == "lfsFile":
                path = self.emulator.blob_path(value["oid"])
                if not path.exists():
                    raise HttpError(422, f"LFS object {value['oid']} of {value['path']} was not uploaded")
                files[value["path"]] = Blob(value["oid"], path.stat().st_size, lfs=True)
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise HttpError(404, "A file with this name doesn't exist", "EntryNotFound")
            elif key == "deletedFolder":
                folder = value["path"].rstrip("/") + "/"
                for path in [p for p in files if p.startswith(folder)]:
                    del files[path]
            elif key != "header":
                raise HttpError(400, f"emulator: unsupported commit operation {key}")
        commit = self.emulator.new_commit(repo, head.oid, files, header.get("summary", ""))
        repo.refs[rev] = commit.oid
        url = f"{self.emulator.url}/{_PREFIXES[repo.repo_type]}{repo.repo_id}/commit/{commit.oid}"
        return self._send_json(200, {"commitUrl": url, "commitOid": commit.oid, "success": True})

    def _entries(self, commit: Commit, folder: str, recursive: bool, expand: bool) -> list[dict]:
        prefix = folder.strip("/") + "/" if folder.strip("/") else ""
        files = {p: b for p, b in commit.files.items() if p.startswith(prefix)}
        entries: dict[str, dict] = {}
        for path, blob in files.items():
            rest = path[len(prefix):].split("/")
            depth = len(rest) if recursive else 1
            for i in range(1, min(depth, len(rest) - 1) + 1):  # directories on the way
                directory = prefix + "/".join(rest[:i])
                entries[directory] = self._entry(commit, directory, None, expand)
            if recursive or len(rest) == 1:
                entries[path] = self._entry(commit, path, blob, expand)
        return [entries[k] for k in sorted(entries)]

    def _entry(self, commit: Commit, path: str, blob: Blob | None, expand: bool) -> dict:
        if blob is None:
            entry = {"type": "directory", "oid": hashlib.sha1(f"{commit.oid}:{path}".encode()).hexdigest(),
                     "size": 0, "path": path}
        else:
            entry = {"type": "file", "oid": blob.git_oid, "size": blob.size, "path": path}
            if blob.lfs:
                entry["lfs"] = {"oid": blob.sha256, "size": blob.size,
                                "pointerSize": len(lfs_pointer(blob.sha256, blob.size))}
        if expand:
            entry["lastCommit"] = {"id": commit.oid, "title": commit.title, "date": commit.date}
        return entry

    def _tree(self, types: str, ns: str, name: str, rev: str, path: str = "") -> int:
        commit = self.emulator.commit_on(self._repo(types, ns, name), rev)
        path = path.strip("/")
        if path and not any(p.startswith(path + "/") for p in commit.files):
            raise HttpError(404, f"{path} does not exist on {rev}", "EntryNotFound")
        truthy = ("true", "1", "True")
        recursive = self.query.get("recursive", ["false"])[0] in truthy
        expand = self.query.get("expand", ["false"])[0] in truthy
        return self._send_json(200, self._entries(commit, path, recursive, expand))

    def _paths_info(self, types: str, ns: str, name: str, rev: str) -> int:
        commit = self.emulator.commit_on(self._repo(types, ns, name), rev)
        form = parse_qs(self.body.decode())
        expand = form.get("expand", ["False"])[0].lower() in ("true", "1")
        out = []
        for path in form.get("paths", []):
            path = path.strip("/")
            if path in commit.files:
                out.append(self._entry(commit, path, commit.files[path], expand))
            elif path == "" or any(p.startswith(path + "/") for p in commit.files):
                out.append(self._entry(commit, path, None, expand))
        return self._send_json(200, out)

    def _resolve(self, ns: str, name: str, rev: str, path: str, prefix: str = "") -> int:
        repo_type = {"": "model", "datasets/": "dataset", "spaces/": "space"}[prefix]
        repo = self.emulator.repo(repo_type, f"{ns}/{name}")
        commit = self.emulator.commit_on(repo, rev)
        blob = commit.files.get(path)
        if blob is None:
            raise HttpError(404, f"Entry not found: {path}", "EntryNotFound")
        data = self.emulator.blob_path(blob.sha256).read_bytes()
        etag = blob.sha256 if blob.lfs else blob.git_oid
        headers = {"ETag": f'"{etag}"', "X-Repo-Commit": commit.oid, "Accept-Ranges": "bytes"}
        if blob.lfs:
            headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(blob.size)})
        status = 200
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").strip())
        if match and data:
            start = int(match.group(1)) if match.group(1) else max(0, len(data) - int(match.group(2)))
            end = int(match.group(2)) if match.group(1) and match.group(2) else len(data) - 1
            end = min(end, len(data) - 1)
            if start > end:
                raise HttpError(416, "Requested range not satisfiable")
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data, status = data[start:end + 1], 206
        return self._send(status, data, "application/octet-stream", headers)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="serve a Hub API emulator on 127.0.0.1 (for tests)")
    parser.add_argument("--root", default=None, help="where blobs go (default: a temporary directory)")
    parser.add_argument("--token", default=None, help="require this token for writes")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    emulator = HubEmulator(args.root, token=args.token)
    print(f"HF_ENDPOINT={emulator.start()} HF_HUB_DISABLE_XET=1", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        emulator.stop()

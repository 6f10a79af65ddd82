"""Runs kept in an object store: ``paths.store=s3://bucket/prefix`` (or gs://, any pyarrow URI).

The local run directory (``paths.runs``) stays the working copy every verb reads and writes;
the store is where runs live across machines, pods and Ray jobs:

- a ``train``/``distill`` run on Ray Train uploads its checkpoints to the store from whichever
  node holds rank 0 (Ray Train's own ``storage_path``), so a multi-node job needs no shared
  filesystem; in local mode the worker uploads each sealed checkpoint itself;
- a re-run on another machine resumes from the store's newest *complete* checkpoint (the
  same manifest rule as on disk: progress.json lists every other file's size);
- when a command ends (also when it fails) everything it wrote under ``paths.runs`` is
  uploaded to the same relative path in the store;
- a run directory given as a URI (``evaluate run=s3://…/runs/x``) is downloaded to a local
  cache first, checkpoints left out.

Credentials come from the cloud SDK's usual environment (AWS_*, GOOGLE_APPLICATION_CREDENTIALS);
shardtune never reads or writes them. A non-AWS S3 endpoint (MinIO, Ceph) goes in the URI:
``s3://bucket/runs?endpoint_override=http://minio:9000``. A URI that carries a credential
(``user:password@``, a presigned URL's signature, an Azure SAS token or client secret) is
refused wherever shardtune takes one (``paths.store``, ``data.*``, ``submit.storage``, a run's
URI): every such URI is written into the run's config, metadata, logs and job.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from data.errors import ConfigError, ShardtuneError
from trainers.manifest import PROGRESS_FILE, checkpoint_step, manifest_complete

CHECKPOINT_PREFIX = "checkpoint_"
LOCAL_ONLY = ("index.jsonl",)  # the local run index: per run, run_meta.json is the record


# pyarrow's filesystems (what Ray Train persists through): S3 and S3-compatible stores, GCS,
# Azure (abfs) and HDFS. Checked offline; reaching the bucket is the first real use.
SCHEMES = ("s3", "gs", "gcs", "abfs", "abfss", "hdfs", "viewfs")


# Query parameters that are credentials: presigned URLs (AWS SigV4 and V2, GCS V4 and V2),
# Azure SAS tokens (``sig``) and service-principal secrets, and the usual token/key names.
SECRET_PARAMS = frozenset({
    "x-amz-signature", "x-amz-credential", "x-amz-security-token", "awsaccesskeyid",
    "x-goog-signature", "x-goog-credential", "googleaccessid", "signature", "sig",
    "client_secret", "sas_token", "sas", "account_key", "accountkey", "sharedaccesssignature",
    "token", "access_token", "id_token", "refresh_token", "session_token", "security_token",
    "secret", "secret_key", "secret_access_key", "access_key", "password", "passwd", "pwd",
    "api_key", "apikey", "key", "credential", "credentials", "auth", "authorization"})
# abfs://container@account.dfs.core.windows.net/…: there the part before '@' is a container
CONTAINER_AT_ACCOUNT = ("abfs", "abfss", "wasb", "wasbs")
CREDENTIAL_HINT = ("pass credentials through the environment: AWS_*, "
                   "GOOGLE_APPLICATION_CREDENTIALS, AZURE_*, or an IAM role; for a presigned "
                   "URL, copy the file or use its s3:// or gs:// URI")


def credential(uri: str) -> str | None:
    """What in ``uri`` is a credential (``user:password@``, a query parameter), or None.

    Only the name is returned, never the value: it goes into error messages.
    """
    if not isinstance(uri, str) or "://" not in uri:
        return None
    scheme, _, rest = uri.partition("://")
    userinfo = re.split(r"[/?#]", rest, maxsplit=1)[0].rpartition("@")[0]
    if ":" in userinfo:
        return "a user:password before '@'"
    if userinfo and scheme.lower() not in CONTAINER_AT_ACCOUNT:
        return "a user name or key before '@'"
    for name, value in parse_qsl(rest.partition("?")[2].partition("#")[0],
                                 keep_blank_values=True):
        if name.strip().lower() in SECRET_PARAMS:
            return f"query parameter '{name.strip()}'"
        inner = credential(value)  # ?endpoint_override=http://user:pass@minio:9000
        if inner:
            return f"{inner} in query parameter '{name.strip()}'"
    return None


def refuse_credentials(uri: str, key: str) -> str:
    """``uri`` unchanged, or a one-line config error naming the key and the credential's kind
    (never its value): a URI is written into the run's config, metadata, logs and job."""
    found = credential(uri)
    if found:
        raise ConfigError(key, f"credentials in the URI are refused ({found}): shardtune "
                          "writes URIs into the run's config, metadata and logs",
                          CREDENTIAL_HINT)
    return uri


def check_data_uris(data: Any, prefix: str = "data") -> None:
    """Every URI of a data config (``data.path``, ``data.validation_path``, ``data.test_path``)
    free of credentials."""
    for name in ("path", "validation_path", "test_path"):
        value = getattr(data, name, None)
        for item in value if isinstance(value, (list, tuple)) else [value]:
            refuse_credentials(item, f"{prefix}.{name}")


def check_uri(uri: str, key: str) -> str:
    """A store URI with a scheme pyarrow serves, a bucket and no credentials, or a one-line
    config error."""
    refuse_credentials(uri, key)
    scheme, _, rest = uri.partition("://")
    if scheme not in SCHEMES or not rest.split("?")[0].strip("/"):
        raise ConfigError(key, f"cannot open {_shown(uri)}: not an object-store URI pyarrow "
                          f"serves ({', '.join(s + '://' for s in SCHEMES)})",
                          "e.g. s3://bucket/prefix or gs://bucket/prefix")
    return uri


def is_uri(value: str | None) -> bool:
    """An object-store URI (``s3://``, ``gs://`` …); ``file://`` and plain paths are local."""
    return bool(value) and "://" in value and not value.startswith("file://")


def join(uri: str, *parts: str) -> str:
    """Append path parts to a URI, keeping its query (``?endpoint_override=…``) at the end."""
    split = urlsplit(uri)
    path = "/".join([split.path.rstrip("/"), *(p.strip("/") for p in parts if p)])
    return urlunsplit((split.scheme, split.netloc, path, split.query, ""))


@dataclass
class Store:
    """A directory in an object store, reached through pyarrow's filesystems (Ray Train's)."""

    uri: str
    fs: Any
    path: str

    @classmethod
    def open(cls, uri: str, key: str = "paths.store") -> Store:
        import pyarrow.fs as pafs  # only with a store (paths.store): the CLI imports this module

        check_uri(uri, key)
        try:
            fs, path = pafs.FileSystem.from_uri(uri)
        except (ValueError, OSError, ImportError) as exc:
            raise ConfigError(key, f"cannot open {_shown(uri)}: {str(exc).splitlines()[0]}",
                              "use s3://bucket/prefix, gs://bucket/prefix or another "
                              "pyarrow filesystem URI") from exc
        return cls(uri, fs, path.rstrip("/"))

    @property
    def shown(self) -> str:
        """The URI for messages and summaries, without its query."""
        return _shown(self.uri)

    def child(self, *parts: str) -> Store:
        return Store(join(self.uri, *parts), self.fs, "/".join([self.path, *parts]))

    def sizes(self) -> dict[str, int]:
        """Every file below this directory: relative path → size (empty when absent)."""
        import pyarrow.fs as pafs  # only with a store (paths.store): the CLI imports this module

        selector = pafs.FileSelector(self.path, recursive=True, allow_not_found=True)
        try:
            infos = self.fs.get_file_info(selector)
        except OSError as exc:
            raise _unreachable(self.uri, exc) from exc
        return {i.path[len(self.path) + 1:]: i.size for i in infos
                if i.type == pafs.FileType.File}

    def read_text(self, name: str) -> str | None:
        try:
            with self.fs.open_input_stream(f"{self.path}/{name}") as stream:
                return stream.read().decode()
        except FileNotFoundError:
            return None
        except OSError as exc:
            if "not exist" in str(exc) or "NoSuchKey" in str(exc):
                return None
            raise _unreachable(self.uri, exc) from exc

    def upload_file(self, local: Path, name: str) -> None:
        try:
            with open(local, "rb") as src, \
                    self.fs.open_output_stream(f"{self.path}/{name}") as dst:
                while chunk := src.read(8 << 20):
                    dst.write(chunk)
        except OSError as exc:
            raise _unreachable(self.uri, exc) from exc

    def upload_dir(self, local: Path, name: str = "", last: str | None = None) -> None:
        """Every file of ``local`` below ``name``; ``last`` (a manifest) after all the others."""
        files = sorted(f for f in local.rglob("*") if f.is_file())
        files.sort(key=lambda f: f.name == last)
        prefix = f"{name}/" if name else ""
        for f in files:
            self.upload_file(f, prefix + str(f.relative_to(local)))

    def download_dir(self, name: str, local: Path, skip: tuple[str, ...] = ()) -> int:
        """Copy ``name``'s files into ``local`` (top-level entries in ``skip`` left out)."""
        src = self.child(name) if name else self
        count = 0
        for rel, _size in src.sizes().items():
            if rel.split("/")[0].startswith(skip):
                continue
            target = local / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with src.fs.open_input_stream(f"{src.path}/{rel}") as stream, \
                        open(target, "wb") as out:
                    while chunk := stream.read(8 << 20):
                        out.write(chunk)
            except OSError as exc:
                raise _unreachable(src.uri, exc) from exc
            count += 1
        return count

    def delete_dir(self, name: str) -> None:
        try:
            self.fs.delete_dir(f"{self.path}/{name}")
        except (FileNotFoundError, OSError):
            pass  # pruning is best effort: an extra old checkpoint is harmless

    def checkpoints(self) -> tuple[list[str], list[str]]:
        """(complete, half-written) checkpoint names, oldest first, by the manifest rule."""
        by_ckpt: dict[str, dict[str, int]] = {}
        for rel, size in self.sizes().items():
            top, _, rest = rel.partition("/")
            if checkpoint_step(top) is not None and rest:
                by_ckpt.setdefault(top, {})[rest] = size
        complete, partial = [], []
        for name in sorted(by_ckpt, key=checkpoint_step):
            text = self.read_text(f"{name}/{PROGRESS_FILE}")
            ok = text is not None and manifest_complete(text, by_ckpt[name])
            (complete if ok else partial).append(name)
        return complete, partial


def _shown(uri: str) -> str:
    """A URI for messages: without its query (endpoints are not secrets, but keep messages
    short) and without anything before an '@' but an Azure container's name."""
    shown = uri.split("?", 1)[0]
    if credential(shown):
        scheme, _, rest = shown.partition("://")
        userinfo = re.split(r"[/#]", rest, maxsplit=1)[0].rpartition("@")[0]
        shown = f"{scheme}://***@{rest[len(userinfo) + 1:]}"
    return shown


def _unreachable(uri: str, exc: OSError) -> ShardtuneError:
    return ShardtuneError(f"object store {_shown(uri)}: {str(exc).splitlines()[0]}",
                          "check the bucket name, the endpoint and the credentials in the "
                          "environment (AWS_*, GOOGLE_APPLICATION_CREDENTIALS)")


def run_store(store_root: str | None, run_dir: str, runs_root: str) -> Store | None:
    """The store directory of a local run directory (same path relative to ``paths.runs``)."""
    if not store_root:
        return None
    rel = os.path.relpath(run_dir, runs_root)
    return Store.open(store_root).child(*Path(rel).parts)


_UPLOADED: dict[str, float] = {}  # local file → mtime it had when uploaded (this process)


def upload_written(local_root: str | Path, store: Store, since: float) -> int:
    """Upload every file under ``local_root`` changed since ``since`` to the same relative
    path in ``store``: checkpoints excepted (they went up during the run), files already
    uploaded unchanged skipped. Returns the count."""
    root = Path(local_root)
    if not root.is_dir():
        return 0
    count = 0
    for f in sorted(root.rglob("*")):
        rel = f.relative_to(root)
        if not f.is_file() or str(rel) in LOCAL_ONLY:
            continue
        mtime = f.stat().st_mtime
        if mtime < since or _UPLOADED.get(str(f)) == mtime:
            continue
        if any(p.startswith((CHECKPOINT_PREFIX, ".checkpoint_")) or p == "wandb"
               for p in rel.parts[:-1]):
            continue
        store.upload_file(f, str(rel))
        _UPLOADED[str(f)] = mtime
        count += 1
    return count


@contextlib.contextmanager
def mirrored(paths: Any) -> Iterator[None]:
    """Around a verb: upload what it wrote under ``paths.runs`` to ``paths.store`` when it
    ends, also when it fails (a failed run's logs and metadata are evidence too)."""
    if paths is None or not getattr(paths, "store", None):
        yield
        return
    store, started = Store.open(paths.store), time.time()
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            upload_written(paths.runs, store, started)
        raise
    count = upload_written(paths.runs, store, started)
    print(f"store: {count} file(s) uploaded to {_shown(store.uri)}", file=sys.stderr)


def local_run(value: str, key: str, paths: Any = None) -> str:
    """A run directory argument: a store URI is fetched (checkpoints left out), a path stays.

    A URI below ``paths.store`` lands in its working copy below ``paths.runs`` (what the verb
    writes into the run directory is then uploaded beside it); any other URI in a cache.
    """
    if not is_uri(value):
        return value
    memo = (value, str(getattr(paths, "runs", "")))
    if memo not in _FETCHED:  # a teacher's URI is resolved several times per command
        _FETCHED[memo] = _fetch_run(value, key, paths)
    return _FETCHED[memo]


_FETCHED: dict[tuple[str, str], str] = {}  # (run URI, paths.runs) → its local copy


def _fetch_run(value: str, key: str, paths: Any) -> str:
    store_root = getattr(paths, "store", None)
    base, query_less = _shown(store_root or "").rstrip("/"), _shown(value).rstrip("/")
    if store_root and query_less.startswith(base + "/"):
        target = Path(paths.runs) / query_less[len(base) + 1:]
        _fetch(value, key, target)
        return str(target)
    cache = Path(os.environ.get("SHARDTUNE_CACHE", Path.home() / ".cache" / "shardtune"))
    target = cache / "store" / hashlib.sha256(query_less.encode()).hexdigest()[:16]
    staging = target.with_name(f"{target.name}.{os.getpid()}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    _fetch(value, key, staging)
    shutil.rmtree(target, ignore_errors=True)  # no stale files from an earlier fetch
    try:
        os.rename(staging, target)
    except OSError:  # another worker on this node fetched it at the same moment
        shutil.rmtree(staging, ignore_errors=True)
    return str(target)


def _fetch(uri: str, key: str, target: Path) -> None:
    store = Store.open(uri, key)
    if not store.sizes():
        raise ConfigError(key, f"nothing found at {_shown(uri)}",
                          "check the run's URI (paths.store + the run's path)")
    store.download_dir("", target, skip=(CHECKPOINT_PREFIX, ".checkpoint_"))

"""Atomic folders under `data_dir`, on the local disk or any fsspec filesystem (s3://, gs://, memory://).

Every asset output is a folder. It is built in a staging folder, then swapped in whole: a crash never leaves
a half-written output that looks complete, and a re-run never leaves a file from an earlier one. On the
local disk the swap is a rename, after every new file and folder is fsynced (a power cut must not publish
empty files under a complete-looking marker). Object stores have no rename, so there the folder is uploaded beside the
target, the old one removed, the new one moved in, and a `_SUCCESS.json` marker (the list of files and their
sizes) written last; readers refuse a folder without it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
import uuid
from pathlib import Path

from upath import UPath

MARKER = "_SUCCESS.json"
OWNER = ".owner"  # host and pid of the process filling a staging folder
STARTED = ".started"  # when an upload to an object store began (seconds since the epoch)
STALE_UPLOAD_HOURS = 48  # an upload older than this was abandoned: no asset takes two days to upload


class IncompleteOutput(FileNotFoundError):
    """An asset folder is missing or was never completely written."""


def is_local(root: str) -> bool:
    return "://" not in str(root) or str(root).startswith("file://")


def local_path(root: str) -> Path:
    return Path(str(root).removeprefix("file://"))


def root_upath(root: str) -> UPath:
    """The data root as a UPath: an absolute local path, or the fsspec URL as given."""
    return UPath(local_path(root).absolute()) if is_local(root) else UPath(root)


def modified_stamp(info: dict) -> str:
    """When a file last changed, from an fsspec `info()`: its mtime, or an object store's LastModified or ETag."""
    return next((str(info[k]) for k in ("mtime", "LastModified", "last_modified", "ETag", "created")
                 if info.get(k) is not None), "")


def staging_dir(root: str, name: str, key: str | None = None) -> Path:
    """A local folder to build `name` in. With `key`, the same folder comes back for the same key, so a run
    that died part-way can resume from what it finished; without, a fresh empty one."""
    if is_local(root):
        base = local_path(root) / ".staging"
    else:
        base = Path(os.environ.get("PARIS_STAGING_DIR", tempfile.gettempdir())) / "paris-staging"
    if key:  # resumable: kept across runs on purpose
        folder = base / f"{name}-{key}"
        _sweep_other_keys(base, name, key)
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    _sweep_abandoned(base, name)
    folder = base / f"{name}-{uuid.uuid4().hex[:12]}"
    folder.mkdir(parents=True)
    (folder / OWNER).write_text(f"{socket.gethostname()} {os.getpid()}")
    return folder


def _sweep_abandoned(base: Path, name: str) -> None:
    """Remove staging folders of `name` left by processes of this host that are gone (a crashed run)."""
    for folder in base.glob(f"{name}-*"):
        owner = folder / OWNER
        if not owner.exists():
            continue
        host, _, pid = owner.read_text().partition(" ")
        if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _sweep_other_keys(base: Path, name: str, key: str) -> None:
    """Remove the resumable folders of `name` kept for other keys: work a crashed run left for inputs or
    settings that have since changed, which no run will ever resume (the gpu pool runs one model stage at a
    time, so no live run owns them)."""
    for folder in base.glob(f"{name}-*"):
        other = folder.name[len(name) + 1:]
        if other != key and len(other) == len(key) and all(c in "0123456789abcdef" for c in other):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _listing(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in (MARKER, OWNER)}


def commit_folder(staged: Path, root: str, name: str, extra: dict | None = None) -> UPath:
    """Make `staged` the complete content of `<root>/<name>`, replacing what was there, atomically."""
    files = _listing(staged)
    (staged / OWNER).unlink(missing_ok=True)
    (staged / MARKER).write_text(json.dumps({"files": files, **(extra or {})}, indent=1, sort_keys=True))
    if is_local(root):
        target = local_path(root) / name
        target.parent.mkdir(parents=True, exist_ok=True)
        sync_tree(staged)  # a power cut after the rename must not publish empty or missing files
        for left in (local_path(root) / ".trash").glob(f"{name}-*"):  # an old output a killed commit left behind
            shutil.rmtree(left, ignore_errors=True)
        trash = local_path(root) / ".trash" / f"{name}-{uuid.uuid4().hex[:12]}"
        if target.exists():
            trash.parent.mkdir(parents=True, exist_ok=True)
            os.replace(target, trash)
        os.replace(staged, target)
        _fsync(target.parent)  # the rename itself
        shutil.rmtree(trash, ignore_errors=True)
        return UPath(target)
    target = UPath(root) / name
    fs = target.fs
    upload = UPath(root) / ".staging" / f"{name}-{uuid.uuid4().hex[:12]}"
    _sweep_stale_uploads(fs, UPath(root) / ".staging", name)
    marker = staged / MARKER
    try:
        fs.pipe_file((upload / STARTED).path, str(time.time()).encode())
        for rel in files:
            fs.makedirs(str((upload / rel).parent.path), exist_ok=True)
            fs.put_file(str(staged / rel), (upload / rel).path)
    except BaseException:
        fs.rm(upload.path, recursive=True) if fs.exists(upload.path) else None
        raise
    fs.rm_file((upload / STARTED).path)  # uploaded: not part of the asset
    if fs.exists((target / MARKER).path):
        fs.rm_file((target / MARKER).path)  # first: a half-deleted old folder must not look complete
    if fs.exists(target.path):
        fs.rm(target.path, recursive=True)
    if files:
        fs.mv(upload.path, target.path, recursive=True)
    else:
        fs.makedirs(target.path, exist_ok=True)
    fs.put_file(str(marker), (target / MARKER).path)  # last: readers trust only a folder with its marker
    shutil.rmtree(staged, ignore_errors=True)
    return target


def sync_tree(folder: Path) -> None:
    """fsync every file under `folder`, then every folder bottom-up: their contents and names are on disk
    before a rename publishes them (rename is atomic, but not durable, without it)."""
    folders = []
    for parent, dirs, files in os.walk(folder):
        for name in files:
            _fsync(Path(parent) / name)
        folders.append(Path(parent))
    for path in reversed(folders):
        _fsync(path)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sweep_stale_uploads(fs, base: UPath, name: str) -> None:
    """Remove uploads of `name` that a killed process left in `<root>/.staging/` on an object store: those
    started more than STALE_UPLOAD_HOURS ago (a live upload of the same asset by another run is younger)."""
    try:
        candidates = fs.glob(f"{base.path}/{name}-*")
    except FileNotFoundError:
        return
    for upload in candidates:
        try:
            started = float(fs.cat_file(f"{upload}/{STARTED}"))
        except (FileNotFoundError, ValueError):
            continue  # not ours, or not begun: leave it
        if time.time() - started > STALE_UPLOAD_HOURS * 3600:
            fs.rm(upload, recursive=True)


def write_atomic(root: str, name: str, data: bytes) -> None:
    """Write `<root>/<name>` so that readers see the old file or the new one, never a part."""
    if is_local(root):
        target = local_path(root) / name
        tmp = target.with_name(f".{name}.{uuid.uuid4().hex[:8]}.tmp")
        tmp.write_bytes(data)
        _fsync(tmp)
        os.replace(tmp, target)
        _fsync(target.parent)
    else:
        (UPath(root) / name).write_bytes(data)  # object-store PUTs are atomic per object


def remove_file(root: str, name: str) -> None:
    path = local_path(root) / name if is_local(root) else UPath(root) / name
    if path.exists():
        path.unlink()


def open_folder(root: str, name: str) -> UPath:
    """The committed folder `<root>/<name>`, or IncompleteOutput naming the asset to materialise."""
    folder = UPath(local_path(root) if is_local(root) else root) / name
    if not (folder / MARKER).exists():
        raise IncompleteOutput(f"{folder} holds no complete output of {name!r}: materialise {name} first")
    return folder


def folder_files(folder: UPath) -> dict[str, int]:
    """The files a committed folder promises, with their sizes (from its marker)."""
    return json.loads((folder / MARKER).read_text())["files"]


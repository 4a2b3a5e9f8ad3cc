"""Atomic folders under `data_dir`, on the local disk or any fsspec filesystem (s3://, gs://, memory://).

Every asset output is a folder. It is built in a staging folder, then swapped in whole: a crash never leaves
a half-written output that looks complete, and a re-run never leaves a file from an earlier one. On the
local disk the swap is a rename, after every new file and folder is fsynced (a power cut must not publish
empty files under a complete-looking marker). Either way a `_SUCCESS.json` marker (the list of files and their
sizes) comes last; readers refuse a folder without it.

Object stores have no rename, and a killed process must never leave the previous output unreadable, so there
the marker is also a pointer. A commit uploads the new output whole into `<root>/.staging/<name>-<id>/` (the
old output untouched), then rewrites `<root>/<name>/_SUCCESS.json` in one PUT to point at that upload
(`"location"`): from that moment `open_folder` reads the new output. Then it settles the output under its own
name, for readers of plain paths (`<data_dir>/router_pairs/latents/chunk-000000.npy` is a contract): each file copied over
its old self on the server, files the new output lacks removed, the marker rewritten without the pointer. Last,
the upload is removed. Killed anywhere, the marker names a complete output, old or new; the next commit of the
same asset removes what the killed one left (see `_sweep_stale_uploads`).
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

from .processes import BOOT_ID, is_running, this_process

MARKER = "_SUCCESS.json"
OWNER = ".owner"  # host and pid of the process filling a staging folder
STARTED = ".started"  # who began an upload to an object store, and when: {"time", "host", "pid", "started"}
LOCATION = "location"  # in an object store's marker: the upload that holds the output until it is settled
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
    base = staging_base(root)
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


def staging_base(root: str) -> Path:
    """The local folder staging folders are made in: `<data_dir>/.staging`, or for a remote data_dir
    `$PARIS_STAGING_DIR` (else the temp dir) / paris-staging."""
    if is_local(root):
        return local_path(root) / ".staging"
    return Path(os.environ.get("PARIS_STAGING_DIR", tempfile.gettempdir())) / "paris-staging"


def _sweep_abandoned(base: Path, name: str) -> None:
    """Remove staging folders of `name` left by processes of this host that are gone (a crashed run)."""
    for folder in base.glob(f"{name}-*"):
        owner = folder / OWNER
        if not owner.exists():
            continue
        host, _, pid = owner.read_text().partition(" ")
        if host == socket.gethostname() and pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _sweep_other_keys(base: Path, name: str, key: str) -> None:
    """Remove the resumable folders of `name` kept for other keys: work a crashed run left for inputs or
    settings that have since changed, which no run will ever resume (the gpu pool runs one model stage at a
    time, so no live run owns them)."""
    for folder in base.glob(f"{name}-*"):
        other = folder.name[len(name) + 1:]
        if other != key and len(other) == len(key) and all(c in "0123456789abcdef" for c in other):
            shutil.rmtree(folder, ignore_errors=True)


def process_alive(pid: int) -> bool:
    """Whether a process of this pid runs on this host (one of another user's counts as running)."""
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
    target = _commit_to_object_store(staged, files, root, name)
    shutil.rmtree(staged, ignore_errors=True)
    return target


def _commit_to_object_store(staged: Path, files: dict[str, int], root: str, name: str) -> UPath:
    """Upload, point, settle, retire (the module docstring says why): the marker at `<root>/<name>/` names a
    complete output after every single request, so a process killed between any two leaves one to read."""
    base = UPath(root)
    fs, target = base.fs, base / name
    fs.invalidate_cache()  # another process may have changed the store since this one last listed it
    previous = _pointed_upload(base, name)  # a killed commit's upload that still holds the output
    _sweep_stale_uploads(fs, base / ".staging", name, keep=previous)
    upload = base / ".staging" / f"{name}-{uuid.uuid4().hex[:12]}"
    marker = (staged / MARKER).read_bytes()
    try:
        fs.pipe_file((upload / STARTED).path, json.dumps({"time": time.time(), "pidns": _pid_namespace(),
                                                          **this_process()}).encode())
        _make_parents(fs, upload, files)
        for rel in files:
            fs.put_file(str(staged / rel), (upload / rel).path)
        fs.pipe_file((upload / MARKER).path, marker)
    except BaseException:
        fs.rm(upload.path, recursive=True) if fs.exists(upload.path) else None
        raise
    pointer = {**json.loads(marker), LOCATION: upload.path[len(base.path.rstrip("/")) + 1:]}
    fs.pipe_file((target / MARKER).path, json.dumps(pointer, indent=1, sort_keys=True).encode())  # one PUT
    _make_parents(fs, target, files)
    for rel in files:  # server-side copies: no byte comes back through this machine
        fs.cp_file((upload / rel).path, (target / rel).path)
    prefix = target.path.rstrip("/") + "/"
    for path in fs.find(target.path):
        if path[len(prefix):] not in files and path[len(prefix):] != MARKER:
            fs.rm_file(path)  # left by the old output (a shard of an earlier K), or a killed settle
    fs.pipe_file((target / MARKER).path, marker)  # settled: readers of plain paths and of the marker agree
    for done in (upload, previous):
        if done is not None and fs.exists(done.path):
            fs.rm(done.path, recursive=True)
    return target


def _make_parents(fs, folder: UPath, files: dict[str, int]) -> None:
    """Create the folders the files go in, once each (a no-op on object stores, needed on filesystems)."""
    for parent in sorted({str((folder / rel).parent.path) for rel in files}):
        fs.makedirs(parent, exist_ok=True)


def _pointed_upload(base: UPath, name: str) -> UPath | None:
    """The upload the marker of `<base>/<name>` points at (a commit killed before it settled), else None."""
    try:
        marker = json.loads(base.fs.cat_file((base / name / MARKER).path))
    except FileNotFoundError:
        return None
    return base / marker[LOCATION] if LOCATION in marker else None


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


def _sweep_stale_uploads(fs, base: UPath, name: str, keep: UPath | None = None) -> None:
    """Remove uploads of `name` that a killed process left in `<root>/.staging/` on an object store: those whose
    process ran on this host and has ended, and those begun more than STALE_UPLOAD_HOURS ago (by a host nothing
    here can ask; a live upload of the same asset by another run is younger). Never `keep`, the upload a marker
    points at: it is an output until the next commit has moved the pointer on."""
    try:
        candidates = fs.glob(f"{base.path}/{name}-*")
    except FileNotFoundError:
        return
    for upload in candidates:
        if keep is not None and upload.rstrip("/") == keep.path.rstrip("/"):
            continue
        try:
            record = json.loads(fs.cat_file(f"{upload}/{STARTED}"))
        except (FileNotFoundError, ValueError):
            continue  # not ours, or not begun: leave it
        if _abandoned(record if isinstance(record, dict) else {"time": record}):
            fs.rm(upload, recursive=True)


def _abandoned(started: dict) -> bool:
    """Whether an upload's STARTED record (older ones hold the time alone) names a process that will not finish."""
    try:
        if time.time() - float(started["time"]) > STALE_UPLOAD_HOURS * 3600:
            return True
    except (KeyError, TypeError, ValueError):
        return False
    host, pid, stamp = (str(started.get(k, "")) for k in ("host", "pid", "started"))
    booted = stamp.partition("@")[2]
    if booted and BOOT_ID.exists() and booted != BOOT_ID.read_text().strip():
        return False  # another machine under the same host name (or this one before a reboot): age decides
    if started.get("pidns") != _pid_namespace():
        return False  # another container on this kernel under the same host name: its pids are not ours to read
    return bool(pid) and is_running(host, pid, stamp) is False


def _pid_namespace() -> str:
    """This process' PID namespace (containers on one kernel, even under one host name, each have their own)."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


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
    """The committed folder `<root>/<name>`, or IncompleteOutput naming the asset to materialise. On an object
    store, the upload its marker points at while a commit settles it (or after that commit was killed)."""
    if is_local(root):
        folder = UPath(local_path(root)) / name
        if not (folder / MARKER).exists():
            raise IncompleteOutput(f"{folder} holds no complete output of {name!r}: materialise {name} first")
        return folder
    folder = UPath(root) / name
    folder.fs.invalidate_cache()  # listings (and ETags) this process cached may predate a commit since
    try:
        marker = json.loads(folder.fs.cat_file((folder / MARKER).path))
    except FileNotFoundError:
        raise IncompleteOutput(f"{folder} holds no complete output of {name!r}: materialise {name} first") from None
    return UPath(root) / marker[LOCATION] if LOCATION in marker else folder


def holds_output(root: str, name: str) -> bool:
    """Whether `<root>/<name>` has a committed output of its own (its marker)."""
    folder = UPath(local_path(root)) / name if is_local(root) else UPath(root) / name
    return (folder / MARKER).exists()


def require_settled(root: str, *names: str) -> None:
    """For readers of plain paths (`<data_dir>/router_pairs/latents/...`, the manifest's shard paths) on an object
    store: raise IncompleteOutput when a folder's marker still points at an upload, i.e. a commit is settling the
    new output file by file (or was killed doing so), so the plain paths may mix old and new files: rows of two
    runs that must never be paired. On the local disk a folder is swapped whole by a rename: nothing to check."""
    if is_local(root):
        return
    for name in names:
        if _pointed_upload(UPath(root), name) is not None:
            raise IncompleteOutput(f"{UPath(root) / name} is being replaced by a commit (or one was killed part-way): "
                                   f"its files may mix two outputs. Wait for the commit, or re-materialise {name}")


def folder_files(folder: UPath) -> dict[str, int]:
    """The files a committed folder promises, with their sizes (from its marker)."""
    return json.loads((folder / MARKER).read_text())["files"]


"""The shard browser: `python -m paris_assets.browse` (or `make browse`) serves one page over the expert and
held-out shards of a data_dir on 127.0.0.1, with the standard library's HTTP server and no other dependency.

The page shows an overview (images, shards per cluster, shard sizes), the shards' health against
pipeline_manifest.json, filters, paginated thumbnails and a detail view. The JSON behind it is plain too:
/api/overview, /api/health, /api/samples?cluster=1&aesthetic_min=6&page=2, /api/sample/<image_id>,
/image/<image_id>?size=160; for clips (media: video) /preview/<image_id>?size=160, an animated WebP of the
first frames, and /clip/<image_id>, the stored mp4; POST /api/rescan (with an X-Requested-With header) re-reads
the shards after a re-materialisation. There is no authentication: it answers only requests addressed to the
host it serves.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from .lib.outputs import shard_index
from .lib.video import previews
from .settings import load_settings

MAX_PER_PAGE = 200
PREVIEW_CACHE_BYTES = 64 << 20  # a page of 48 grid previews is ~2-5 MB: a dozen pages and their detail previews
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class Snapshot:
    """One consistent view: a request reads it once, a rescan replaces it whole."""
    index: shard_index.ShardIndex | None
    error: str | None
    crops: shard_index.CropLookup
    previews: previews.PreviewCache  # this scan's: a rescan starts an empty one
    version: str  # changes with every scan: image URLs carry it, so a browser never shows a stale cached image


def default_cache_dir() -> Path:
    return Path(os.environ.get("PARIS_CACHE_DIR") or Path.home() / ".cache" / "paris-assets") / "shard-index"


class Browser:
    def __init__(self, data_root: str, cache_dir: Path | None = None):
        self.data_root, self.cache_dir = data_root, cache_dir
        self._scan_lock = threading.Lock()
        self.snapshot = self._scan()

    def _scan(self) -> Snapshot:
        crops = shard_index.CropLookup(shard_index.open_root(self.data_root))
        try:
            index, error = shard_index.build_index(self.data_root, self.cache_dir), None
        except shard_index.NoManifest as exc:
            index, error = None, str(exc)
        except Exception as exc:  # an unreadable manifest: say so on the page, keep serving
            index, error = None, f"cannot read the shards under {self.data_root}: {type(exc).__name__}: {exc}"
        return Snapshot(index, error, crops, previews.PreviewCache(PREVIEW_CACHE_BYTES), f"{time.time():.3f}")

    def rescan(self) -> Snapshot:
        with self._scan_lock:  # one scan at a time; the last one started is the one kept
            self.snapshot = self._scan()
        return self.snapshot


def _require(snap: Snapshot) -> shard_index.ShardIndex:
    if snap.index is None:
        raise LookupError(snap.error)
    return snap.index


def make_handler(browser: Browser, allowed_hosts: set[str]) -> type[BaseHTTPRequestHandler]:
    page = resources.files("paris_assets").joinpath("browse.html").read_bytes()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._answer(self._get)

        def do_POST(self) -> None:
            self._answer(self._post)

        def _answer(self, handle) -> None:
            if not host_allowed(self.headers.get("Host", ""), allowed_hosts):  # DNS rebinding: another name
                self._json({"error": f"unexpected Host {self.headers.get('Host')!r}"}, HTTPStatus.MISDIRECTED_REQUEST)
                return
            try:
                handle(urlparse(self.path))
            except LookupError as exc:  # KeyError too: an unknown id, a missing manifest
                self._json({"error": str(exc.args[0]) if exc.args else "not found"}, HTTPStatus.NOT_FOUND)
            except ValueError as exc:
                self._json({"error": str(exc)}, HTTPStatus.BAD_REQUEST)
            except Exception as exc:  # a shard deleted or rewritten under us, an undecodable image: say so
                traceback.print_exc(file=sys.stderr)
                self._json({"error": f"{type(exc).__name__}: {exc}"}, HTTPStatus.INTERNAL_SERVER_ERROR)

        def _get(self, url) -> None:
            params = {k: v[-1] for k, v in parse_qs(url.query).items()}
            snap = browser.snapshot
            if url.path in ("/", "/index.html"):
                self._send(HTTPStatus.OK, page, "text/html; charset=utf-8")
            elif url.path == "/api/overview":
                index = _require(snap)
                self._json({**shard_index.overview(index), "data_root": str(index.root), "version": snap.version,
                            "health": shard_index.shard_health(index)})
            elif url.path == "/api/health":
                self._json(shard_index.shard_health(_require(snap)))
            elif url.path == "/api/samples":
                self._samples(_require(snap), params)
            elif url.path.startswith("/api/sample/"):
                self._json(_row(_require(snap).row(unquote(url.path.rpartition("/")[2]))))
            elif url.path.startswith("/image/"):
                index, image_id = _require(snap), unquote(url.path.rpartition("/")[2])
                side = min(1024, max(16, int(params["size"]))) if params.get("size") else None
                if shard_index.is_clip(index, image_id):  # a still where a page wants one: the first frame
                    data = previews.first_frame_jpeg(shard_index.read_clip(index, image_id, snap.crops), side)
                else:
                    data = shard_index.read_image(index, image_id, snap.crops)
                    if side:
                        data = shard_index.thumbnail(data, side)
                self._send(HTTPStatus.OK, data, "image/jpeg", cache="v" in params)
            elif url.path.startswith("/preview/"):
                index, image_id = _require(snap), unquote(url.path.rpartition("/")[2])
                side = min(1024, max(16, int(params["size"]))) if params.get("size") else None
                data = snap.previews.get((image_id, side), lambda: _preview(index, image_id, snap.crops, side))
                self._send(HTTPStatus.OK, data, "image/webp", cache="v" in params)
            elif url.path.startswith("/clip/"):
                index, image_id = _require(snap), unquote(url.path.rpartition("/")[2])
                data = shard_index.read_clip(index, image_id, snap.crops)
                self._send(HTTPStatus.OK, data, "video/mp4", cache="v" in params,
                           headers={"Content-Disposition": f'attachment; filename="{_safe_name(image_id)}.mp4"'})
            else:
                raise LookupError(f"no such page {url.path}")

        def _post(self, url) -> None:
            if url.path != "/api/rescan":
                raise LookupError(f"no such action {url.path}")
            if not self.headers.get("X-Requested-With"):  # a cross-site form cannot set it
                raise ValueError("POST /api/rescan needs an X-Requested-With header")
            snap = browser.rescan()
            self._json({"ok": snap.index is not None, "error": snap.error})

        def _samples(self, index: shard_index.ShardIndex, params: dict) -> None:
            page = int(params.pop("page", 1) or 1)
            per_page = min(MAX_PER_PAGE, max(1, int(params.pop("per_page", 48) or 48)))
            total, rows = shard_index.query(index.samples, params, page, per_page)
            self._json({"total": total, "page": shard_index.served_page(page, total, per_page), "per_page": per_page,
                        "pages": max(1, math.ceil(total / per_page)), "rows": [_row(r) for _, r in rows.iterrows()]})

        def _json(self, value, status: HTTPStatus = HTTPStatus.OK) -> None:
            self._send(status, json.dumps(value, allow_nan=False, default=str).encode(), "application/json")

        def _send(self, status: HTTPStatus, body: bytes, kind: str, cache: bool = False,
                  headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Cache-Control", "max-age=3600" if cache else "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt: str, *args) -> None:  # quiet: one line per failed request only
            if len(args) > 1 and str(args[1]).startswith(("4", "5")):
                sys.stderr.write(f"browse: {self.address_string()} {fmt % args}\n")

    return Handler


def _preview(index: shard_index.ShardIndex, image_id: str, crops: shard_index.CropLookup, side: int | None) -> bytes:
    """The clip's animated preview at the rate its json states (the mp4's own rate when it states none)."""
    mp4 = shard_index.read_clip(index, image_id, crops)  # first: it says why an image or a missing clip has none
    fps = index.row(image_id)["fps"]
    stated = fps is not None and math.isfinite(fps) and fps > 0
    return previews.clip_preview(mp4, side, fps=float(fps) if stated else None)


def _safe_name(image_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in image_id)[:100] or "clip"


def _row(row) -> dict:
    out = {}
    for key, value in row.items():
        if key in ("jpg_offset", "jpg_size", "order", "mp4_offset", "mp4_size"):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        out[key] = value.item() if hasattr(value, "item") else value
    return out


def host_allowed(header: str, allowed: set[str]) -> bool:
    """Whether a Host header names this server: `name:port` as listed, or a name listed without a port (one
    given with --allowed-host: a proxy in front answers on its own port, or on none)."""
    header = header.strip().lower()
    name, sep, port = header.rpartition(":")
    return header in allowed or (bool(sep) and port.isdigit() and name in allowed)


def serve(data_root: str, host: str = "127.0.0.1", port: int = 8765, cache_dir: Path | None = None,
          allowed_hosts: tuple[str, ...] = ()) -> ThreadingHTTPServer:
    """A bound server, not yet serving (call serve_forever); port 0 picks a free one. With `cache_dir`, scans
    of unchanged shards are reused across restarts. It answers requests whose Host header is the address it
    listens on (loopback names too on loopback), or one of `allowed_hosts`: the name it is reached by behind a
    proxy or a DNS name, `name` (any port) or `name:port`."""
    server = ThreadingHTTPServer((host, port), BaseHTTPRequestHandler)
    bound = server.server_address[1]
    names = {host, *LOOPBACK} if host in LOOPBACK or host in ("0.0.0.0", "::") else {host}
    allowed = {f"{name}:{bound}" for name in names} | {f"[{name}]:{bound}" for name in names if ":" in name}
    allowed = {name.lower() for name in allowed} | {name.strip().lower() for name in allowed_hosts}
    server.RequestHandlerClass = make_handler(Browser(data_root, cache_dir), allowed)
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m paris_assets.browse", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="settings file (default: $PARIS_CONFIG or paris.yaml)")
    parser.add_argument("--data-dir", help="browse this data_dir instead of the settings' one (a path or fsspec URL)")
    parser.add_argument("--host", default="127.0.0.1", help="an address other than loopback exposes the data, "
                                                              "unauthenticated, to the network")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--allowed-host", action="append", default=[], metavar="NAME[:PORT]",
                        help="also answer requests addressed to this name (repeatable), e.g. a reverse proxy's; "
                             "without a port, on any port. Otherwise only the address it listens on is answered "
                             "(and the loopback names, on loopback): another name may be a DNS-rebinding page")
    parser.add_argument("--cache-dir", type=Path, default=default_cache_dir(),
                        help="where scans of the shards are kept (default: $PARIS_CACHE_DIR/shard-index or "
                             "~/.cache/paris-assets/shard-index)")
    parser.add_argument("--no-cache", action="store_true", help="scan the shards afresh on every start")
    args = parser.parse_args(argv)
    data_root = args.data_dir or load_settings(args.config).data_root
    started = time.perf_counter()
    server = serve(data_root, args.host, args.port, None if args.no_cache else args.cache_dir, tuple(args.allowed_host))
    print(f"indexed the shards in {time.perf_counter() - started:.1f} s", flush=True)
    if args.host not in LOOPBACK:
        print(f"warning: serving on {args.host}: anyone who can reach it can browse the data", file=sys.stderr)
    print(f"shard browser for {data_root}: http://{args.host}:{server.server_address[1]}/  (Ctrl-C stops it)",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()

"""The shard browser: `python -m paris_assets.browse` (or `make browse`) serves one page over the expert and
held-out shards of a data_dir on 127.0.0.1, with the standard library's HTTP server and no other dependency.

The page shows an overview (images, shards per cluster, shard sizes), the shards' health against
pipeline_manifest.json, filters, paginated thumbnails and a detail view. The JSON behind it is plain too:
/api/overview, /api/health, /api/samples?cluster=1&aesthetic_min=6&page=2, /api/sample/<image_id>,
/image/<image_id>?size=160; POST /api/rescan re-reads the shards after a re-materialisation.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qs, unquote, urlparse

from .lib import shard_index
from .settings import load_settings

MAX_PER_PAGE = 200


class Browser:
    """The state behind the page: the current index (rebuilt on rescan) and the crop lookup."""

    def __init__(self, data_root: str):
        self.data_root = data_root
        self._lock = threading.Lock()
        self.index: shard_index.ShardIndex | None = None
        self.error: str | None = None
        self.rescan()

    def rescan(self) -> None:
        try:
            index = shard_index.build_index(self.data_root)
            error = None
        except shard_index.NoManifest as exc:
            index, error = None, str(exc)
        with self._lock:
            self.index, self.error = index, error
            self.crops = shard_index.CropLookup(shard_index.open_root(self.data_root))

    def require_index(self) -> shard_index.ShardIndex:
        if self.index is None:
            raise LookupError(self.error)
        return self.index


def make_handler(browser: Browser) -> type[BaseHTTPRequestHandler]:
    page = resources.files("paris_assets").joinpath("browse.html").read_bytes()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlparse(self.path)
            params = {k: v[-1] for k, v in parse_qs(url.query).items()}
            try:
                if url.path in ("/", "/index.html"):
                    self._send(HTTPStatus.OK, page, "text/html; charset=utf-8")
                elif url.path == "/api/overview":
                    index = browser.require_index()
                    self._json({**shard_index.overview(index), "data_root": str(index.root),
                                "health": shard_index.shard_health(index)})
                elif url.path == "/api/health":
                    self._json(shard_index.shard_health(browser.require_index()))
                elif url.path == "/api/samples":
                    self._samples(browser.require_index(), params)
                elif url.path.startswith("/api/sample/"):
                    self._json(_row(_one(browser.require_index(), unquote(url.path.rpartition("/")[2]))))
                elif url.path.startswith("/image/"):
                    self._image(unquote(url.path.rpartition("/")[2]), params)
                else:
                    self._json({"error": f"no such page {url.path}"}, HTTPStatus.NOT_FOUND)
            except LookupError as exc:  # KeyError too: an unknown id, a missing manifest
                self._json({"error": str(exc).strip("'\"")}, HTTPStatus.NOT_FOUND)
            except ValueError as exc:
                self._json({"error": str(exc)}, HTTPStatus.BAD_REQUEST)

        def do_POST(self) -> None:
            if urlparse(self.path).path != "/api/rescan":
                self._json({"error": f"no such action {self.path}"}, HTTPStatus.NOT_FOUND)
                return
            browser.rescan()
            self._json({"ok": browser.index is not None, "error": browser.error})

        def _samples(self, index: shard_index.ShardIndex, params: dict) -> None:
            page = int(params.pop("page", 1) or 1)
            per_page = min(MAX_PER_PAGE, max(1, int(params.pop("per_page", 48) or 48)))
            total, rows = shard_index.query(index.samples, params, page, per_page)
            self._json({"total": total, "page": page, "per_page": per_page,
                        "pages": max(1, math.ceil(total / per_page)), "rows": [_row(r) for _, r in rows.iterrows()]})

        def _image(self, image_id: str, params: dict) -> None:
            index = browser.require_index()
            data = shard_index.read_image(index, image_id, browser.crops)
            if params.get("size"):
                data = shard_index.thumbnail(data, min(1024, max(16, int(params["size"]))))
            self._send(HTTPStatus.OK, data, "image/jpeg", cache=True)

        def _json(self, value, status: HTTPStatus = HTTPStatus.OK) -> None:
            self._send(status, json.dumps(value, allow_nan=False, default=str).encode(), "application/json")

        def _send(self, status: HTTPStatus, body: bytes, kind: str, cache: bool = False) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "max-age=3600" if cache else "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt: str, *args) -> None:  # quiet: one line per error only
            if args and str(args[1]).startswith(("4", "5")):
                sys.stderr.write(f"browse: {self.address_string()} {fmt % args}\n")

    return Handler


def _one(index: shard_index.ShardIndex, image_id: str):
    hit = index.samples[index.samples["image_id"] == image_id]
    if hit.empty:
        raise KeyError(f"no sample {image_id!r} in the shards")
    return hit.iloc[0]


def _row(row) -> dict:
    out = {}
    for key, value in row.items():
        if key in ("jpg_offset", "jpg_size", "order"):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        out[key] = value.item() if hasattr(value, "item") else value
    return out


def serve(data_root: str, host: str = "127.0.0.1", port: int = 8765) -> ThreadingHTTPServer:
    """A started-but-not-serving server (call serve_forever); port 0 picks a free one."""
    return ThreadingHTTPServer((host, port), make_handler(Browser(data_root)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m paris_assets.browse", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="settings file (default: $PARIS_CONFIG or paris.yaml)")
    parser.add_argument("--data-dir", help="browse this data_dir instead of the settings' one (a path or fsspec URL)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args(argv)
    data_root = args.data_dir or load_settings(args.config).data_root
    server = serve(data_root, args.host, args.port)
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

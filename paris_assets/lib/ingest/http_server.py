"""A real HTTP file server on 127.0.0.1, started and stopped by its user (the demo, tests, the benchmark)."""

from __future__ import annotations

import functools
import socket
import threading
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


@contextmanager
def serve_directory(directory: str) -> Iterator[str]:
    """Serve `directory` over HTTP on a free loopback port; yields the base URL (no trailing slash)."""
    handler = functools.partial(_QuietHandler, directory=directory)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="demo-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def refused_base_url() -> str:
    """A loopback URL where nothing listens (a port just released), for connection-refused downloads."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"

"""Small real servers and text helpers shared by the integration tests."""

from __future__ import annotations

import functools
import http.server
import re
import socket
import threading
from pathlib import Path

__all__ = ["FileServer", "free_port", "normalise_text"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def normalise_text(text: str) -> str:
    """Lower case, no punctuation, single spaces: how WER is scored."""
    text = re.sub(r"[^\w\s']", " ", text.lower())
    return " ".join(text.split())


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class FileServer:
    """A real HTTP file server on 127.0.0.1 serving one directory."""

    def __init__(self, root: Path) -> None:
        handler = functools.partial(_Quiet, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> FileServer:
        self._thread.start()
        return self

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

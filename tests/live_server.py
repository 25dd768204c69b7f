"""A local HTTP server on 127.0.0.1 that plays the part of a network camera for the live-source tests.

It serves the files of one folder. For each file a *plan* can say what successive requests get:
``None`` the whole file, an integer ``n`` only its first ``n`` bytes (sent as a complete response of
``n`` bytes, as a camera whose connection drops after a while), ``"refuse"`` an immediate 503 (a
camera that is still rebooting). Requests beyond the plan get the whole file. ``requests`` counts
the requests per file. :meth:`LiveServer.stop` shuts it down (later connections are refused).
"""

from __future__ import annotations

import functools
import http.server
import threading
from collections import defaultdict
from pathlib import Path


class _Handler(http.server.BaseHTTPRequestHandler):
    def __init__(self, *args, server_state: "LiveServer", **kwargs) -> None:
        self.state = server_state
        super().__init__(*args, **kwargs)

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        name = self.path.lstrip("/").split("?")[0]
        path = self.state.folder / name
        if not path.is_file():
            self.send_error(404)
            return
        with self.state.lock:
            n = self.state.requests[name]
            self.state.requests[name] += 1
            plan = self.state.plans.get(name, [])
            step = plan[n] if n < len(plan) else None
        if step == "refuse":
            self.send_error(503)
            return
        data = path.read_bytes()
        if step is not None:
            data = data[:step]
        self.send_response(200)
        self.send_header("Content-Type", "video/x-matroska")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass


class LiveServer:
    """``with LiveServer(folder, plans={"ir.mkv": [4000, None]}) as server: server.url("ir.mkv")``."""

    def __init__(self, folder: Path, *, plans: dict[str, list[int | str | None]] | None = None) -> None:
        self.folder = Path(folder)
        self.plans = dict(plans or {})
        self.requests: dict[str, int] = defaultdict(int)
        self.lock = threading.Lock()
        handler = functools.partial(_Handler, server_state=self)
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/{name}"

    def start(self) -> "LiveServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "LiveServer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        if self._thread.is_alive():
            self.stop()

"""A registry mirror that is down, for the tests of crid's fallback to the next host."""

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, Self


class DownMirror:
    """A loopback endpoint that is down in one of three ways:

    - ``refuse``: a bound port nobody listens on, so connecting fails at once;
    - ``503``: an HTTP server answering 503 to everything (``status`` to change it);
    - ``hang``: accepts connections and never answers (for timeouts).

    ``requests`` counts the HTTP requests (503 mode) or connections (hang mode).
    """

    def __init__(self, mode: Literal["refuse", "503", "hang"] = "503", status: int = 503) -> None:
        self.mode = mode
        self.status = status
        self.port = 0
        self._requests = 0
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def requests(self) -> int:
        with self._lock:
            return self._requests

    def _count(self) -> None:
        with self._lock:
            self._requests += 1

    def start(self) -> Self:
        if self.mode == "refuse":
            self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._sock.bind(("127.0.0.1", 0))  # bound, never listening: connect() gets RST
            self.port = self._sock.getsockname()[1]
        elif self.mode == "503":
            self._server = ThreadingHTTPServer(("127.0.0.1", 0), _status_handler(self))
            self._server.daemon_threads = True
            self.port = self._server.server_address[1]
            self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
            self._thread.start()
        else:
            self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._sock.bind(("127.0.0.1", 0))
            self._sock.listen(64)
            self._sock.settimeout(0.1)
            self.port = self._sock.getsockname()[1]
            self._thread = threading.Thread(target=self._hang, daemon=True)
            self._thread.start()
        return self

    def _hang(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._count()
            self._conns.append(conn)

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        for conn in self._conns:
            conn.close()
        self._conns.clear()
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _status_handler(mirror: DownMirror) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            mirror._count()
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            body = b'{"errors":[{"code":"UNAVAILABLE","message":"down mirror"}]}'
            self.send_response(mirror.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler

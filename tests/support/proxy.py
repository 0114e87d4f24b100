"""A slow HTTP forward proxy in front of a plain-HTTP registry.

Forwards every request to the upstream unchanged and streams the answer back
at a limited rate, so that a test can interrupt a pull in the middle of a
blob (for example by killing crid) without racing a fast loopback download.
"""

import http.client
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "proxy-connection"}


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # a pull opens several connections at once; the default is 5


class SlowProxy:
    def __init__(self, upstream: str, bytes_per_second: int = 1 << 20, chunk: int = 64 * 1024) -> None:
        self.upstream = upstream  # host:port
        self.rate = bytes_per_second
        self.chunk = chunk
        self.bytes_sent = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        assert self._server is not None
        return f"127.0.0.1:{self._server.server_address[1]}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
                conn = http.client.HTTPConnection(proxy.upstream, timeout=30)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    self.send_response(resp.status)
                    for k, v in resp.getheaders():
                        if k.lower() not in _HOP_HEADERS:
                            self.send_header(k, v)
                    self.end_headers()
                    if self.command == "HEAD":
                        return
                    while data := resp.read(proxy.chunk):
                        self.wfile.write(data)
                        self.wfile.flush()
                        with proxy._lock:
                            proxy.bytes_sent += len(data)
                        time.sleep(len(data) / proxy.rate)
                except (TimeoutError, BrokenPipeError, ConnectionResetError):
                    self.close_connection = True
                finally:
                    conn.close()

            do_GET = do_HEAD = do_POST = do_PUT = _forward

        return Handler

    def start(self) -> "SlowProxy":
        self._server = _Server(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "SlowProxy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

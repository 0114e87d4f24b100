"""What the test and benchmark daemon launchers share (and the test servers: a free port)."""

import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cri.api.client import CriClient


def deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` laid over it, nested tables merged key by key."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def start_on_a_free_port(start_once: Callable[[], bool], stop: Callable[[], None], failure: Callable[[], str]) -> None:
    """A server started on a free port: ``start_once`` tries one and answers False when another
    process took it meanwhile; five tries, then RuntimeError(``failure()``). ``stop`` undoes a failure."""
    try:
        for _ in range(5):
            if start_once():
                return
        raise RuntimeError(failure())
    except BaseException:
        stop()
        raise


class DaemonProcess:
    """A CRI daemon run as a subprocess: its socket, its log file, a client bound to it."""

    socket: str
    log_path: Path

    def __init__(self) -> None:
        self._client: CriClient | None = None

    @property
    def client(self) -> CriClient:
        if self._client is None:
            self._client = CriClient(self.socket)
        return self._client

    def close_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

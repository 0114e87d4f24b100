"""Single-use tokens of the streaming server's URLs.

Exec, Attach and PortForward answer with ``http://HOST:PORT/<kind>/<token>``;
the client (kubelet, crictl) connects there within a minute, once. A token
is 96 random bits (kubelet's own cache uses 64), so it cannot be guessed; at
most ``MAX_PENDING`` wait at a time, so a client that asks and never comes
cannot grow the cache without bound.
"""

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cri.errors import ResourceExhausted

TOKEN_TTL_SECONDS = 60.0
MAX_PENDING = 1000


@dataclass(frozen=True)
class Pending:
    kind: str  # "exec", "attach" or "portforward"
    request: Any  # the CRI request message
    expires: float


class TokenCache:
    def __init__(
        self,
        ttl: float = TOKEN_TTL_SECONDS,
        limit: int = MAX_PENDING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.limit = limit
        self.clock = clock
        self._pending: OrderedDict[str, Pending] = OrderedDict()  # oldest first

    def _expire(self) -> None:
        now = self.clock()
        while self._pending:
            token, first = next(iter(self._pending.items()))
            if first.expires > now:
                break
            del self._pending[token]

    def insert(self, kind: str, request: Any) -> str:
        self._expire()
        if len(self._pending) >= self.limit:
            raise ResourceExhausted(
                f"{self.limit} streaming requests are waiting for their client already; try again in a minute"
            )
        token = secrets.token_urlsafe(12)
        self._pending[token] = Pending(kind, request, self.clock() + self.ttl)
        return token

    def consume(self, kind: str, token: str) -> Any | None:
        """The request behind ``token`` if it is pending and of ``kind``; it is
        used up either way, so a token never works twice."""
        self._expire()
        pending = self._pending.pop(token, None)
        if pending is None or pending.kind != kind:
            return None
        return pending.request

    def __len__(self) -> int:
        self._expire()
        return len(self._pending)

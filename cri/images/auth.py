"""Registry authentication: credentials, challenges and the token flow.

A registry answers 401 with ``WWW-Authenticate: Basic ...`` or ``Bearer
realm=...,service=...,scope=...``. For Basic crid sends the credentials; for
Bearer it gets a token from the realm (anonymously, with Basic credentials,
or by OAuth2 refresh with an identity token) and caches it per realm,
service, scope and credentials until it expires. Secrets never reach a log
line or an error message: ``Credentials.__repr__`` hides them.
"""

import base64
import hashlib
import re
import time
from dataclasses import dataclass, field

from cri.errors import InvalidArgument

# token lifetime when the server does not say (the distribution spec's default)
DEFAULT_TOKEN_SECONDS = 60
_EXPIRY_MARGIN = 5.0


@dataclass(frozen=True)
class Credentials:
    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)
    registry_token: str = field(default="", repr=False)

    @property
    def anonymous(self) -> bool:
        return not (self.username or self.password or self.identity_token or self.registry_token)

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def cache_key(self) -> str:
        """Tells credential sets apart in the token cache without holding the secret."""
        raw = f"{self.username}\0{self.password}\0{self.identity_token}\0{self.registry_token}"
        return hashlib.sha256(raw.encode()).hexdigest()[:16]


def credentials_from_cri(
    username: str = "", password: str = "", auth: str = "", identity_token: str = "", registry_token: str = ""
) -> Credentials:
    """Credentials of a CRI AuthConfig; ``auth`` is base64 of ``user:password``."""
    if auth and not (username or password):
        try:
            decoded = base64.b64decode(auth, validate=True).decode()
        except ValueError:
            raise InvalidArgument("auth config: 'auth' is not valid base64 of user:password") from None
        username, sep, password = decoded.partition(":")
        if not sep:
            raise InvalidArgument("auth config: 'auth' must encode user:password")
    return Credentials(username, password, identity_token, registry_token)


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lower case: "basic" or "bearer"
    params: dict[str, str]


_PARAM = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_.-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?')


def parse_challenges(header: str) -> list[Challenge]:
    """Parse a WWW-Authenticate header (one or more challenges)."""
    out: list[Challenge] = []
    pos = 0
    scheme_re = re.compile(r"\s*,?\s*([A-Za-z][A-Za-z0-9_-]*)(?:\s+|$)")
    while pos < len(header):
        m = scheme_re.match(header, pos)
        if not m:
            break
        scheme, pos = m.group(1).lower(), m.end()
        params: dict[str, str] = {}
        while pos < len(header):
            p = _PARAM.match(header, pos)
            if not p:
                break
            value = p.group(2) if p.group(2) is not None else p.group(3)
            params[p.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
            pos = p.end()
        out.append(Challenge(scheme, params))
    return out


@dataclass
class _Token:
    value: str
    expires: float


class TokenCache:
    """Bearer tokens by (realm, service, scope, credentials) until they expire."""

    def __init__(self) -> None:
        self._tokens: dict[tuple[str, str, str, str], _Token] = {}

    def get(self, key: tuple[str, str, str, str]) -> str | None:
        t = self._tokens.get(key)
        if t is None or t.expires - _EXPIRY_MARGIN <= time.monotonic():
            self._tokens.pop(key, None)
            return None
        return t.value

    def put(self, key: tuple[str, str, str, str], value: str, lifetime: float) -> None:
        self._tokens[key] = _Token(value, time.monotonic() + max(lifetime, 1.0))

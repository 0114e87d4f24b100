"""Image references, parsed and normalised as docker and containerd do.

``busybox`` -> ``docker.io/library/busybox:latest``; ``localhost:5000/a/b``
keeps its registry; ``name@sha256:<hex>`` and ``name:tag@sha256:<hex>`` carry
a digest. Grammar: github.com/distribution/reference (written anew here).
"""

import re
from dataclasses import dataclass

from cri.errors import InvalidArgument

DOCKER_DOMAIN = "docker.io"
LEGACY_DOCKER_DOMAIN = "index.docker.io"
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_MAX = 255

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"

# \Z, not '$' (which also matches before a final newline); the tag's \w is ASCII, as in Go
PATH_RE = re.compile(rf"^{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*\Z")
DOMAIN_RE = re.compile(rf"^{_DOMAIN}\Z")
TAG_RE = re.compile(rf"^{_TAG}\Z", re.ASCII)
DIGEST_RE = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+\Z")
SHA256_RE = re.compile(r"^sha256:[a-f0-9]{64}\Z")
HEX64_RE = re.compile(r"^[a-f0-9]{64}\Z")


@dataclass(frozen=True)
class Reference:
    domain: str
    path: str
    tag: str = ""
    digest: str = ""

    @property
    def name(self) -> str:
        """Repository name with its registry: ``docker.io/library/busybox``."""
        return f"{self.domain}/{self.path}"

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out

    @property
    def tagged_name(self) -> str:
        return f"{self.name}:{self.tag}" if self.tag else ""

    def with_digest(self, digest: str) -> str:
        """``name@digest``: how a repo digest is written."""
        return f"{self.name}@{digest}"

    @property
    def object(self) -> str:
        """What to ask the registry's manifest endpoint for."""
        return self.digest or self.tag


def check_digest(digest: str) -> str:
    if not DIGEST_RE.match(digest):
        raise InvalidArgument(f"invalid digest {digest!r}")
    if not SHA256_RE.match(digest):
        raise InvalidArgument(f"unsupported digest {digest!r}: only sha256 with 64 hex digits is supported")
    return digest


def _split_domain(name: str) -> tuple[str, str]:
    first, slash, rest = name.partition("/")
    if not slash or ("." not in first and ":" not in first and first != "localhost" and first.lower() == first):
        domain, path = DOCKER_DOMAIN, name
    else:
        domain, path = first, rest
    if domain == LEGACY_DOCKER_DOMAIN:
        domain = DOCKER_DOMAIN
    if domain == DOCKER_DOMAIN and "/" not in path:
        path = OFFICIAL_PREFIX + path
    return domain, path


def parse(text: str) -> Reference:
    """Parse and normalise ``text``; a name without tag or digest gets ``latest``."""
    if not text:
        raise InvalidArgument("image reference is empty")
    if HEX64_RE.match(text):
        raise InvalidArgument(f"invalid reference {text!r}: a 64-character hex string is an image id, not a name")
    rest, at, digest = text.partition("@")
    if at:
        check_digest(digest)
    tag = ""
    # a ':' after the last '/' separates the tag (an earlier one is a registry port)
    colon = rest.rfind(":")
    if colon > rest.rfind("/"):
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not TAG_RE.match(tag):
            raise InvalidArgument(f"invalid reference {text!r}: invalid tag {tag!r}")
    domain, path = _split_domain(rest)
    if not DOMAIN_RE.match(domain):
        raise InvalidArgument(f"invalid reference {text!r}: invalid registry {domain!r}")
    if not PATH_RE.match(path):
        if PATH_RE.match(path.lower()):
            raise InvalidArgument(f"invalid reference {text!r}: repository name must be lowercase")
        raise InvalidArgument(f"invalid reference {text!r}: invalid repository name {path!r}")
    if len(domain) + 1 + len(path) > NAME_MAX:
        raise InvalidArgument(f"invalid reference {text!r}: repository name longer than {NAME_MAX} characters")
    if not tag and not digest:
        tag = DEFAULT_TAG
    return Reference(domain, path, tag, digest)

"""Property tests of hosts.toml parsing (cri/images/hosts.py).

Documents are generated as Python values of the hosts.toml shape and written
as TOML by a small emitter (the standard library only reads TOML).
"""

import os
import re
import tempfile
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from cri.errors import FailedPrecondition
from cri.images.hosts import DEFAULT_CAPABILITIES, RegistryHost, load_hosts

CAPS = sorted(DEFAULT_CAPABILITIES)
REGISTRY = "r.example"

# --- a TOML emitter for the generated documents


def _toml_str(s: str) -> str:
    out = []
    for ch in s:
        if ch in '"\\' or ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return _toml_str(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_toml_str(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(v)


def to_toml(doc: dict[str, Any]) -> str:
    """Top-level keys, then one ``[host."URL"]`` section per mirror when all are tables."""
    hosts = doc.get("host")
    sections = isinstance(hosts, dict) and all(isinstance(t, dict) for t in hosts.values())
    lines = [f"{_toml_str(k)} = {_toml_value(v)}" for k, v in doc.items() if not (k == "host" and sections)]
    if sections:
        assert isinstance(hosts, dict)
        for url, table in hosts.items():
            lines.append(f"[host.{_toml_str(url)}]")
            lines.extend(f"  {_toml_str(k)} = {_toml_value(v)}" for k, v in table.items())
    return "\n".join(lines) + "\n"


def load(text: str | bytes, dir_name: str = REGISTRY, registry: str = REGISTRY) -> tuple[list[RegistryHost], str]:
    with tempfile.TemporaryDirectory() as root:
        d = os.path.join(root, dir_name)
        os.mkdir(d)
        with open(os.path.join(d, "hosts.toml"), "wb") as f:
            f.write(text.encode() if isinstance(text, str) else text)
        return load_hosts(root, registry), d


def parses_or_fails_cleanly(text: str | bytes) -> None:
    try:
        load(text)
    except FailedPrecondition as exc:
        assert str(exc)


# --- well-formed documents

LOWER = "abcdefghijklmnopqrstuvwxyz0123456789"
hostname = st.lists(st.text(LOWER, min_size=1, max_size=6), min_size=1, max_size=3).map(".".join)
netloc = st.builds(
    lambda h, p: h + p, hostname | st.just("[::1]"), st.just("") | st.integers(1, 65535).map(":{}".format)
)
url_path = st.sampled_from(["", "/", "/v2", "/prefix", "/a/b/", "/x/v2"])
scheme = st.sampled_from(["https://", "http://", ""])  # none: https
caps = st.lists(st.sampled_from(CAPS), min_size=1, max_size=3, unique=True)
rel_path = st.builds(
    lambda a, parts: a + "/".join(parts) + ".pem",
    st.sampled_from(["", "/"]),
    st.lists(st.text(LOWER, min_size=1, max_size=4), min_size=1, max_size=3),
)
header_name = st.text(LOWER + "ABCXYZ-", min_size=1, max_size=10)
header_value = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=10)


@st.composite
def host_table(draw: st.DrawFn) -> dict[str, Any]:
    t: dict[str, Any] = {}
    if draw(st.booleans()):
        c = draw(caps)
        t["capabilities"] = c[0] if len(c) == 1 and draw(st.booleans()) else c
    if draw(st.booleans()):
        t["ca"] = draw(rel_path | st.lists(rel_path, max_size=2))
    if draw(st.booleans()):
        t["skip_verify"] = draw(st.booleans())
    if draw(st.booleans()):
        t["override_path"] = draw(st.booleans())
    if draw(st.booleans()):
        pair = st.lists(rel_path, min_size=1, max_size=2)
        t["client"] = draw(rel_path | pair | st.lists(pair, min_size=1, max_size=2))
    if draw(st.booleans()):
        t["header"] = draw(st.dictionaries(header_name, header_value | st.lists(header_value, max_size=2), max_size=2))
    return t


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    if draw(st.booleans()):
        doc["server"] = draw(scheme) + draw(netloc) + draw(url_path)
        doc.update(draw(host_table()))
    mirrors = draw(st.lists(st.tuples(scheme, netloc, url_path), max_size=3, unique_by=lambda m: m[0] + m[1] + m[2]))
    empty_table: bool = draw(st.booleans())
    if mirrors or empty_table:
        doc["host"] = {s + n + p: draw(host_table()) for s, n, p in mirrors}
    return doc


def expected_host(url: str, t: dict[str, Any], base: str) -> tuple[object, ...]:
    """What a host entry means, from containerd's documentation of hosts.toml."""
    s, _, rest = url.partition("://") if "://" in url else ("https", "", url)
    net, slash, path = rest.partition("/")
    path = (slash + path).rstrip("/")
    if not path:
        path = "/v2"
    elif not t.get("override_path") and not path.endswith("/v2"):
        path += "/v2"
    c = t.get("capabilities", CAPS)
    ca = [t["ca"]] if isinstance(t.get("ca"), str) else t.get("ca", [])
    headers = [(k, x) for k, v in t.get("header", {}).items() for x in ([v] if isinstance(v, str) else v)]
    client = t.get("client", [])
    pairs = [[client]] if isinstance(client, str) else [client] if client and isinstance(client[0], str) else client
    return (s, net, path, frozenset([c] if isinstance(c, str) else c), tuple(os.path.join(base, p) for p in ca),
            tuple((os.path.join(base, p[0]), os.path.join(base, p[1]) if len(p) > 1 else "") for p in pairs),
            t.get("skip_verify", False), tuple(headers))  # fmt: skip


def observed(h: RegistryHost) -> tuple[object, ...]:
    return (h.scheme, h.netloc, h.path, h.capabilities, h.ca, h.client, h.skip_verify, h.headers)


@given(documents(), st.sampled_from([REGISTRY, "_default"]))
def test_well_formed_documents_keep_order_and_settings(doc: dict[str, Any], dir_name: str) -> None:
    hosts, base = load(to_toml(doc), dir_name)
    want = [expected_host(u, t, base) for u, t in doc.get("host", {}).items()]
    if "server" in doc:
        want.append(expected_host(doc["server"], {k: v for k, v in doc.items() if k not in ("server", "host")}, base))
    elif dir_name == REGISTRY or not want:
        want.append(("https", REGISTRY, "/v2", DEFAULT_CAPABILITIES, (), (), False, ()))  # the registry itself, last
    assert [observed(h) for h in hosts] == want


# --- documents that break the rules somewhere

junk: st.SearchStrategy[Any] = st.recursive(
    st.booleans() | st.integers(-5, 5) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=4,
)
HOST_KEYS = ["capabilities", "ca", "client", "skip_verify", "override_path", "header", "capability", "mirrors"]
url_scheme = st.sampled_from(["https://", "http://", "ftp://", "", "://"])
odd_url = st.builds(str.__add__, url_scheme, st.text(max_size=12))
# ASCII only: its delimiters (':', '/', '@', '[', ' ') come up far more often than in any text
plain_url = st.builds(str.__add__, url_scheme, st.text(st.characters(max_codepoint=0x7F), max_size=12))


@st.composite
def damaged(draw: st.DrawFn, urls: st.SearchStrategy[str], tables: bool) -> dict[str, Any]:
    """A well-formed document with some values replaced by anything; ``tables``:
    the tables themselves too (``host``, a host entry, ``header``)."""
    doc = draw(documents())
    hosts = doc.setdefault("host", {})
    hosts.update({u: {} for u in draw(st.lists(urls, max_size=2))})
    for t in [doc, *hosts.values()]:
        for key in draw(st.lists(st.sampled_from(HOST_KEYS), max_size=2)):
            t[key] = draw(junk if tables or key != "header" else st.dictionaries(st.text(max_size=5), junk))
    if draw(st.booleans()):
        doc["server"] = draw(junk)
    if tables and draw(st.booleans()):
        doc["host"] = draw(junk) if draw(st.booleans()) else {**hosts, draw(urls): draw(junk)}
    return doc


@given(damaged(plain_url, tables=False))
@example({"host": {"https://m": {"capabilities": ["fly"]}}})
@example({"server": 3})
@example({"host": {"https://m": {"header": {"x": 1}}}})
@example({"host": {"ftp://m": {}}})
def test_wrong_values_fail_with_a_clear_error(doc: dict[str, Any]) -> None:
    parses_or_fails_cleanly(to_toml(doc))


@given(damaged(plain_url, tables=True))
@example({"host": 1})
@example({"host": {"https://m": 1}})
@example({"host": {"https://m": {"header": 1}}})
def test_wrong_tables_fail_with_a_clear_error(doc: dict[str, Any]) -> None:
    parses_or_fails_cleanly(to_toml(doc))


@given(st.lists(odd_url, min_size=1, max_size=3))
@example(["https://[::1"])
@example(["https://a\uff03b"])
def test_any_host_url_parses_or_fails_cleanly(urls: list[str]) -> None:
    parses_or_fails_cleanly(to_toml({"host": {u: {} for u in urls}}))


HOST_PORT = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?\Z")


@given(st.lists(plain_url, min_size=1, max_size=3))
@example(["https://m:abc"])
@example(["https://a b"])
def test_accepted_hosts_are_host_and_port(urls: list[str]) -> None:
    try:
        hosts, _ = load(to_toml({"host": {u: {} for u in urls}}))
    except FailedPrecondition:
        return
    for h in hosts:
        port = h.netloc.rpartition(":")[2] if h.netloc.count(":") == 1 else ""
        assert HOST_PORT.match(h.netloc) and (not port or int(port) <= 65535), h.netloc


@given(st.binary(max_size=64))
@example(b"\xff")
def test_any_bytes_parse_or_fail_cleanly(data: bytes) -> None:
    parses_or_fails_cleanly(data)


@given(st.text(max_size=64))
@example("[host")
@example('server = "https://m"\nserver = "https://n"')
def test_any_utf8_text_parses_or_fails_cleanly(text: str) -> None:
    parses_or_fails_cleanly(text)

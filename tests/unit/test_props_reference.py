"""Property tests of image reference parsing (cri/images/reference.py)."""

import re
import string

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from cri.errors import CridError, InvalidArgument
from cri.images.reference import NAME_MAX, Reference, parse

LOWER = string.ascii_lowercase + string.digits
HEX = "0123456789abcdef"

# github.com/distribution/reference's grammar, ASCII only and anchored at the
# very end (Go's '$', unlike Python's, does not match before a final newline)
_COMP = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOM = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOM}(?:\.{_DOM})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
GRAMMAR = re.compile(
    rf"(?:{_DOMAIN}/)?{_COMP}(?:/{_COMP})*(?::[\w][\w.-]{{0,127}})?(?:@sha256:[a-f0-9]{{64}})?\Z", re.ASCII
)

alnum = st.text(LOWER, min_size=1, max_size=8)
separator = st.sampled_from([".", "_", "__", "-", "--"])
component = st.builds(
    lambda first, rest: first + "".join(s + a for s, a in rest),
    alnum,
    st.lists(st.tuples(separator, alnum), max_size=3),
)
ALNUM = string.ascii_letters + string.digits
label = st.builds(
    lambda a, b: a + (f"{b}{a}" if b else ""), st.text(ALNUM, min_size=1, max_size=3), st.text(ALNUM + "-", max_size=4)
)
port = st.integers(1, 65535).map(lambda p: f":{p}")
domain = st.one_of(
    st.builds(lambda ls, p: ".".join(ls) + p, st.lists(label, min_size=2, max_size=4), st.just("") | port),
    st.builds(lambda lab, p: lab + p, label, port),
    st.sampled_from(["localhost", "localhost:5000", "127.0.0.1:5000", "[::1]:5000", "[fe80::1]", "Registry"]),
).filter(lambda d: "." in d or ":" in d or d == "localhost" or d.lower() != d)
docker_domain = st.sampled_from(["docker.io", "index.docker.io"])
tag = st.builds(str.__add__, st.text(ALNUM + "_", min_size=1, max_size=1), st.text(ALNUM + "_.-", max_size=20))
digest = st.text(HEX, min_size=64, max_size=64).map(lambda h: f"sha256:{h}")


def _looks_like_domain(first: str) -> bool:
    return "." in first or ":" in first or first == "localhost"


@st.composite
def references(draw: st.DrawFn) -> tuple[str, Reference]:
    """A valid reference as written, and the Reference it must parse to."""
    dom = draw(st.none() | domain | docker_domain)
    comps = draw(st.lists(component, min_size=1, max_size=4))
    if dom is None and len(comps) > 1 and _looks_like_domain(comps[0]):
        comps[0] = comps[0].replace(".", "_")  # else it is read as a registry (docker's rule)
        if comps[0] == "localhost":
            comps[0] = "localhostx"
    t, d = draw(st.none() | tag), draw(st.none() | digest)
    text = "/".join(comps) if dom is None else f"{dom}/{'/'.join(comps)}"
    text += (f":{t}" if t else "") + (f"@{d}" if d else "")
    norm_domain = "docker.io" if dom in (None, "docker.io", "index.docker.io") else dom
    path = "/".join(comps)
    if norm_domain == "docker.io" and len(comps) == 1:
        path = "library/" + path
    return text, Reference(norm_domain, path, t or ("" if d else "latest"), d or "")


@given(references())
@example(("busybox", Reference("docker.io", "library/busybox", "latest")))
@example((f"localhost:5000/a/b:t@sha256:{'0' * 64}", Reference("localhost:5000", "a/b", "t", f"sha256:{'0' * 64}")))
def test_valid_references_parse_to_their_parts_and_round_trip(case: tuple[str, Reference]) -> None:
    text, want = case
    if len(want.name) > NAME_MAX or re.fullmatch(r"[a-f0-9]{64}", text):
        with pytest.raises(InvalidArgument):
            parse(text)
        return
    got = parse(text)
    assert got == want
    assert parse(str(got)) == got  # str is the normal form: parsing it again changes nothing
    assert str(parse(str(got))) == str(got)
    assert got.object == (want.digest or want.tag)


@given(st.lists(component, min_size=1, max_size=3), st.none() | tag)
def test_docker_hub_short_names_normalise_alike(comps: list[str], t: str | None) -> None:
    name = "/".join(comps)
    suffix = f":{t}" if t else ""
    if len(comps) > 1 and _looks_like_domain(comps[0]):
        return  # a registry, not a Docker Hub name
    forms = [name, f"docker.io/{name}", f"index.docker.io/{name}"]
    if len(comps) == 1:
        forms.append(f"library/{name}")
        forms.append(f"docker.io/library/{name}")
    try:
        want = parse(forms[0] + suffix)
    except InvalidArgument:
        return  # too long, or an image id: refused in every form below too
    assert want.domain == "docker.io"
    assert want.path == (f"library/{name}" if len(comps) == 1 else name)
    for form in forms[1:]:
        assert parse(form + suffix) == want, form


@given(references(), digest)
def test_digest_is_kept_and_wins_as_the_object(case: tuple[str, Reference], d: str) -> None:
    base = case[0].split("@")[0]
    try:
        got = parse(f"{base}@{d}")
    except InvalidArgument:
        return  # the name part is too long
    assert got.digest == d and got.object == d
    assert got.with_digest(d) == f"{got.name}@{d}"
    assert got.tag == base.rpartition("/")[2].partition(":")[2]  # only a tag written stays with a digest


bad_digest = st.one_of(
    st.text(HEX, max_size=80).filter(lambda h: len(h) != 64).map(lambda h: f"sha256:{h}"),
    st.text(HEX + "ABCDEFG", min_size=64, max_size=64).filter(lambda h: not set(h) <= set(HEX)).map("sha256:".__add__),
    st.builds(lambda a, h: f"{a}:{h}", st.sampled_from(["sha512", "md5", "sha384", "SHA256", ""]), st.text(HEX)),
    st.text(max_size=20),
)


@given(references(), bad_digest)
def test_bad_digests_are_refused(case: tuple[str, Reference], d: str) -> None:
    base = case[0].split("@")[0]
    with pytest.raises(InvalidArgument, match=r"digest|invalid"):
        parse(f"{base}@{d}")


# an ASCII reference broken in one place, by characters ASCII and not
odd_char = st.sampled_from(list("\n\r\t \x00/:@.-_A~\u00e9\u00b2\u0660\u017f\u212a")) | st.characters()


@st.composite
def mutated(draw: st.DrawFn) -> str:
    text = draw(references())[0]
    where = draw(st.integers(0, len(text)))
    how = draw(st.sampled_from(["insert", "replace", "delete"]))
    ch = draw(odd_char)
    if how == "insert":
        return text[:where] + ch + text[where:]
    if how == "replace":
        return text[:where] + ch + text[where + 1 :]
    return text[:where] + text[where + 1 :]


@given(st.text(max_size=300) | mutated())
@example("a" * 64)
@example("x" * 300)
def test_any_text_parses_or_raises_invalid_argument(text: str) -> None:
    try:
        ref = parse(text)
    except InvalidArgument:
        return
    except CridError as exc:
        raise AssertionError(f"{type(exc).__name__} instead of InvalidArgument") from exc
    assert parse(str(ref)) == ref


@given(mutated())
@example("busybox\n")  # the minimal cases hypothesis finds: each fails now, and quickly
@example("busybox:é")
def test_accepted_references_are_in_the_grammar(text: str) -> None:
    try:
        ref = parse(text)
    except InvalidArgument:
        return
    assert GRAMMAR.match(text), f"{text!r} is accepted as {ref}"
    assert GRAMMAR.match(str(ref)), f"{text!r} normalises to {str(ref)!r}"

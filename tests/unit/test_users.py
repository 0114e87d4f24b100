"""Image user resolution: CRI security context and image USER against the rootfs' passwd and group."""

import os
from pathlib import Path

import pytest

from cri.api.v1 import api_pb2 as pb
from cri.errors import InvalidArgument
from cri.runtime.users import open_in_root, parse_group, parse_passwd, read_in_root, resolve_user

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
# a comment
daemon:x:1:1::/:/bin/false
broken:x:notanumber:1::/:/bin/false
app:x:1000:1000::/home/app:/bin/sh
web:x:1001:2000::/:/bin/sh
nobody:x:65534:65534::/:/bin/false
"""
GROUP = """\
root:x:0:
wheel:x:10:root,app
audio:x:29:app, web
app:x:1000:app
webgrp:x:2000:
nogroup:x:65534:
"""


def make_rootfs(root: Path, passwd: str | None = PASSWD, group: str | None = GROUP) -> Path:
    (root / "etc").mkdir(parents=True)
    if passwd is not None:
        (root / "etc" / "passwd").write_text(passwd)
    if group is not None:
        (root / "etc" / "group").write_text(group)
    return root


@pytest.fixture
def rootfs(tmp_path: Path) -> str:
    return str(make_rootfs(tmp_path / "rootfs"))


def sc(**kw: object) -> pb.LinuxContainerSecurityContext:
    return pb.LinuxContainerSecurityContext(**kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------- image USER


@pytest.mark.parametrize(
    ("image_user", "uid", "gid"),
    [
        ("", 0, 0),
        ("0", 0, 0),
        ("1000", 1000, 1000),
        ("app", 1000, 1000),
        ("web", 1001, 2000),
        ("1000:10", 1000, 10),
        ("app:wheel", 1000, 10),
        ("1000:wheel", 1000, 10),
        ("app:29", 1000, 29),
        ("4242", 4242, 0),  # a uid the image does not know runs in group 0
        ("4242:4343", 4242, 4343),
        (":10", 0, 10),
        ("1000:", 1000, 0),
    ],
)
def test_image_user_forms(rootfs: str, image_user: str, uid: int, gid: int) -> None:
    got_uid, got_gid, gids = resolve_user(rootfs, image_user, sc())
    assert (got_uid, got_gid) == (uid, gid)
    assert gid in gids


def test_unknown_image_user_names_it(rootfs: str) -> None:
    with pytest.raises(InvalidArgument, match="ghost"):
        resolve_user(rootfs, "ghost", sc())
    with pytest.raises(InvalidArgument, match="ghost"):
        resolve_user(rootfs, "ghost:wheel", sc())


def test_unknown_image_group_names_it(rootfs: str) -> None:
    with pytest.raises(InvalidArgument, match="staff"):
        resolve_user(rootfs, "app:staff", sc())


@pytest.mark.parametrize("bad", ["a:b:c", "99999999999", "1:99999999999"])
def test_invalid_image_user(rootfs: str, bad: str) -> None:
    with pytest.raises(InvalidArgument):
        resolve_user(rootfs, bad, sc())


def test_names_need_passwd(tmp_path: Path) -> None:
    root = str(make_rootfs(tmp_path / "r", passwd=None, group=None))
    assert resolve_user(root, "1000", sc()) == (1000, 0, [0])
    with pytest.raises(InvalidArgument, match="app"):
        resolve_user(root, "app", sc())


def test_no_etc_at_all(tmp_path: Path) -> None:
    (tmp_path / "r").mkdir()
    assert resolve_user(str(tmp_path / "r"), "", sc()) == (0, 0, [0])


# ---------------------------------------------------------------- CRI security context


def test_run_as_user_overrides_image_user(rootfs: str) -> None:
    uid, gid, _ = resolve_user(rootfs, "web", sc(run_as_user=pb.Int64Value(value=1000)))
    assert (uid, gid) == (1000, 1000)


def test_run_as_user_zero_is_set_not_unset(rootfs: str) -> None:
    uid, gid, _ = resolve_user(rootfs, "app", sc(run_as_user=pb.Int64Value(value=0)))
    assert (uid, gid) == (0, 0)


def test_run_as_user_unknown_uid_gets_group_zero(rootfs: str) -> None:
    assert resolve_user(rootfs, "", sc(run_as_user=pb.Int64Value(value=5555)))[:2] == (5555, 0)


def test_run_as_group(rootfs: str) -> None:
    ctx = sc(run_as_user=pb.Int64Value(value=1000), run_as_group=pb.Int64Value(value=3000))
    uid, gid, gids = resolve_user(rootfs, "", ctx)
    assert (uid, gid) == (1000, 3000)
    assert 3000 in gids


def test_run_as_group_needs_a_user(rootfs: str) -> None:
    with pytest.raises(InvalidArgument, match="run_as_group"):
        resolve_user(rootfs, "app", sc(run_as_group=pb.Int64Value(value=10)))


def test_run_as_username(rootfs: str) -> None:
    assert resolve_user(rootfs, "", sc(run_as_username="web"))[:2] == (1001, 2000)
    ctx = sc(run_as_username="web", run_as_group=pb.Int64Value(value=10))
    assert resolve_user(rootfs, "", ctx)[:2] == (1001, 10)


def test_run_as_username_not_found_names_it(rootfs: str) -> None:
    with pytest.raises(InvalidArgument, match="'nosuchuser'"):
        resolve_user(rootfs, "", sc(run_as_username="nosuchuser"))


def test_username_wins_over_uid(rootfs: str) -> None:
    ctx = sc(run_as_user=pb.Int64Value(value=1000), run_as_username="web")
    assert resolve_user(rootfs, "", ctx)[0] == 1001


@pytest.mark.parametrize("field", ["run_as_user", "run_as_group"])
def test_negative_ids_rejected(rootfs: str, field: str) -> None:
    kw: dict[str, object] = {"run_as_user": pb.Int64Value(value=1)}
    kw[field] = pb.Int64Value(value=-1)
    with pytest.raises(InvalidArgument, match="out of range"):
        resolve_user(rootfs, "", sc(**kw))


# ---------------------------------------------------------------- supplemental groups


def test_merge_adds_image_groups_and_cri_groups(rootfs: str) -> None:
    # app is listed in wheel and audio; its own group "app" is the primary one
    _, gid, gids = resolve_user(rootfs, "app", sc(supplemental_groups=[5000, 10]))
    assert gid == 1000
    assert gids == [10, 29, 1000, 5000]


def test_merge_finds_groups_by_uid(rootfs: str) -> None:
    assert resolve_user(rootfs, "1000", sc())[2] == [10, 29, 1000]
    assert resolve_user(rootfs, "", sc(run_as_user=pb.Int64Value(value=1001)))[2] == [29, 2000]


def test_merge_for_root_by_default(rootfs: str) -> None:
    assert resolve_user(rootfs, "", sc()) == (0, 0, [0, 10])


def test_strict_only_cri_groups(rootfs: str) -> None:
    ctx = sc(supplemental_groups=[1234], supplemental_groups_policy=pb.Strict)
    assert resolve_user(rootfs, "app", ctx) == (1000, 1000, [1000, 1234])


def test_critest_supplemental_groups_shape(rootfs: str) -> None:
    # critest: image user 1000, supplemental 1234 -> `id -G` prints "1000 1234"
    ctx = sc(run_as_user=pb.Int64Value(value=1000), supplemental_groups=[1234], supplemental_groups_policy=pb.Strict)
    assert resolve_user(rootfs, "", ctx) == (1000, 1000, [1000, 1234])


def test_bad_supplemental_group(rootfs: str) -> None:
    with pytest.raises(InvalidArgument):
        resolve_user(rootfs, "", sc(supplemental_groups=[-5]))


# ---------------------------------------------------------------- parsing


def test_parse_passwd_skips_comments_and_malformed() -> None:
    names = [p.name for p in parse_passwd(PASSWD + "\nshort:x\n\n")]
    assert names == ["root", "daemon", "app", "web", "nobody"]


def test_parse_group_members() -> None:
    groups = {g.name: g for g in parse_group(GROUP)}
    assert groups["audio"].members == ("app", "web")
    assert groups["root"].members == ()
    assert groups["wheel"].gid == 10


def test_first_passwd_match_wins(tmp_path: Path) -> None:
    root = str(make_rootfs(tmp_path / "r", passwd="dup:x:1:1::/:/\ndup:x:2:2::/:/\n"))
    assert resolve_user(root, "dup", sc())[:2] == (1, 1)


# ---------------------------------------------------------------- reading safely inside the rootfs


def test_absolute_symlink_stays_in_rootfs(tmp_path: Path) -> None:
    root = make_rootfs(tmp_path / "r", passwd=None)
    (root / "real").mkdir()
    (root / "real" / "passwd").write_text("inside:x:7:7::/:/\n")
    (root / "etc" / "passwd").symlink_to("/real/passwd")
    assert resolve_user(str(root), "inside", sc())[:2] == (7, 7)


def test_dotdot_symlink_cannot_escape(tmp_path: Path) -> None:
    # ../../../../etc/passwd from inside the rootfs is the rootfs' own /etc/passwd-real
    root = make_rootfs(tmp_path / "r", passwd=None)
    (root / "etc" / "passwd-real").write_text("mine:x:8:8::/:/\n")
    (root / "etc" / "passwd").symlink_to("../../../../../../etc/passwd-real")
    assert resolve_user(str(root), "mine", sc())[:2] == (8, 8)
    # and a link to the host's /etc/passwd only finds the rootfs' file of that name
    (root / "etc" / "passwd").unlink()
    (root / "etc" / "passwd").symlink_to("/etc/passwd")
    with pytest.raises(InvalidArgument):
        read_in_root(str(root), "/etc/passwd")


def test_symlinked_etc_directory(tmp_path: Path) -> None:
    root = tmp_path / "r"
    (root / "data" / "etc").mkdir(parents=True)
    (root / "data" / "etc" / "passwd").write_text("linked:x:9:9::/:/\n")
    (root / "etc").symlink_to("/data/etc")
    assert resolve_user(str(root), "linked", sc())[:2] == (9, 9)


def test_host_file_not_reachable(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "passwd").write_text("host:x:1:1::/:/\n")
    root = make_rootfs(tmp_path / "r", passwd=None)
    (root / "etc" / "passwd").symlink_to(str(outside / "passwd"))
    assert read_in_root(str(root), "/etc/passwd") is None
    with pytest.raises(InvalidArgument, match="host"):
        resolve_user(str(root), "host", sc())


def test_symlink_loop(tmp_path: Path) -> None:
    root = make_rootfs(tmp_path / "r", passwd=None)
    (root / "etc" / "passwd").symlink_to("/etc/passwd")
    with pytest.raises(InvalidArgument, match="symlink"):
        read_in_root(str(root), "/etc/passwd")


def test_fifo_is_not_read(tmp_path: Path) -> None:
    root = make_rootfs(tmp_path / "r", passwd=None)
    os.mkfifo(root / "etc" / "passwd")
    with pytest.raises(InvalidArgument, match="regular file"):
        read_in_root(str(root), "/etc/passwd")


def test_directory_is_not_read(tmp_path: Path) -> None:
    root = make_rootfs(tmp_path / "r", passwd=None)
    (root / "etc" / "passwd").mkdir()
    with pytest.raises(InvalidArgument):
        read_in_root(str(root), "/etc/passwd")


def test_file_in_place_of_directory(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    (root / "etc").write_text("not a dir")
    assert read_in_root(str(root), "/etc/passwd") is None


def test_open_in_root_reads(tmp_path: Path) -> None:
    root = make_rootfs(tmp_path / "r")
    fd = open_in_root(str(root), "etc/./passwd")
    with os.fdopen(fd) as f:
        assert f.read() == PASSWD


def test_huge_file_rejected(tmp_path: Path) -> None:
    root = make_rootfs(tmp_path / "r", passwd=None)
    with open(root / "etc" / "passwd", "wb") as f:
        f.truncate((10 << 20) + 1)
    with pytest.raises(InvalidArgument, match="larger"):
        read_in_root(str(root), "/etc/passwd")


def test_an_image_s_files_are_parsed_once(tmp_path: Path) -> None:
    """With an image id, the files of another container of that image are not read again (they
    are the same files); without one, or for another image, they are."""
    first, second = make_rootfs(tmp_path / "one"), make_rootfs(tmp_path / "two", PASSWD.replace("1000:1000", "7:7"))
    image = f"sha256:{os.urandom(32).hex()}"
    assert resolve_user(str(first), "app", sc(), image)[:2] == (1000, 1000)
    assert resolve_user(str(second), "app", sc(), image)[:2] == (1000, 1000)  # the image's, parsed before
    assert resolve_user(str(second), "app", sc(), f"sha256:{os.urandom(32).hex()}")[:2] == (7, 7)
    assert resolve_user(str(second), "app", sc())[:2] == (7, 7)
    (second / "etc" / "group").unlink()
    assert resolve_user(str(second), "app:wheel", sc(), image)[:2] == (1000, 10)  # its group too

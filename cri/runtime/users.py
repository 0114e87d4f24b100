"""Who a container's first process runs as.

The CRI security context (run_as_user / run_as_username / run_as_group,
supplemental groups and their policy) and the image's USER are resolved
against the image's own /etc/passwd and /etc/group, with containerd's rules
(oci.WithUser, WithUserID, WithUsername, WithAdditionalGIDs). Those files are
read from the container rootfs with every symlink resolved inside the rootfs,
so an image cannot make crid read a host file.
"""

import errno
import os
import stat
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cri.api.v1 import api_pb2 as pb
from cri.errors import InvalidArgument

# runc refuses ids above MaxInt32 (the kernel would take up to 2^32-2); containerd follows runc
MAX_ID = 2**31 - 1
MAX_FILE_BYTES = 10 << 20  # like containerd: a passwd bigger than this is not a real one
MAX_SYMLINKS = 40  # the kernel's limit on links followed in one lookup


@dataclass(frozen=True)
class Passwd:
    name: str
    uid: int
    gid: int


@dataclass(frozen=True)
class Group:
    name: str
    gid: int
    members: tuple[str, ...]


def open_in_root(root: str, path: str) -> int:
    """Open ``path`` read-only as if ``root`` were ``/``: absolute symlinks and
    ``..`` never leave ``root``. Only regular files are opened (a FIFO would
    block). Raises FileNotFoundError / NotADirectoryError / OSError."""
    stack = [os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)]
    todo = deque(p for p in path.split("/") if p not in ("", "."))
    links = 0
    try:
        while todo:
            name = todo.popleft()
            if name == "..":
                if len(stack) > 1:
                    os.close(stack.pop())
                continue
            fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=stack[-1])
            st = os.fstat(fd)
            if stat.S_ISLNK(st.st_mode):
                os.close(fd)
                links += 1
                if links > MAX_SYMLINKS:
                    raise OSError(errno.ELOOP, f"too many symlinks resolving {path}")
                target = os.readlink(name, dir_fd=stack[-1])
                if target.startswith("/"):
                    while len(stack) > 1:
                        os.close(stack.pop())
                todo.extendleft(reversed([p for p in target.split("/") if p not in ("", ".")]))
                continue
            if not todo:
                os.close(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise OSError(errno.EINVAL, f"{path} is not a regular file")
                # O_NOFOLLOW: the name was not a symlink a moment ago and must not have become one
                out = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=stack[-1])
                if not stat.S_ISREG(os.fstat(out).st_mode):
                    os.close(out)
                    raise OSError(errno.EINVAL, f"{path} is not a regular file")
                return out
            if not stat.S_ISDIR(st.st_mode):
                os.close(fd)
                raise NotADirectoryError(errno.ENOTDIR, f"{path}: {name} is not a directory")
            stack.append(fd)
        raise OSError(errno.EISDIR, f"{path} is a directory")
    finally:
        for fd in stack:
            os.close(fd)


def read_in_root(root: str, path: str) -> str | None:
    """The text of ``path`` inside ``root``; None when it does not exist."""
    try:
        fd = open_in_root(root, path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise InvalidArgument(f"cannot read {path} in the container image: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as f:
        data = f.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise InvalidArgument(f"{path} in the container image is larger than {MAX_FILE_BYTES} bytes")
    return data.decode("utf-8", errors="replace")


def _id(text: str) -> int | None:
    text = text.strip()
    if not text.isdigit():
        return None
    value = int(text)
    return value if value <= MAX_ID else None


def _records(text: str, min_fields: int) -> list[list[str]]:
    """The colon-separated records of a passwd/group file; comments, blanks and short lines skipped."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            fields = line.split(":")
            if len(fields) >= min_fields:
                out.append(fields)
    return out


def parse_passwd(text: str) -> list[Passwd]:
    """name:password:uid:gid:gecos:home:shell lines; lines with non-numeric
    ids are skipped (they can match no one)."""
    out = []
    for fields in _records(text, 4):
        uid, gid = _id(fields[2]), _id(fields[3])
        if uid is None or gid is None:
            continue
        out.append(Passwd(fields[0], uid, gid))
    return out


def parse_group(text: str) -> list[Group]:
    """name:password:gid:member,member lines."""
    out = []
    for fields in _records(text, 3):
        gid = _id(fields[2])
        if gid is None:
            continue
        members = tuple(m.strip() for m in fields[3].split(",") if m.strip()) if len(fields) > 3 else ()
        out.append(Group(fields[0], gid, members))
    return out


# (image id, file) -> its parsed entries: every container of an image starts from the same files
# (its upper dir is still empty at CreateContainer), and an image id names its content
_PARSED: dict[tuple[str, str], tuple[Any, ...]] = {}
_PARSED_LIMIT = 256  # entries; all are dropped when it is reached (an image is rarely one of that many)


class _Files:
    """The image's passwd and group, read once and only when needed; with ``image_id``, parsed once
    per image."""

    def __init__(self, rootfs: str, image_id: str = "") -> None:
        self.rootfs = rootfs
        self.image_id = image_id
        self._passwd: tuple[Passwd, ...] | None = None
        self._group: tuple[Group, ...] | None = None

    def _parsed(self, path: str, parse: Callable[[str], list[Any]]) -> tuple[Any, ...]:
        key = (self.image_id, path)
        found = _PARSED.get(key) if self.image_id else None
        if found is None:
            found = tuple(parse(read_in_root(self.rootfs, path) or ""))
            if self.image_id:
                if len(_PARSED) >= _PARSED_LIMIT:
                    _PARSED.clear()
                _PARSED[key] = found
        return found

    def passwd(self) -> tuple[Passwd, ...]:
        if self._passwd is None:
            self._passwd = self._parsed("/etc/passwd", parse_passwd)
        return self._passwd

    def group(self) -> tuple[Group, ...]:
        if self._group is None:
            self._group = self._parsed("/etc/group", parse_group)
        return self._group

    def user_by_name(self, name: str) -> Passwd:
        for p in self.passwd():
            if p.name == name:
                return p
        raise InvalidArgument(f"user {name!r} not found in the image's /etc/passwd")

    def user_by_uid(self, uid: int) -> Passwd | None:
        return next((p for p in self.passwd() if p.uid == uid), None)

    def gid_by_name(self, name: str) -> int:
        for g in self.group():
            if g.name == name:
                return g.gid
        raise InvalidArgument(f"group {name!r} not found in the image's /etc/group")


def _numeric(part: str, what: str, userstr: str) -> int | None:
    """A decimal id, None for a name; out-of-range numbers are errors, not names."""
    if part.isdigit():
        value = int(part)
        if value > MAX_ID:
            raise InvalidArgument(f"invalid user {userstr!r}: {what} out of range")
        return value
    return None


def _uid_gid(files: _Files, userstr: str) -> tuple[int, int]:
    """containerd's oci.WithUser: "uid", "name", "uid:gid", "name:group", "uid:group", "name:gid"."""
    if userstr == "":
        return 0, 0
    parts = userstr.split(":")
    if len(parts) == 1:
        uid = _numeric(parts[0], "uid", userstr)
        if uid is None:
            entry = files.user_by_name(parts[0])
            return entry.uid, entry.gid
        found = files.user_by_uid(uid)
        # a uid the image does not know still runs, in group 0
        return uid, found.gid if found else 0
    if len(parts) != 2:
        raise InvalidArgument(f"invalid user {userstr!r}: expected user or user:group")
    user, group = parts
    uid = _numeric(user, "uid", userstr)
    gid = _numeric(group, "gid", userstr)
    # an empty part is neither a number nor a name to look up: it stays 0, as in containerd
    if uid is None:
        uid = files.user_by_name(user).uid if user else 0
    if gid is None:
        gid = files.gid_by_name(group) if group else 0
    return uid, gid


def _file_groups(files: _Files, user: str) -> list[int]:
    """Groups of the image's /etc/group that list the user (by name, or by the
    name of its uid), except the one named like the user (its primary group)."""
    if user.isdigit():
        entry = files.user_by_uid(int(user))
        if entry is None:
            return []
        user = entry.name
    return [g.gid for g in files.group() if g.name != user and user in g.members]


def resolve_user(
    rootfs: str, image_user: str, sc: pb.LinuxContainerSecurityContext, image_id: str = ""
) -> tuple[int, int, list[int]]:
    """uid, gid and additional gids (sorted, including the primary gid) of the
    container's first process. ``image_id``: the image the rootfs is a fresh copy of (its
    files are parsed once)."""
    group_override = sc.run_as_group.value if sc.HasField("run_as_group") else None
    user = ""
    if sc.HasField("run_as_user"):
        if sc.run_as_user.value < 0 or sc.run_as_user.value > MAX_ID:
            raise InvalidArgument(f"run_as_user {sc.run_as_user.value} is out of range")
        user = str(sc.run_as_user.value)
    if sc.run_as_username:
        user = sc.run_as_username  # containerd: the name wins when both are given
    if group_override is not None:
        if not user:
            raise InvalidArgument("run_as_group is set without run_as_user or run_as_username")
        if group_override < 0 or group_override > MAX_ID:
            raise InvalidArgument(f"run_as_group {group_override} is out of range")
    userstr = (f"{user}:{group_override}" if group_override is not None else user) if user else image_user
    files = _Files(rootfs, image_id)
    uid, gid = _uid_gid(files, userstr)

    gids = {gid}
    if sc.supplemental_groups_policy == pb.Merge:
        # containerd looks the groups up by the user part alone ("0" when nothing names a user)
        gids.update(_file_groups(files, user or image_user.split(":", 1)[0] or "0"))
    elif sc.supplemental_groups_policy != pb.Strict:
        raise InvalidArgument(f"unknown supplemental_groups_policy {sc.supplemental_groups_policy}")
    for g in sc.supplemental_groups:
        if g < 0 or g > MAX_ID:
            raise InvalidArgument(f"supplemental group {g} is out of range")
        gids.add(g)
    return uid, gid, sorted(gids)

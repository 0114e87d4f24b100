"""The merged view of a layer's lower layers, as overlayfs shows it, for the unpacker.

A layer's unpack reads the layers below it for three things only: the owner
and mode of a directory it implies (copied from the lower directory, through
the lower layers' symlinks), refusing a path through a lower non-directory,
and copying up a lower file it hardlinks. Lower layers are only read, one
checked component at a time, never through one of their symlinks onto the
host.
"""

import os
import stat

OPAQUE_XATTR = "trusted.overlay.opaque"
_SYMLINK_DEPTH = 40  # as the kernel's limit on nested symlinks


def is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def is_opaque(path: str) -> bool:
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def link_parts(parts: list[str], linkname: str) -> list[str]:
    """Where the symlink at ``parts`` points, as components from the root;
    ``..`` stops at the root, as inside a chroot."""
    out = [] if linkname.startswith("/") else list(parts[:-1])
    for comp in linkname.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if out:
                out.pop()
        else:
            out.append(comp)
    return out


class LowerView:
    def __init__(self, lowers: list[str]) -> None:
        self.lowers = lowers  # top-most first

    def entry(self, parts: list[str]) -> tuple[str, os.stat_result] | None:
        """The entry at ``parts`` in the merged view of the lower layers, as
        overlayfs shows it: (its path, its lstat), or None when absent, whited
        out, or below a component that is not a directory there (which this
        layer's own directory then hides). Each layer is walked one checked
        component at a time, so no host symlink is ever followed."""
        layers = self.lowers
        found: tuple[str, os.stat_result] | None = None
        for i in range(len(parts)):
            if found is not None and not stat.S_ISDIR(found[1].st_mode):
                return None
            rel = os.path.join(*parts[: i + 1])
            found, below = None, []
            for lower in layers:
                path = os.path.join(lower, rel)
                try:
                    st = os.lstat(path)
                except (FileNotFoundError, NotADirectoryError):
                    continue
                if is_whiteout(st) or (found is not None and not stat.S_ISDIR(st.st_mode)):
                    break
                if found is None:
                    found = (path, st)
                if not stat.S_ISDIR(st.st_mode):
                    break
                below.append(lower)
                if is_opaque(path):
                    break
            if found is None:
                return None
            layers = below
        return found

    def directory(self, parts: list[str], depth: int = 0) -> os.stat_result | None:
        """The directory at ``parts`` in the lower layers' view, following
        their symlinks inside the image; None if it is not a directory."""
        for i in range(len(parts)):
            hit = self.entry(parts[: i + 1])
            if hit is None:
                return None
            path, st = hit
            if stat.S_ISLNK(st.st_mode):
                if depth >= _SYMLINK_DEPTH:
                    return None
                target = link_parts(parts[: i + 1], os.readlink(path))
                return self.directory(target + parts[i + 1 :], depth + 1)
            if not stat.S_ISDIR(st.st_mode):
                return None
            if i == len(parts) - 1:
                return st
        return None

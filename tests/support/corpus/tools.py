"""The image tools of the corpus (buildah, umoci, skopeo, mmdebstrap, GNU tar and gzip), run so that
everything they write stays under one work dir.

Each command runs in a private mount namespace (``unshare --mount``): whatever the tool mounts (buildah's
overlay storage, mmdebstrap's /proc and /dev in its chroot) goes away with it, even when it dies. For
buildah, umoci and skopeo an empty dir of the work dir is bound over /var/lib in that namespace: as root,
containers/image keeps its blob-info cache in /var/lib/containers/cache with no option to move it.
``TMPDIR`` points into the work dir too (containers/image and mmdebstrap put big temporary files there).
"""

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

# Debian package of each command
PACKAGES = {
    "buildah": "buildah",
    "umoci": "umoci",
    "skopeo": "skopeo",
    "mmdebstrap": "mmdebstrap",
    "tar": "tar",
    "gzip": "gzip",
    "unshare": "util-linux",
    "busybox": "busybox-static",
}

# sh -c program: bind the first argument over /var/lib, then run the rest
_BIND_VARLIB = 'mount --bind "$1" /var/lib && shift && exec "$@"'

Log = Callable[[str], None]


def missing_tools(names: Sequence[str] = tuple(PACKAGES)) -> list[str]:
    """``name (package)`` of each tool that is not installed."""
    return [f"{n} ({PACKAGES.get(n, n)})" for n in names if shutil.which(n) is None]


class ToolError(RuntimeError):
    def __init__(self, argv: Sequence[str], code: int, output: str) -> None:
        shown = " ".join(a if len(a) < 200 else a[:60] + f"...<{len(a)} chars>" for a in argv)
        super().__init__(f"{shown}: exit {code}\n{output[-4000:]}")
        self.code = code
        self.output = output


class Tools:
    """Runs the tools with their state in ``work``: buildah's storage (``storage``, ``runroot``), the
    /var/lib stand-in, temporary files. ``log`` gets one line per command with its duration."""

    def __init__(self, work: Path, log: Log | None = None) -> None:
        self.work = work
        self.storage = work / "storage"
        self.runroot = work / "runroot"
        self.varlib = work / "varlib"
        self.tmp = work / "tmp"
        for d in (self.storage, self.runroot, self.varlib, self.tmp):
            d.mkdir(parents=True, exist_ok=True)
        self.auth_file = work / "auth.json"
        self.auth_file.write_text('{"auths": {}}\n')
        self.log = log or (lambda _line: None)
        self._driver: str | None = None

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BUILDAH_", "CONTAINERS_", "REGISTRY_AUTH"))}
        env.update(
            TMPDIR=str(self.tmp),
            BUILDAH_ISOLATION="chroot",
            # no registry auth file from the invoking user
            REGISTRY_AUTH_FILE=str(self.auth_file),
            LC_ALL="C.UTF-8",
        )
        return env

    def run(self, argv: Sequence[str], *, varlib: bool = True, cwd: Path | None = None, timeout: float = 900) -> str:
        """Run ``argv`` in a private mount namespace; its stdout+stderr, or ToolError."""
        wrapped = ["unshare", "--mount", "--propagation", "private"]
        if varlib:
            wrapped += ["sh", "-c", _BIND_VARLIB, "sh", str(self.varlib)]
        t0 = time.monotonic()
        proc = subprocess.run(
            [*wrapped, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            env=self.env(),
            cwd=cwd,
            timeout=timeout,
        )
        self.log(f"{time.monotonic() - t0:6.2f}s {' '.join(a if len(a) < 80 else a[:40] + '...' for a in argv[:8])}")
        if proc.returncode != 0:
            raise ToolError(argv, proc.returncode, proc.stdout)
        return proc.stdout

    def to_file(self, argv: Sequence[str], path: Path, cwd: Path | None = None) -> Path:
        """Run ``argv`` (no namespace: GNU tar, gzip) with its stdout written to ``path``."""
        t0 = time.monotonic()
        with open(path, "wb") as f:
            proc = subprocess.run(argv, stdout=f, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=cwd)
        self.log(f"{time.monotonic() - t0:6.2f}s {' '.join(argv[:8])} > {path.name}")
        if proc.returncode != 0:
            raise ToolError(argv, proc.returncode, proc.stderr.decode(errors="replace"))
        return path

    # ------------------------------------------------------------ the tools

    @property
    def storage_driver(self) -> str:
        """overlay where the work dir's filesystem can be an overlay upper dir (it gives buildah's
        deleted-and-recreated directories as opaque dirs), else vfs."""
        if self._driver is None:
            probe = self.tmp / "overlay-probe"
            for sub in ("lower", "upper", "work", "merged"):
                (probe / sub).mkdir(parents=True, exist_ok=True)
            opts = f"lowerdir={probe}/lower,upperdir={probe}/upper,workdir={probe}/work"
            try:
                self.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(probe / "merged")], varlib=False)
                self._driver = "overlay"
            except ToolError:
                self._driver = "vfs"
            shutil.rmtree(probe, ignore_errors=True)
        return self._driver

    def buildah(self, *args: str, cwd: Path | None = None) -> str:
        base = ["buildah", "--root", str(self.storage), "--runroot", str(self.runroot)]
        return self.run([*base, "--storage-driver", self.storage_driver, *args], cwd=cwd)

    def umoci(self, *args: str) -> str:
        return self.run(["umoci", *args])

    def skopeo(self, *args: str) -> str:
        return self.run(["skopeo", *args])

    def version(self, name: str) -> str:
        """First line of ``name --version``: part of the cache key."""
        out = subprocess.run([name, "--version"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
        return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr).strip() else name

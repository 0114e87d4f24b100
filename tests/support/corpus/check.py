"""The check an image's container runs: a POSIX sh script (busybox ash or dash) that looks at the files
the image's layers leave and prints one ``corpus-check FAIL: ...`` line for each thing that is wrong,
then ``corpus-check ok: N checks`` and exit 0, or ``corpus-check FAILED: ...`` and exit 1.

    c = Check()
    c.has("/layers/1", "one")       # a file of layer 1 reads "one"
    c.gone("/data/old")             # deleted by a whiteout
    c.only("/data/opq", "c")        # an opaque dir: nothing of the lower layers
    c.symlink("/lib", "usr/lib")
    command = c.command()           # ["/bin/sh", "-c", script]
"""

import shlex
from dataclasses import dataclass, field

OK_PREFIX = "corpus-check ok: "
FAIL_PREFIX = "corpus-check FAIL: "

_PRELUDE = r"""
n=0; bad=0
pass() { n=$((n+1)); }
fail() { bad=$((bad+1)); echo "corpus-check FAIL: $*"; }
desc() { ls -ld "$1" 2>&1; }
has() { got=$(cat "$1" 2>&1); if [ "$got" = "$2" ]; then pass; else fail "$1 should read '$2': '$got'"; fi; }
gone() { if [ -e "$1" ] || [ -L "$1" ]; then fail "$1 should be gone (whiteout): $(desc "$1")"; else pass; fi; }
isfile() { if [ -f "$1" ] && [ ! -L "$1" ]; then pass; else fail "$1 should be a regular file: $(desc "$1")"; fi; }
isdir() { if [ -d "$1" ] && [ ! -L "$1" ]; then pass; else fail "$1 should be a directory: $(desc "$1")"; fi; }
symlink() {
  got=$(readlink "$1" 2>&1)
  if [ -L "$1" ] && [ "$got" = "$2" ]; then pass; else fail "$1 should be a symlink to '$2': $(desc "$1")"; fi
}
only() {
  d=$1; shift; got=$(ls -A "$d" 2>&1 | tr '\n' ' '); got=${got% }
  if [ "$got" = "$*" ]; then pass; else fail "$d should hold only '$*': '$got'"; fi
}
contains() {
  d=$1; shift; got=" $(ls -A "$d" 2>&1 | tr '\n' ' ')"
  for e in "$@"; do case "$got" in *" $e "*) pass ;; *) fail "$d should hold '$e': '$got'" ;; esac; done
}
setuid() { if [ -u "$1" ]; then pass; else fail "$1 should be setuid: $(desc "$1")"; fi; }
stats() {
  got=$(stat -c '%a %u:%g' "$1" 2>&1)
  if [ "$got" = "$2" ]; then pass; else fail "$1 should be '$2' (mode uid:gid): '$got'"; fi
}
samestat() {
  a=$(stat -c '%a %u:%g' "$1" 2>&1); b=$(stat -c '%a %u:%g' "$2" 2>&1)
  if [ "$a" = "$b" ]; then pass; else fail "$1 ($a) should have the mode and owner of $2 ($b)"; fi
}
hardlinks() {
  a=$(stat -c '%i' "$1" 2>&1); b=$(stat -c '%i' "$2" 2>&1)
  if [ -f "$1" ] && [ "$a" = "$b" ]; then pass; else fail "$1 and $2 should be one inode (hard links): $a, $b"; fi
}
prints() {
  want=$1; shift; got=$("$@" 2>&1)
  if [ "$got" = "$want" ]; then pass; else fail "'$*' should print '$want': '$got'"; fi
}
"""

_EPILOGUE = r"""
if [ "$bad" -eq 0 ]; then echo "corpus-check ok: $n checks"; exit 0; fi
echo "corpus-check FAILED: $bad of $((n+bad)) checks"; exit 1
"""


@dataclass
class Check:
    """Checks of one image, in order; ``count`` is how many a passing run reports."""

    lines: list[str] = field(default_factory=list)
    count: int = 0

    def _add(self, fn: str, *args: str, checks: int = 1) -> "Check":
        self.lines.append(" ".join([fn, *(shlex.quote(a) for a in args)]))
        self.count += checks
        return self

    def has(self, path: str, text: str) -> "Check":
        """``path`` reads ``text`` (trailing newlines aside)."""
        return self._add("has", path, text)

    def gone(self, path: str) -> "Check":
        return self._add("gone", path)

    def isfile(self, path: str) -> "Check":
        return self._add("isfile", path)

    def isdir(self, path: str) -> "Check":
        """A real directory, not a symlink to one."""
        return self._add("isdir", path)

    def symlink(self, path: str, target: str) -> "Check":
        return self._add("symlink", path, target)

    def only(self, directory: str, *names: str) -> "Check":
        """``directory`` holds exactly ``names`` (sorted as ``ls`` sorts them in the C locale)."""
        return self._add("only", directory, *names)

    def contains(self, directory: str, *names: str) -> "Check":
        return self._add("contains", directory, *names, checks=len(names))

    def setuid(self, path: str) -> "Check":
        return self._add("setuid", path)

    def stats(self, path: str, mode_owner: str) -> "Check":
        """``stat -c '%a %u:%g'``, e.g. ``"4755 0:0"``."""
        return self._add("stats", path, mode_owner)

    def samestat(self, path: str, other: str) -> "Check":
        """Same mode and owner as ``other``."""
        return self._add("samestat", path, other)

    def hardlinks(self, path: str, other: str) -> "Check":
        return self._add("hardlinks", path, other)

    def prints(self, want: str, *argv: str) -> "Check":
        """``argv`` run in the container prints ``want``."""
        return self._add("prints", want, *argv)

    def each(self, first: int, last: int, template: str, text: str) -> "Check":
        """``has`` for every i in [first, last]: ``template`` and ``text`` use ``$i``."""
        self.lines.append(f'i={first}; while [ "$i" -le {last} ]; do has "{template}" "{text}"; i=$((i+1)); done')
        self.count += last - first + 1
        return self

    def script(self) -> str:
        return _PRELUDE + "\n".join(self.lines) + "\n" + _EPILOGUE

    def command(self) -> list[str]:
        return ["/bin/sh", "-c", self.script()]

    @property
    def ok_line(self) -> str:
        """The last line of a passing run."""
        return f"{OK_PREFIX}{self.count} checks"

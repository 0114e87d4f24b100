"""Running one CNI plugin: environment, stdin, timeout, and its answer.

A plugin runs in its own session so that a timeout kills it together with
whatever it started (a delegated IPAM plugin, iptables). Errors carry the
plugin's own message from the JSON error it prints on stdout.

A plugin must not outlive a killed crid unnoticed: an orphaned ADD would race
the DEL that recovery runs for the half-made pod, and reserve an address
nobody releases. Each plugin's environment names the CNI cache it works for
(``OWNER_ENV``, inherited by what it starts), and the restarted daemon kills
every process so marked before it recovers (``kill_orphans``): nothing to pay
per plugin, and no window between the spawn and the mark.
"""

import asyncio
import contextlib
import json
import logging
import os
import select
import signal
from dataclasses import dataclass
from typing import Any

from cri.errors import CridError, FailedPrecondition, Unavailable
from cri.log import fields
from cri.runtime.child import Child

log = logging.getLogger(__name__)

# Well-known error codes that mean the configuration is wrong rather than the plugin failing.
CONFIG_ERROR_CODES = frozenset({1, 2, 7})  # incompatible version, unsupported field, invalid network config
OUTPUT_TAIL = 2000
# Plugins need iptables, ip and friends even when crid's own PATH is minimal.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
OWNER_ENV = "CRID_CNI_CACHE"  # the CNI cache a plugin works for: what a restarted crid looks for
OUTPUT_LIMIT = 16 * 1024 * 1024  # of a plugin's stdout and of its stderr; a result is a few KiB
ORPHAN_EXIT_WAIT = 5.0  # seconds for a killed orphan to be gone


@dataclass(frozen=True)
class Invocation:
    command: str  # ADD, DEL, CHECK or VERSION
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    args: str = ""  # CNI_ARGS
    path: str = ""  # CNI_PATH
    owner: str = ""  # the CNI cache dir, as OWNER_ENV


class PluginFailed(Unavailable):
    """A plugin exited non-zero; ``code`` is its CNI error code (0 when it printed none)."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


class PluginConfigRejected(FailedPrecondition):
    """A plugin refused the network config (CNI error codes 1, 2 and 7)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def environment(inv: Invocation) -> dict[str, str]:
    # libcni passes its own environment along; drop any CNI_* of crid's so only ours reach the plugin
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    env.setdefault("PATH", DEFAULT_PATH)
    env.update(
        CNI_COMMAND=inv.command,
        CNI_CONTAINERID=inv.container_id,
        CNI_NETNS=inv.netns,
        CNI_IFNAME=inv.ifname,
        CNI_ARGS=inv.args,
        CNI_PATH=inv.path,
    )
    if inv.owner:
        env[OWNER_ENV] = inv.owner
    return env


def _tail(data: bytes) -> str:
    text = data.decode("utf-8", "replace").strip()
    return text if len(text) <= OUTPUT_TAIL else "..." + text[-OUTPUT_TAIL:]


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _failure(label: str, returncode: int, stdout: bytes, stderr: bytes) -> CridError:
    try:
        err = json.loads(stdout)
    except ValueError:
        err = None
    if isinstance(err, dict) and ("msg" in err or "code" in err):
        raw_code = err.get("code")
        code = raw_code if isinstance(raw_code, int) else 0
        text = str(err.get("msg") or "").strip() or "no message"
        details = str(err.get("details") or "").strip()
        if details and details != text:
            text = f"{text}: {details}"
        message = f"{label} failed (code {code}): {text}"
        if code in CONFIG_ERROR_CODES:
            return PluginConfigRejected(message, code)
        return PluginFailed(message, code)
    output = _tail(stderr) or _tail(stdout) or "no output"
    return PluginFailed(f"{label} failed (exit status {returncode}): {output}")


async def run_plugin(binary: str, plugin: str, inv: Invocation, stdin: bytes, time_limit: float) -> Any:
    """Run one plugin and return its parsed stdout (None when it printed nothing).

    Raises PluginFailed (Unavailable) when the plugin fails, times out or
    prints something that is not JSON; PluginConfigRejected (FailedPrecondition)
    when it rejects the config.
    """
    label = f"CNI plugin {plugin} ({inv.command})"
    try:
        child = Child([binary], OUTPUT_LIMIT, stdin=stdin, env=environment(inv), setsid=True)
    except OSError as e:
        raise PluginFailed(f"{label}: cannot run {binary}: {e.strerror}") from None
    try:
        returncode = await asyncio.wait_for(child.communicate(), time_limit)
    except TimeoutError:
        _kill_group(child.pid)
        await child.wait()
        raise PluginFailed(f"{label} did not finish within {time_limit:g}s and was killed") from None
    except asyncio.CancelledError:
        # the caller gave up: leave no plugin running unattended
        _kill_group(child.pid)
        raise
    finally:
        child.close()
    (stdout, _), (stderr, _) = child.output(1), child.output(2)
    if stderr:
        log.debug("CNI plugin stderr", extra=fields(plugin=plugin, command=inv.command, stderr=_tail(stderr)))
    if returncode != 0:
        raise _failure(label, returncode, stdout, stderr)
    if not stdout.strip():
        return None
    try:
        return json.loads(stdout)
    except ValueError:
        raise PluginFailed(f"{label} printed something that is not JSON: {_tail(stdout)}") from None


def kill_orphans(owner: str, proc: str = "/proc") -> list[int]:
    """SIGKILL every process whose environment marks it as working for the CNI cache ``owner``
    (plugins a killed crid left running, and what they started), with their process groups,
    and wait until they are gone. Blocking; for the start, before any plugin of ours runs.
    Returns their pids."""
    marker = f"{OWNER_ENV}={owner}".encode()
    found = []
    me = str(os.getpid())  # started from a shell that had the mark exported: not a plugin
    for name in os.listdir(proc):
        if not name.isdigit() or name == me:
            continue
        try:
            with open(f"{proc}/{name}/environ", "rb") as f:
                if marker in f.read().split(b"\0"):
                    found.append(int(name))
        except OSError:
            continue  # gone meanwhile, or a kernel thread
    for pid in found:
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        try:
            _kill_group(pid)  # a plugin leads its own session; what it started is in its group
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            select.select([pidfd], [], [], ORPHAN_EXIT_WAIT)  # readable once it has exited
        finally:
            os.close(pidfd)
    return found

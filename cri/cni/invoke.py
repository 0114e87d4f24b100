"""Running one CNI plugin: environment, stdin, timeout, and its answer.

A plugin runs in its own session so that a timeout kills it together with
whatever it started (a delegated IPAM plugin, iptables). Errors carry the
plugin's own message from the JSON error it prints on stdout.
"""

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
from dataclasses import dataclass
from typing import Any

from cri.errors import CridError, FailedPrecondition, Unavailable
from cri.log import fields

log = logging.getLogger(__name__)

# Well-known error codes that mean the configuration is wrong rather than the plugin failing.
CONFIG_ERROR_CODES = frozenset({1, 2, 7})  # incompatible version, unsupported field, invalid network config
OUTPUT_TAIL = 2000
# Plugins need iptables, ip and friends even when crid's own PATH is minimal.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Invocation:
    command: str  # ADD, DEL, CHECK or VERSION
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    args: str = ""  # CNI_ARGS
    path: str = ""  # CNI_PATH


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


# A plugin dies with crid (util-linux's setpriv sets PR_SET_PDEATHSIG, kept across exec): an ADD
# orphaned by a killed daemon must not race the DEL that recovery runs for the half-made pod.
_SETPRIV = shutil.which("setpriv")
_DIE_WITH_CRID = (_SETPRIV, "--pdeathsig", "KILL", "--") if _SETPRIV else ()


async def run_plugin(binary: str, plugin: str, inv: Invocation, stdin: bytes, time_limit: float) -> Any:
    """Run one plugin and return its parsed stdout (None when it printed nothing).

    Raises PluginFailed (Unavailable) when the plugin fails, times out or
    prints something that is not JSON; PluginConfigRejected (FailedPrecondition)
    when it rejects the config.
    """
    label = f"CNI plugin {plugin} ({inv.command})"
    try:
        proc = await asyncio.create_subprocess_exec(
            *_DIE_WITH_CRID,
            binary,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=environment(inv),
            cwd="/",
            start_new_session=True,
        )
    except OSError as e:
        raise PluginFailed(f"{label}: cannot run {binary}: {e.strerror}") from None
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(stdin), time_limit)
    except TimeoutError:
        _kill_group(proc.pid)
        await proc.wait()
        raise PluginFailed(f"{label} did not finish within {time_limit:g}s and was killed") from None
    except asyncio.CancelledError:
        # the caller gave up: leave no plugin running unattended
        _kill_group(proc.pid)
        raise
    if stderr:
        log.debug("CNI plugin stderr", extra=fields(plugin=plugin, command=inv.command, stderr=_tail(stderr)))
    if proc.returncode != 0:
        raise _failure(label, proc.returncode or 0, stdout, stderr)
    if not stdout.strip():
        return None
    try:
        return json.loads(stdout)
    except ValueError:
        raise PluginFailed(f"{label} printed something that is not JSON: {_tail(stdout)}") from None

"""Signal names as images and CRI requests spell them -> the names and numbers runc wants.

An image's StopSignal may be a number, NAME or SIGNAME, or a real-time signal
relative to SIGRTMIN / SIGRTMAX; ContainerConfig.stop_signal is a pb.Signal.
Both end up as moby's canonical name (SIGTERM, SIGRTMIN+3, SIGRTMAX-1).
"""

import re
import signal

from cri.api.v1 import api_pb2 as pb
from cri.errors import InvalidArgument
from cri.images.manifest import ImageConfig

_RT_SIGNAL = re.compile(r"SIGRT(MIN|MAX)(?:([+-])([0-9]+))?")


def _signal_name(raw: str) -> str | None:
    """Canonical name of a signal given as a number, NAME or SIGNAME; None if unknown."""
    text = raw.strip().upper()
    if text.isdigit():
        num = int(text)
        if 1 <= num < signal.SIGRTMIN:
            try:
                return signal.Signals(num).name
            except ValueError:
                return None
        return _rt_name(num)
    if not text.startswith("SIG"):
        text = "SIG" + text
    if text in signal.Signals.__members__:
        return signal.Signals[text].name  # aliases (SIGIOT, SIGCLD, SIGPOLL) to the names runc knows
    match = _RT_SIGNAL.fullmatch(text)
    if match is None:
        return None
    base = signal.SIGRTMIN if match[1] == "MIN" else signal.SIGRTMAX
    offset = int(match[3] or 0)
    if match[2] == ("-" if match[1] == "MIN" else "+") and offset:
        return None
    return _rt_name(base + offset if match[1] == "MIN" else base - offset)


def _rt_name(num: int) -> str | None:
    lo, hi = int(signal.SIGRTMIN), int(signal.SIGRTMAX)
    if not lo <= num <= hi:
        return None
    if num == lo:
        return "SIGRTMIN"
    if num == hi:
        return "SIGRTMAX"
    # moby's table: the lower half counts up from RTMIN, the upper half down from RTMAX
    return f"SIGRTMIN+{num - lo}" if num - lo <= (hi - lo) // 2 else f"SIGRTMAX-{hi - num}"


def signal_number(name: str) -> int:
    """The number of a signal name as stop_signal returns it (runc kill wants numbers for RT signals)."""
    canonical = _signal_name(name)
    if canonical is None:
        raise InvalidArgument(f"unknown signal {name!r}")
    if canonical in signal.Signals.__members__:
        return int(signal.Signals[canonical])
    match = _RT_SIGNAL.fullmatch(canonical)
    assert match is not None
    offset = int(match[3] or 0)
    return int(signal.SIGRTMIN) + offset if match[1] == "MIN" else int(signal.SIGRTMAX) - offset


def stop_signal(image_config: ImageConfig, requested: int = 0) -> str:
    """The signal that stops the container: ContainerConfig.stop_signal when
    set (a pb.Signal value), else the image's StopSignal, else SIGTERM."""
    if requested:
        try:
            name = pb.Signal.Name(requested).removeprefix("SIGNAL_").replace("PLUS", "+").replace("MINUS", "-")
        except ValueError:
            raise InvalidArgument(f"unknown stop signal {requested}") from None
        canonical = _signal_name(name)
        if canonical is None:
            raise InvalidArgument(f"unsupported stop signal {name}")
        return canonical
    config = image_config.get("config") or {}
    raw = config.get("StopSignal") if isinstance(config, dict) else None
    if not raw:
        return "SIGTERM"
    canonical = _signal_name(str(raw))
    if canonical is None:
        raise InvalidArgument(f"invalid StopSignal {raw!r} in the image config")
    return canonical

"""Processes identified by pid *and* start time, so that a pid the kernel
has reused (after a reboot or a long downtime) is never mistaken for ours."""

import os


def start_time(pid: int) -> int:
    """The process's start time in clock ticks since boot (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0
    # after the ")" that ends the command name: state is field 3, starttime field 22
    return int(fields[19]) if fields[0] != "Z" else 0


def same_process(pid: int, started: int) -> bool:
    """Whether ``pid`` is still the live (non-zombie) process that started at ``started``."""
    return pid > 0 and started > 0 and start_time(pid) == started


def exists(pid: int) -> bool:
    return pid > 0 and os.path.exists(f"/proc/{pid}")

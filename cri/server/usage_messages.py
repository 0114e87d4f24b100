"""CRI usage messages built from crid's samples (container and pod stats share them)."""

from typing import Protocol

from cri.api.v1 import api_pb2 as pb


class MemoryFigures(Protocol):
    """What a container's and a pod's cgroup samples both carry (None: not readable)."""

    @property
    def working_set(self) -> int | None: ...
    @property
    def available(self) -> int | None: ...
    @property
    def memory_usage(self) -> int | None: ...
    @property
    def rss(self) -> int | None: ...
    @property
    def page_faults(self) -> int | None: ...
    @property
    def major_page_faults(self) -> int | None: ...


def u64(value: int | None) -> pb.UInt64Value | None:
    """A CRI UInt64Value; unset (None) when crid could not read the figure, never a made-up zero."""
    return pb.UInt64Value(value=value) if value is not None else None


def memory_usage(ts: int, m: MemoryFigures, psi: pb.PsiStats | None = None) -> pb.MemoryUsage:
    return pb.MemoryUsage(
        timestamp=ts,
        working_set_bytes=u64(m.working_set),
        available_bytes=u64(m.available),
        usage_bytes=u64(m.memory_usage),
        rss_bytes=u64(m.rss),
        page_faults=u64(m.page_faults),
        major_page_faults=u64(m.major_page_faults),
        psi=psi,
    )

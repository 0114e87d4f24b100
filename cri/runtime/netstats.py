"""Interface counters of a pod's network namespace, read over rtnetlink (pyroute2).

The netlink socket is made inside the pod's namespace on a crid thread that
enters it (setns is per thread; a socket stays in the namespace it was made
in) and handed to pyroute2 with ``use_socket``. pyroute2's own
``IPRoute(netns=path)`` would fork a helper process per socket, and with its
default ``O_CREAT`` flag create a fresh namespace at a path StopPodSandbox
just unpinned.
"""

import logging
import socket
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from cri.runtime import namespaces

NETLINK_ROUTE = 0
DEFAULT_INTERFACE = "eth0"  # what CNI names the pod's interface, and kubelet's default
# One thread for all stats work: it bounds what stats take from crid, and
# Python would not read two pods at once any faster.
EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="crid-stats")
# pyroute2 logs every netlink message it parses at debug level: kilobytes per pod per stats call
logging.getLogger("pyroute2").setLevel(logging.INFO)


@dataclass(frozen=True)
class Interface:
    name: str
    rx_bytes: int
    rx_packets: int
    rx_errors: int
    rx_dropped: int
    tx_bytes: int
    tx_packets: int
    tx_errors: int
    tx_dropped: int


def parse_links(links: Iterable[Any]) -> list[Interface]:
    """Interfaces of RTM_NEWLINK answers (pyroute2 messages), loopback left out
    as containerd does: its traffic never leaves the pod."""
    out = []
    for link in links:
        name = link.get_attr("IFLA_IFNAME")
        if not name or name == "lo":
            continue
        stats = link.get_attr("IFLA_STATS64") or link.get_attr("IFLA_STATS") or {}
        out.append(
            Interface(
                name=name,
                rx_bytes=stats.get("rx_bytes", 0),
                rx_packets=stats.get("rx_packets", 0),
                rx_errors=stats.get("rx_errors", 0),
                rx_dropped=stats.get("rx_dropped", 0),
                tx_bytes=stats.get("tx_bytes", 0),
                tx_packets=stats.get("tx_packets", 0),
                tx_errors=stats.get("tx_errors", 0),
                tx_dropped=stats.get("tx_dropped", 0),
            )
        )
    return sorted(out, key=lambda i: (i.name != DEFAULT_INTERFACE, i.name))


def read_interfaces(netns: str) -> list[Interface]:
    """Blocking: run it on EXECUTOR (it moves the calling thread in and out of ``netns``)."""
    from pyroute2 import IPRoute  # at the first stats call: 8 MiB that a daemon without stats calls never needs

    with namespaces._entered({"net": netns}):
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
    try:
        with IPRoute(use_socket=sock) as ipr:
            return parse_links(ipr.get_links())
    finally:
        sock.close()
